"""`difforge nll MODEL_FILE [--data DIR]`: bits/dim of held-out images under the full variational bound.

Every one of the T terms is evaluated (T network calls per batch), plus the prior KL and the
discretised decoder at t = 0, so the number is the upper bound on -log2 p(x) / dims that
improved-diffusion reports. A model without learned variance is evaluated with a fixed
variance: ``fixed_large`` by default (beta_t; improved-diffusion's default), ``fixed_small``
(beta~_t) on request. Without --data the built-in defect set is drawn at the model's size with a
seed training does not use by default (``--builtin-seed``).
"""

from __future__ import annotations

import json
import math

from ..errors import UserError
from .aliases import option_strings

HELD_OUT_SEED = 1000  # training's built-in set uses seed 0 unless told otherwise


def add_parser(sub) -> None:
    p = sub.add_parser(
        "nll",
        help="bits/dim of held-out images (full variational bound)",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("model", metavar="MODEL_FILE", help="a .safetensors model file")
    p.add_argument(*option_strings("--data"), dest="data", default=None, metavar="DIR",
                   help="held-out image folder (default: the built-in set with a held-out seed)")
    p.add_argument(*option_strings("--num"), dest="num", type=int, default=128, help="images to evaluate (default 128)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=32)
    p.add_argument("--variance", choices=("learned", "fixed_small", "fixed_large"), default=None,
                   help="reverse-process variance (default: learned if the model learned it, else fixed_large)")
    p.add_argument("--no-clip", dest="clip_x0", action="store_false",
                   help="do not clip the predicted x0 to [-1, 1] before the posterior mean")
    p.add_argument("--builtin-seed", dest="builtin_seed", type=int, default=HELD_OUT_SEED,
                   help=f"seed of the built-in images (default {HELD_OUT_SEED}; training uses 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise of every term")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="fp32 (default) or bf16 network calls")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _held_out_images(pipe, args):
    """(uint8 images, labels or None, description) of the data to evaluate."""
    import torch

    from ..config import DataConfig
    from ..data.source import load_training_images

    per_class = max(1, math.ceil(args.num / 4))  # the built-in set has 4 classes
    dc = DataConfig(data=args.data, image_size=pipe.image_size, channels=pipe.channels, hflip=False,
                    builtin_per_class=per_class, builtin_seed=args.builtin_seed)
    data = load_training_images(dc, progress=not args.quiet)
    pick = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))[: args.num]
    images = data.images[pick]
    labels, how = None, "unconditional"
    if pipe.num_classes:
        known = data.labels is not None and all(name in pipe.class_names for name in data.class_names)
        if known:
            remap = torch.tensor([pipe.class_names.index(name) for name in data.class_names])
            labels, how = remap[data.labels[pick]], "conditioned on their classes"
        else:
            labels, how = torch.full((len(images),), pipe.num_classes), "with the null class (no matching class folders)"
    return images, labels, f"{len(images)} images from {data.source}, {how}"


def run(args) -> int:
    from ..diffusion.likelihood import dataset_bits_per_dim
    from ..pipeline import Pipeline

    if args.num < 1 or args.batch_size < 1:
        raise UserError("--num and --batch-size must be at least 1")
    pipe = Pipeline.from_checkpoint(args.model, device=args.device, precision=args.precision)
    if pipe.codec is not None:
        raise UserError(f"{args.model} is a latent diffusion model: its likelihood is of VAE latents, so pixel bits/dim is not defined for it")
    if args.variance == "learned" and not pipe.learn_sigma:
        raise UserError(f"{args.model} was trained without learn_sigma; use --variance fixed_large or fixed_small")
    variance = args.variance or ("learned" if pipe.learn_sigma else "fixed_large")
    images, labels, source = _held_out_images(pipe, args)
    denoiser = pipe.denoiser(cfg=1.0, clip_x0=args.clip_x0)
    out = dataset_bits_per_dim(denoiser, images, labels, batch_size=args.batch_size, variance=variance,
                               seed=args.seed, device=pipe.device, progress=not args.quiet)
    n = len(images)
    total = out["total"]
    sem = total.std().item() / math.sqrt(n) if n > 1 else float("nan")
    report = {
        "model": str(args.model),
        "data": source,
        "diffusion_steps": pipe.schedule.num_steps,
        "variance": variance,
        "bits_per_dim": total.mean().item(),
        "std_error": sem,
        "prior_bits_per_dim": out["prior"].mean().item(),
        "decoder_bits_per_dim": out["decoder"].mean().item(),
        "kl_terms_bits_per_dim": out["kl"].mean().item(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model:    {report['model']} (T={report['diffusion_steps']}, {variance} variance)")
    print(f"data:     {source}")
    print(f"bits/dim: {report['bits_per_dim']:.4f} +- {sem:.4f}  "
          f"(prior {report['prior_bits_per_dim']:.4f}, decoder {report['decoder_bits_per_dim']:.4f}, "
          f"KL terms {report['kl_terms_bits_per_dim']:.4f})")
    return 0

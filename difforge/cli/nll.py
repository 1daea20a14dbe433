"""`difforge nll MODEL_FILE [--data DIR]`: bits/dim of held-out images under the variational bound.

By default the sum of the T - 1 KL terms is estimated from K of the T steps (--timesteps, default
50: a twentieth of T = 1000, so that with start-up the estimate takes a tenth of the full bound's
time), unbiased, and printed with its standard error against the full value;
the prior KL and the discretised decoder at t = 0 are exact. --full evaluates every one of the
T terms (T network calls per batch): the upper bound on -log2 p(x) / dims that improved-diffusion
reports. A model without learned variance is evaluated with a fixed
variance: ``fixed_large`` by default (beta_t; improved-diffusion's default), ``fixed_small``
(beta~_t) on request. Without --data the built-in defect set is drawn at the model's size with a
seed training does not use by default (``--builtin-seed``).
"""

from __future__ import annotations

import json

from ..errors import UserError
from .aliases import option_strings

HELD_OUT_SEED = 1000  # = difforge.metrics.nll.HELD_OUT_SEED (not imported here: --help stays fast)
TIMESTEPS = 50  # measured: 0.0045 bits/dim from the full value in 0.098 of its time, 16 images at 64 px


def add_parser(sub) -> None:
    p = sub.add_parser(
        "nll",
        help="bits/dim of held-out images (variational bound: a K-step estimate, or --full)",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("model", metavar="MODEL_FILE", help="a .safetensors model file")
    p.add_argument(*option_strings("--data"), dest="data", default=None, metavar="DIR",
                   help="held-out image folder (default: the built-in set with a held-out seed)")
    p.add_argument(*option_strings("--num"), dest="num", type=int, default=128, help="images to evaluate (default 128)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=TIMESTEPS, metavar="K",
                   help=f"network calls per batch for the estimate (default {TIMESTEPS}; K >= T is the full bound)")
    p.add_argument("--full", action="store_true", help="the exact bound: all T terms (T network calls per batch)")
    p.add_argument("--variance", choices=("learned", "fixed_small", "fixed_large"), default=None,
                   help="reverse-process variance (default: learned if the model learned it, else fixed_large)")
    p.add_argument("--no-clip", dest="clip_x0", action="store_false",
                   help="do not clip the predicted x0 to [-1, 1] before the posterior mean")
    p.add_argument("--builtin-seed", dest="builtin_seed", type=int, default=HELD_OUT_SEED,
                   help=f"seed of the built-in images (default {HELD_OUT_SEED}; training uses 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise of every term")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="network precision (default auto: bf16 where the hardware has it; x0-predicting models always fp32)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..metrics.nll import held_out_bits_per_dim
    from ..pipeline import Pipeline

    if args.num < 1 or args.batch_size < 1:
        raise UserError("--num and --batch-size must be at least 1")
    if not args.full and args.timesteps < 2:
        raise UserError(f"--timesteps must be at least 2 (the decoder and one KL term), got {args.timesteps}; --full for every step")
    pipe = Pipeline.from_checkpoint(args.model, device=args.device, precision=args.precision)
    report = held_out_bits_per_dim(pipe, args.data, num=args.num, batch_size=args.batch_size, variance=args.variance,
                                   clip_x0=args.clip_x0, builtin_seed=args.builtin_seed, seed=args.seed, progress=not args.quiet,
                                   timesteps=None if args.full else args.timesteps)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model:    {report['model']} (T={report['diffusion_steps']}, {report['variance']} variance, {report['precision']})")
    print(f"data:     {report['data']}")
    print(f"bits/dim: {report['bits_per_dim']:.4f} +- {report['std_error']:.4f}  "
          f"(prior {report['prior_bits_per_dim']:.4f}, decoder {report['decoder_bits_per_dim']:.4f}, "
          f"KL terms {report['kl_terms_bits_per_dim']:.4f})")
    if report["exact"]:
        print(f"exact:    all {report['diffusion_steps']} terms")
    else:
        print(f"estimate: {report['timesteps']} of {report['diffusion_steps']} steps, +- {report['timestep_std_error']:.4f} "
              f"against the full bound on these images (--full for the exact value)")
    return 0

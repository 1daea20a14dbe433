"""`difforge sample MODEL_FILE` (alias `generate`): the model file describes itself."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..pipeline.config import AUTOGUIDANCE_W, SampleConfig, cfg_defaults_text, cfg_interval_text, default_cfg, interval_json
from . import seedtools
from ._prompts import add_prompt_flags, prompt_kwargs
from .aliases import option_strings
from .seedtools import str2bool

DEFAULTS = SampleConfig()


def add_sampling_flags(p) -> None:
    p.add_argument(*option_strings("--sampler"), dest="sampler", default=None,
                   help=f"sampler name (see `difforge info --samplers`; default {DEFAULTS.sampler})")
    p.add_argument(*[s for s in option_strings("--steps") if s != "--timestep_respacing"], dest="steps", default=None,
                   help=f"network evaluations: a number (default {DEFAULTS.steps}; ddpm: all), or a respacing string such as ddim50 or 10,15,20")
    p.add_argument("--spacing", default=None, help="timestep spacing: uniform, logsnr or karras (default: per sampler)")
    p.add_argument("--eta", type=float, default=None, help="noise of ddim (0 deterministic .. 1 DDPM-like) and dpm++2m-sde")
    p.add_argument("--variance", default=None, choices=("fixed_small", "fixed_large", "learned"),
                   help="ddpm: reverse-step variance (default: learned if the model predicts it, else fixed_small)")
    p.add_argument(*option_strings("--cfg"), dest="cfg", type=float, default=None,
                   help=f"classifier-free guidance scale s of eps_u + s (eps_c - eps_u) (1 = off; default: the model's, {cfg_defaults_text()}); "
                   "with --uncond-model it is w of (1 + w) eps_c - w eps_u, i.e. w = s - 1 (default s - 1); "
                   f"with --guide-model w of (1 + w) eps - w eps_weak (default {AUTOGUIDANCE_W:g})")
    p.add_argument("--cfg-rescale", type=float, default=DEFAULTS.cfg_rescale, help="guidance rescale phi in [0, 1]")
    p.add_argument("--cfg-interval", dest="cfg_interval", type=parse_interval, default=DEFAULTS.cfg_interval, metavar="LO,HI",
                   help="guide only where the noise level sigma = sqrt((1 - ab_t) / ab_t) is in (LO, HI] "
                   "(Kynkaenniemi et al. 2024; inf allowed; 'all' = every step); other steps skip the unconditional half "
                   f"(default auto, the model's: {cfg_interval_text()}; measured: for class models the same quality with a third "
                   "fewer network calls, a text model places the defect better when its noisiest steps are guided too)")
    p.add_argument("--threshold", type=float, default=None, help="dynamic thresholding percentile, e.g. 0.995")
    p.add_argument("--no-clip", dest="clip_x0", action="store_false", help="do not clip predicted x0 to [-1, 1]")
    p.add_argument(*option_strings("--clip-x0"), dest="clip_x0", type=str2bool, default=DEFAULTS.clip_x0, metavar="BOOL",
                   help=f"clip predicted x0 to [-1, 1] (True/False; default {DEFAULTS.clip_x0})")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed+i, whatever the batch size")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=DEFAULTS.precision, choices=("auto", "fp32", "bf16"))
    p.add_argument(*option_strings("--vae"), dest="vae", default=None, metavar="VAE_FILE",
                   help="latent models: the VAE file, if it moved since training (the model file records where it was)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("guidance from other model files")
    g.add_argument(*option_strings("--classifier"), dest="classifier", default=None, metavar="FILE",
                   help="noisy classifier (from `difforge train-classifier`, same schedule) guiding toward each image's class")
    g.add_argument(*option_strings("--classifier-scale"), dest="classifier_scale", type=float, default=1.0,
                   help="classifier guidance scale s: sample p(x_t) p(y|x_t)^s (default 1)")
    g.add_argument("--uncond-model", "--uncond_model", dest="uncond_model", default=None, metavar="FILE",
                   help="unconditional model for two-model classifier-free guidance with the conditional MODEL_FILE; --cfg is then w")
    g.add_argument("--guide-model", "--guide_model", dest="guide_model", default=None, metavar="FILE",
                   help="autoguidance (Karras et al. 2024): a weaker model of the same data and classes (e.g. `difforge train "
                   "--max-minutes` with a quarter of the time); eps = (1 + w) eps - w eps_weak, --cfg is then w; "
                   "guides unconditional models too (measured: judge distance 309 -> 107 for a 64 px flat-folder model)")


def add_parser(sub) -> None:
    for name in ("sample", "generate"):
        p = sub.add_parser(
            name,
            help="generate images from a model file" + (" (alias of sample)" if name == "generate" else ""),
            description="Generate images from a difforge model file. No other flag is needed: the file describes its network, schedule, size and classes.",
        )
        p.add_argument("model", nargs="?", metavar="MODEL_FILE", help="a .safetensors model file (e.g. runs/NAME/checkpoints/ema.safetensors)")
        p.add_argument(*[s for s in option_strings("--model")[1:] if s != "--model_path"], dest="model_flag", default=None, help="IDDM: the model file")
        p.add_argument(*[s for s in option_strings("--num") if s != "--num_samples"], dest="num", type=int, default=16, help="images (per class with --class all; default 16)")
        p.add_argument(*option_strings("--class"), dest="class_label", default=None, help="class name or index, or 'all' (default: classes in turn)")
        p.add_argument("--out", dest="out", default=None, help="output folder (default: samples/ next to the run, or ./samples)")
        p.add_argument(*option_strings("--out")[1:], dest="out_name", default=None, help="IDDM: output sub-folder name")
        p.add_argument(*option_strings("--image-format"), dest="format", default="png", choices=("png", "jpg"), help="image file format")
        p.add_argument("--format", dest="format", choices=("png", "jpg"), help=argparse_suppress())
        p.add_argument("--grid", action="store_true", help="also write a grid (one per class)")
        p.add_argument("--npz", action="store_true", help="also write an .npz (arr_0 images NHWC uint8, arr_1 labels)")
        p.add_argument("--trajectory", action="store_true",
                       help="also write trajectory.png: per image a row of x_t and a row of predicted x0 at chosen steps (coarse early, fine late)")
        p.add_argument("--trajectory-frames", type=int, default=10, help="steps shown by --trajectory (default 10)")
        p.add_argument("--gif", action="store_true", help="also write trajectory.gif, x_t over predicted x0 step by step (implies --trajectory)")
        p.add_argument("--upscale", default=None, metavar="SR_MODEL|none", help="cascade: upscale every image with this SR model file "
                       "(difforge train-sr), passing its class (default: the upsampler a cascade run's model file names, "
                       "train --cascade; none: the model's own size)")
        p.add_argument("--upscale-steps", dest="upscale_steps", type=int, default=None, help=f"cascade: steps of a diffusion upsampler (default {DEFAULTS.steps}, {DEFAULTS.sampler} without guidance)")
        p.add_argument("--noise-level", dest="noise_level", type=float, default=0.0, help="cascade: noise-conditioning level s of the upsampler (default 0)")
        p.add_argument("--masks", dest="want_masks", action="store_true",
                       help="require a joint-mask model (train --joint-mask): stop unless every image comes with its mask (<stem>_mask.png)")
        add_sampling_flags(p)
        add_prompt_flags(p)
        p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                       help="run the network with torch or ONNX Runtime (onnx: needs difforge[onnx] and `difforge export-onnx`)")
        p.add_argument("--onnx", default=None, metavar="FILE", help="sample through this ONNX file (implies --backend onnx; default: MODEL_FILE with .onnx)")
        seedtools.add_flags(p)
        p.set_defaults(func=run)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def parse_interval(text):
    """'0.28,5.42' -> (0.28, 5.42) (checked by SampleConfig.check); 'all' -> None (guidance at every step);
    'auto' -> 'auto' (the model's, pipeline/config.py :func:`default_cfg_interval`)."""
    import argparse

    word = str(text).strip().lower()
    if word == "all":
        return None
    if word == "auto":
        return "auto"
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two noise levels LO,HI such as 0.28,5.42, got {text!r}") from None
    return lo, hi


def parse_steps(text):
    """'50' -> (50, None); 'ddim50' / '10,15,20' -> (None, the respacing string)."""
    if text is None:
        return None, None
    text = str(text).strip()
    if text.isdigit():
        return int(text), None
    return None, text



def sampler_opts(args) -> dict:
    """Sampler-specific options given on the command line (checked against the sampler by the pipeline)."""
    opts = {}
    if getattr(args, "variance", None) is not None:
        opts["variance"] = args.variance
    return opts


def sample_config(args) -> SampleConfig:
    """The SampleConfig of the command line: the defaults with what the user set."""
    sampler = args.sampler or DEFAULTS.sampler
    steps, respacing = parse_steps(args.steps)
    if steps is None and respacing is None and sampler != "ddpm":
        steps = DEFAULTS.steps
    return DEFAULTS.replace(
        sampler=sampler,
        steps=respacing or steps,  # a respacing string decides the timesteps by itself; None: every step (ddpm)
        spacing=args.spacing,
        eta=args.eta,
        cfg=args.cfg,  # None: the model's default (Pipeline.default_cfg)
        cfg_rescale=args.cfg_rescale,
        cfg_interval=getattr(args, "cfg_interval", DEFAULTS.cfg_interval),
        clip_x0=args.clip_x0,
        threshold=args.threshold,
        batch_size=args.batch_size,
        precision=args.precision,
    )


def sampling_kwargs(args) -> dict:
    """Keyword arguments shared by Pipeline.generate / trajectory / interpolate."""
    return dict(config=sample_config(args), seed=args.seed, progress=not args.quiet, **guidance_kwargs(args), **sampler_opts(args))


def guidance_kwargs(args) -> dict:
    """classifier / classifier_scale / uncond_model / guide_model, when given (Pipeline.with_guidance)."""
    if all(getattr(args, k, None) is None for k in ("classifier", "uncond_model", "guide_model")):
        return {}
    return dict(classifier=args.classifier, classifier_scale=args.classifier_scale, uncond_model=args.uncond_model,
                guide_model=getattr(args, "guide_model", None))


def second_model(kwargs) -> Optional[str]:
    """The kind of second model a request's guidance uses (pipeline/config.py :func:`default_cfg`)."""
    return "uncond" if kwargs.get("uncond_model") is not None else ("weak" if kwargs.get("guide_model") is not None else None)


def manifest_fields(model, pipe, config, seed: int, second_model: Optional[str] = None, place_contrast="auto", analogy="auto") -> dict:
    """What every manifest.jsonl line of a sample folder shares (difforge/data/manifest.py); a text
    model's lines also say the place contrast and the analogy strength of its prompts (pipeline/places.py, analogy.py)."""
    from ..modelfile import file_sha256
    from ..pipeline.text import check_analogy, check_place_contrast

    text = {"place_contrast": check_place_contrast(place_contrast), "analogy": check_analogy(analogy)} if pipe.meta.get("text") else {}
    return dict(**text, model=Path(model).name, model_sha256=file_sha256(model), method="joint" if pipe.joint_mask else "sample",
                sampler=config.sampler, steps=len(pipe.timesteps(config)), seed=seed,
                cfg=float(config.cfg if config.cfg is not None else default_cfg(pipe.image_size, second_model, text=bool(pipe.meta.get("text")))),
                cfg_interval=interval_json(pipe.with_default_cfg(config).cfg_interval))


def run(args) -> int:
    from ..data.outputs import default_output_dir
    from ..data.outputs import BatchWriter, numbered_folder, save_trajectory
    from ..pipeline import Pipeline
    from ..pipeline.stream import generate_batches
    from ..pipeline.upscale import LINKED, cascade, prepare_cascade

    seedtools.resolve(args)
    model = args.model or args.model_flag
    if not model:
        raise UserError("give the model file to sample from, e.g. difforge sample runs/default/checkpoints/ema.safetensors")
    if args.trajectory_frames < 1:
        raise UserError(f"--trajectory-frames must be >= 1, got {args.trajectory_frames}")
    if not math.isfinite(args.classifier_scale):
        raise UserError(f"classifier_scale (--classifier-scale) must be a finite number, got {args.classifier_scale}")
    if str(model).endswith((".pt", ".pth", ".ckpt")):
        from ..models.convert_file import convert_command

        raise UserError(f"{model} is a PyTorch checkpoint of another tool; convert it first: {convert_command(model)}")
    pipe = Pipeline.from_checkpoint(model, device=args.device, precision=args.precision, vae=args.vae, backend=args.backend, onnx=args.onnx)
    seedtools.check_model(args, pipe.meta, str(model))
    out_dir = Path(args.out) if args.out else default_output_dir(model, "samples")
    if args.out_name:
        out_dir = out_dir / args.out_name
    elif not args.out:  # the default folder is numbered (samples/ema, samples/ema-2, ...) rather than overwritten
        wanted, out_dir = out_dir, numbered_folder(out_dir)
        if out_dir != wanted:
            print(f"{wanted} holds earlier samples; writing to {out_dir} (give --out DIR to choose)")
    if args.want_masks and not pipe.joint_mask:
        raise UserError(f"--masks needs a joint-mask model (difforge train --masks MDIR --joint-mask); {model} generates images only")
    kwargs = sampling_kwargs(args)
    text = prompt_kwargs(args)  # --prompt / --prompts / --negative-prompt (pipeline/text.py)
    kwargs.update(text)
    if args.upscale and (args.trajectory or args.gif) and args.upscale.lower() != "none":
        raise UserError("--upscale does not apply to --trajectory/--gif; leave one out")
    linked = not args.upscale and not (args.trajectory or args.gif)  # a trajectory shows the cascade's base steps
    up = prepare_cascade(pipe, LINKED if linked else args.upscale)  # checked before any sampling
    if linked and up is not None:
        print(f"cascade: {pipe.image_size} px images upscaled x{up.scale} by {up.source} (--upscale none: {pipe.image_size} px)")
    traj = None
    writer = BatchWriter(out_dir, fmt=args.format, grid=args.grid, npz=args.npz, manifest=manifest_fields(model, pipe, kwargs["config"], args.seed,
                                                                                                    second_model(kwargs), args.place_contrast, args.analogy))
    if args.trajectory or args.gif:
        traj = pipe.trajectory(num=args.num, class_label=args.class_label, frames=args.trajectory_frames, **kwargs)
        writer.add(traj.final)
    else:  # batch by batch: each batch is written and dropped, so --num 100000 needs one batch of memory
        for batch in generate_batches(pipe, num=args.num, class_label=args.class_label, **kwargs):
            if up is not None:  # image i keeps seed + i in the upsampler too
                batch = cascade(pipe, batch, up, seed=args.seed + writer.count, noise_level=args.noise_level,
                                **({"steps": args.upscale_steps} if args.upscale_steps else {}))
            writer.add(batch)
    written = writer.close()
    print(f"{len(written['images'])} images in {out_dir}" + (" (each with its <stem>_mask.png)" if written.get("masks") else ""))
    for g in written.get("grids", []):
        print(f"grid: {g}")
    if "npz" in written:
        print(f"npz:  {written['npz']}")
    if traj is not None:
        tw = save_trajectory(traj, out_dir, fmt=args.format, gif=args.gif)
        print(f"trajectory: {tw['grid']} (steps {', '.join(map(str, traj.steps))}; rows: x_t then predicted x0 per image)")
        if "gif" in tw:
            print(f"gif:  {tw['gif']}")
    return 0

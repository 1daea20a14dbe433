"""`difforge interpolate MODEL_FILE`: frames between two seeds' samples or between two images."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .aliases import option_strings
from ._prompts import add_prompt_flags, prompt_kwargs
from .sample import add_sampling_flags, sampling_kwargs


def add_parser(sub) -> None:
    p = sub.add_parser(
        "interpolate",
        help="frames between two seeds' samples or between two images",
        description=(
            "Walk between two ends in --num-mix frames (lambda 0..1). With --seeds (the default, seeds 0 1): "
            "slerp between the two seeds' starting noises, then sample each frame. With --images A B: "
            "diffuse both images to step --t with one shared noise, mix x_t linearly, and denoise from t "
            "(Ho et al. 2020, fig. 8). Writes frame_*.png and interpolation.png, one row: "
            "[image A,] the frames[, image B]."
        ),
    )
    p.add_argument("model", nargs="?", metavar="MODEL_FILE", help="a .safetensors model file")
    p.add_argument(*option_strings("--model")[1:], dest="model_flag", default=None, help="IDDM: the model file")
    ends = p.add_mutually_exclusive_group()
    ends.add_argument("--images", nargs=2, metavar=("A", "B"), default=None, help="two image files (resized and center-cropped like training data)")
    ends.add_argument("--seeds", nargs=2, metavar=("S1", "S2"), type=int, default=None, help="two seeds (default 0 1)")
    p.add_argument(*option_strings("--class"), dest="class_label", default=None,
                   help="class name or index to condition on (default: unconditional, the null class)")
    p.add_argument("--t", type=int, default=None, help="--images: the step both images are diffused to, 0..T-1 (default T/2)")
    p.add_argument("--num-mix", type=int, default=9, help="frames, both ends included (default 9: lambda 0, 1/8, ..., 1)")
    p.add_argument("--out", default=None, help="output folder (default: interpolations/ next to the run, or ./interpolations)")
    p.add_argument(*option_strings("--image-format"), dest="format", default="png", choices=("png", "jpg"), help="image file format")
    p.add_argument("--gif", action="store_true", help="also write interpolation.gif (frames forth and back)")
    add_sampling_flags(p)
    add_prompt_flags(p)
    p.set_defaults(func=run)



def run(args) -> int:
    from ..data.outputs import default_output_dir
    from ..data.outputs import save_interpolation
    from ..pipeline import Pipeline

    model = args.model or args.model_flag
    if not model:
        raise UserError("give the model file, e.g. difforge interpolate runs/default/checkpoints/ema.safetensors --seeds 0 1")
    if args.images:
        for path in args.images:
            if not Path(path).is_file():
                raise UserError(f"image {path} does not exist; check the path")
    pipe = Pipeline.from_checkpoint(model, device=args.device, precision=args.precision, vae=args.vae)
    result = pipe.interpolate(
        images=args.images,
        seeds=tuple(args.seeds) if args.seeds else (0, 1),
        class_label=args.class_label,
        t=args.t,
        num_mix=args.num_mix,
        **sampling_kwargs(args),
        **prompt_kwargs(args),
    )
    out_dir = Path(args.out) if args.out else default_output_dir(model, "interpolations")
    written = save_interpolation(result, out_dir, fmt=args.format, gif=args.gif)
    if pipe.meta.get("text"):  # a text model ran on its prompt view: its one row is the prompt
        cls = f"{args.class_label or '-'}, prompt {(args.prompt or ['(from --prompts)' if args.prompts_file else ''])[0]!r}"
    else:
        cls = pipe.class_names[result.class_index] if result.class_index is not None else ("none (unconditional)" if pipe.class_names else "-")
    ends = f"images {args.images[0]} -> {args.images[1]} via t={args.t if args.t is not None else pipe.schedule.num_steps // 2}" if args.images else f"seeds {result_seeds(args)}"
    print(f"{len(written['images'])} frames in {out_dir} ({ends}; class {cls}; {len(result.timesteps)} sampler steps)")
    print(f"grid: {written['grid']}")
    if "gif" in written:
        print(f"gif:  {written['gif']}")
    return 0


def result_seeds(args) -> str:
    s = args.seeds or (0, 1)
    return f"{s[0]} -> {s[1]}"

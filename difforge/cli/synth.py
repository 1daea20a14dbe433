"""`difforge synth --model M --good GOOD_DIR --num N --out OUT`: defects onto good images in bulk, each with its mask."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..pipeline.config import cfg_defaults_text, cfg_interval_text
from .sample import DEFAULTS, parse_interval, parse_steps


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="paint defects onto good images in bulk: image + mask pairs and a manifest",
        description=(
            "Make --num image+mask pairs: each takes a good image from --good, places a mask on it (a mask file from "
            "--masks with a random flip, quarter rotation and position, or a generated shape with --mask-shapes auto) "
            "and has the model paint a defect of --class (default: a random defect class) into it. Writes "
            "OUT/images/NNNNNN.png, OUT/masks/NNNNNN.png and OUT/manifest.jsonl (one line per pair: seed, class, "
            "background, placement, model sha256, settings). Rerunning skips the pairs already made; item i uses seed "
            "--seed + i, so a run is the same every time."
        ),
    )
    p.add_argument("--model", required=True, help="a diffusion model file (mask-conditioned, joint-mask or any model)")
    p.add_argument("--good", required=True, metavar="GOOD_DIR", help="folder of defect-free images (searched recursively)")
    p.add_argument("--num", type=int, required=True, help="image+mask pairs to make")
    p.add_argument("--out", required=True, help="output folder (images/, masks/, manifest.jsonl)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--masks", metavar="MDIR", default=None,
                     help="mask files to place (e.g. the training masks; a sub-folder named after the class is used for it)")
    src.add_argument("--mask-shapes", dest="mask_shapes", choices=("auto",), default=None,
                     help="auto: generated rectangles, ellipses and scratches (the default without --masks)")
    p.add_argument("--class", dest="class_label", default=None, help="defect class to paint (default: a random non-good class per item)")
    p.add_argument("--method", default=None, choices=("mask-conditioned", "joint", "repaint", "blend"),
                   help="default: what the model was trained for (mask-conditioned or joint), else repaint")
    p.add_argument("--sampler", default=None, help=f"sampler of blend / mask-conditioned / joint (default {DEFAULTS.sampler}); repaint takes ddpm steps")
    p.add_argument("--steps", default=None, help=f"network evaluations per pass (default {DEFAULTS.steps})")
    p.add_argument("--cfg", type=float, default=None, help=f"classifier-free guidance scale (default: the model's, {cfg_defaults_text()})")
    p.add_argument("--cfg-interval", dest="cfg_interval", type=parse_interval, default=DEFAULTS.cfg_interval, metavar="LO,HI",
                   help="guide only where the noise level sigma is in (LO, HI] ('all' = every step; default auto, the model's: "
                   f"{cfg_interval_text()}, as `difforge sample`)")
    p.add_argument("--mask-jitter", action="store_true",
                   help="also scale each --masks mask by 0.7-1.4 and turn it by any angle (more shapes from few real masks)")
    p.add_argument("--resample", type=int, default=10, help="repaint: passes over each jump (default 10)")
    p.add_argument("--jump", type=int, default=10, help="repaint: steps per jump (default 10)")
    p.add_argument("--seed", type=int, default=0, help="item i uses seed + i (default 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline import Pipeline
    from ..pipeline.synth import MaskBank, SynthSettings, check_method, image_files, model_method, synthesize

    if args.num < 1:
        raise UserError(f"--num must be >= 1, got {args.num}")
    if not Path(args.model).is_file():
        raise UserError(f"model file {args.model} does not exist; check the path")
    good = image_files(args.good)
    bank = MaskBank.from_folder(args.masks) if args.masks else None
    pipe = Pipeline.from_checkpoint(args.model, device=args.device)
    method = check_method(pipe, args.method or model_method(pipe))
    steps, respacing = parse_steps(args.steps)
    if method == "repaint" and args.sampler not in (None, "ddpm"):
        raise UserError(f"RePaint (--method repaint) takes DDPM steps; --sampler {args.sampler} works with the other methods")
    config = DEFAULTS.replace(sampler="ddpm" if method == "repaint" else (args.sampler or DEFAULTS.sampler),
                              steps=respacing or steps or DEFAULTS.steps, cfg=args.cfg, cfg_interval=args.cfg_interval)
    settings = SynthSettings(method, config, args.resample, args.jump)
    counts = synthesize(pipe, args.model, good, args.out, args.num, settings=settings, bank=bank, class_name=args.class_label,
                        seed=args.seed, progress=not args.quiet, jitter=args.mask_jitter)
    skipped = f" ({counts['skipped']} already there, skipped)" if counts["skipped"] else ""
    print(f"{counts['made']} image+mask pairs made in {args.out}{skipped} ({method}); manifest: {Path(args.out) / 'manifest.jsonl'}")
    return 0

"""`difforge upscale MODEL --input IMG_OR_DIR --out DIR`: upscale images of any size with an SR model file."""

from __future__ import annotations

from ..errors import UserError
from .sample import DEFAULTS, parse_steps


def add_parser(sub) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale images with a super-resolution model file (from train-sr)",
        description="Upscale an image, or every image of a folder, by the model's scale. Any size works (edge-padded and cropped); "
        "large images go in overlapping tiles blended without seams, at bounded memory.",
    )
    p.add_argument("model", metavar="MODEL_FILE", help="an SR model file (difforge train-sr): a diffusion upsampler or a regression upscaler")
    p.add_argument("--input", "-i", required=True, metavar="IMG_OR_DIR", help="an image file or a folder of images")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (NAME.png per input)")
    p.add_argument("--reference", metavar="DIR", default=None,
                   help="high-res originals (same file stems, exactly SCALE x the input): PSNR / SSIM per image in DIR/upscale_metrics.csv")
    p.add_argument("--class", dest="class_label", default=None, help="class name for a class-conditional upsampler")
    g = p.add_argument_group("diffusion upsamplers (ignored by regression upscalers)")
    g.add_argument("--sampler", default=None, help=f"sampler (default {DEFAULTS.sampler})")
    g.add_argument("--steps", default=None, help=f"network evaluations (default {DEFAULTS.steps})")
    g.add_argument("--eta", type=float, default=None, help="noise of ddim")
    g.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale of a class-conditional upsampler (default 1 = none)")
    g.add_argument("--noise-level", dest="noise_level", type=float, default=0.0,
                   help="noise-conditioning level s in [0, 1] for a model trained with --noise-aug (default 0: the input as it is)")
    g.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    g = p.add_argument_group("tiles")
    g.add_argument("--tile", type=int, default=None,
                   help="tile size in input pixels (0 = whole image; default: the training size for an upsampler, 96 above 128 px for a regression upscaler)")
    g.add_argument("--overlap", type=int, default=None, help="input pixels shared by neighbouring tiles (default tile / 4, at most 8 for regression)")
    g.add_argument("--tile-batch", dest="tile_batch", type=int, default=4, help="tiles per network batch (default 4)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=DEFAULTS.precision, choices=("auto", "fp32", "bf16"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline import Pipeline
    from ..pipeline.upscale import UPSCALE_SAMPLING, Upscaler
    from ..pipeline.upscale_files import upscale_files

    if args.tile_batch < 1:
        raise UserError(f"--tile-batch must be >= 1, got {args.tile_batch}")
    up = Upscaler.from_checkpoint(args.model, device=args.device, precision=args.precision, pipeline_cls=Pipeline)
    kwargs = dict(tile=args.tile, overlap=args.overlap, tile_batch=args.tile_batch, noise_level=args.noise_level)
    if up.diffusion:
        steps, respacing = parse_steps(args.steps)
        config = UPSCALE_SAMPLING.replace(sampler=args.sampler or UPSCALE_SAMPLING.sampler, steps=respacing or steps or UPSCALE_SAMPLING.steps,
                                          eta=args.eta, cfg=args.cfg if args.cfg is not None else UPSCALE_SAMPLING.cfg)
        kwargs["config"] = config
    elif any(v is not None for v in (args.sampler, args.steps, args.eta, args.cfg)):
        print(f"note: {args.model} is a regression upscaler (one forward pass); --sampler/--steps/--eta/--cfg do not apply")
    report = upscale_files(up, args.input, args.out, reference=args.reference, class_label=args.class_label, seed=args.seed,
                           progress=not args.quiet, **kwargs)
    print(f"{len(report.outputs)} image(s) upscaled x{up.scale} in {args.out}")
    if args.reference:
        print(f"PSNR {report.mean('psnr'):.2f} dB, SSIM {report.mean('ssim'):.4f}, consistency PSNR {report.mean('consistency_psnr'):.2f} dB "
              f"(mean over {len(report.rows)}; per image: {report.metrics_csv})")
    return 0

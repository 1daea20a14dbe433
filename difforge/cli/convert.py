"""`difforge convert SRC.pt OUT.safetensors --from iddm|openai-adm|dit [--config CONFIG]`: import a checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

SOURCES = ("openai-adm", "dit", "iddm")  # = difforge.models.convert_file.SOURCES (not imported here: --help stays fast)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="import an IDDM, OpenAI ADM or DiT checkpoint as a difforge model file",
        description=(
            "Convert an IDDM (ckpt_last.pt: its settings come with it), improved-/guided-diffusion (openai-adm) or DiT "
            "checkpoint into a self-describing difforge model file. The checkpoint is read with torch.load(weights_only=True): files holding pickled objects "
            "are refused. Every weight must fit the network the config describes."
        ),
    )
    p.add_argument("src", metavar="SRC", help="the checkpoint (.pt / .pth; DiT's {'ema': ...} / {'model': ...} files work)")
    p.add_argument("out", metavar="OUT", help="the model file to write (.safetensors)")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="checkpoint format")
    p.add_argument("--config", default=None,
                   help="network config: a .yaml/.json file (difforge or OpenAI/DiT flag names, e.g. guided-diffusion's "
                        "MODEL_FLAGS as keys) or a preset name (adm-imagenet64/128/256/512, adm-imagenet256-uncond, "
                        "adm-lsun256; dit-xl/2, dit-b/4, ...)")
    p.add_argument("--image-size", "--image_size", dest="image_size", type=int, default=None,
                   help="training image size (for DiT on latents: the latent size, pixels / 8)")
    p.add_argument("--num-classes", "--num_classes", dest="num_classes", type=int, default=None)
    p.add_argument("--in-channels", dest="in_channels", type=int, default=None)
    p.add_argument("--class-names", dest="class_names", default=None,
                   help="comma-separated names, or a text file with one name a line (default: the class numbers)")
    p.add_argument("--diffusion-steps", "--diffusion_steps", dest="diffusion_steps", type=int, default=None, help="default 1000")
    p.add_argument("--noise-schedule", "--noise_schedule", dest="noise_schedule", default=None,
                   help="default linear (cosine for the adm-imagenet64 preset)")
    p.add_argument("--rescale-timesteps", "--rescale_timesteps", dest="rescale_timesteps", action="store_true",
                   help="improved-diffusion models trained with rescale_timesteps (t * 1000 / diffusion_steps)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..models.convert_file import convert_checkpoint, read_class_names
    from ..modelfile import save_model_file

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"OUT must be a .safetensors file, got {out}")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it")
    overrides = {key: getattr(args, key) for key in ("image_size", "num_classes", "in_channels", "diffusion_steps", "noise_schedule")}
    overrides.update(class_names=read_class_names(args.class_names), rescale_timesteps=args.rescale_timesteps or None)
    converted, meta = convert_checkpoint(args.src, args.source, args.config, overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model_file(out, converted.state_dict, meta)
    cfg = converted.config
    print(f"wrote {out}: {meta['network']['name']} {cfg['image_size']}px, {cfg['in_channels']} channels, "
          f"{cfg['num_classes'] or 'no'} classes, learn_sigma={cfg['learn_sigma']}, "
          f"{meta['diffusion']['diffusion_steps']} {meta['diffusion']['noise_schedule']} steps")
    if cfg["num_classes"] and not converted.null_class_trained:
        print("note: the source trained no null class; difforge appended the mean class embedding. "
              "Classifier-free guidance is not available: sample with --cfg 1.")
    return 0

"""`difforge train-vae`: flags -> Config (task vae) -> the shared Trainer -> a VAE model file."""

from __future__ import annotations


from ..config import VAE_DOWNSAMPLE
from .aliases import option_strings
from .train import NETWORK_FLAGS, add, add_data_flags, add_loop_flags, bool_flag, overrides_from_args

VAE_NETWORK_FLAGS = ("base_channels", "channel_mult", "num_res_blocks", "head_channels", "dropout", "act")
IDDM_LOSSES = {"mse_kl": "mse", "mse": "mse", "l1": "l1"}  # IDDM's autoencoder --loss names


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-vae",
        help="train a VAE (the latent space of latent diffusion)",
        description="Train a convolutional VAE on an image folder (default: the built-in defect set); "
        "then `difforge train --vae RUN/checkpoints/ema.safetensors` trains a diffusion model in its latent space.",
    )
    add_data_flags(p, data_names=tuple(option_strings("--train")))
    g = p.add_argument_group("VAE")
    g.add_argument(*option_strings("--val"), dest="val_data", default=None, metavar="DIR",
                   help="validation images (PSNR, SSIM, MSE each epoch); default: fresh built-in images, or the training images")
    add(g, "--latent-channels", dest="latent_channels", type=int, help="channels of the latent z (default 4; IDDM uses 8)")
    add(g, "--downsample", dest="downsample", type=int, choices=VAE_DOWNSAMPLE, help="z is image_size / downsample wide (default 8)")
    add(g, "--kl-weight", dest="kl_weight", type=float, help="weight of the KL term per pixel value (default 1e-4, as IDDM's mse_kl)")
    add(g, "--recon-loss", dest="recon_loss", choices=("mse", "l1"), help="reconstruction loss (default mse)")
    g.add_argument("--loss", dest="iddm_loss", default=None, choices=tuple(IDDM_LOSSES), help="IDDM: mse_kl (= --recon-loss mse)")
    add(g, "--network", dest="network", choices=("vae",), help="autoencoder architecture (vae)")
    for key in VAE_NETWORK_FLAGS:
        flag, typ, text = NETWORK_FLAGS[key]
        add(g, flag, dest=f"net_{key}", type=typ, help=text + (" (one per level: log2(downsample) + 1)" if key == "channel_mult" else ""))
    bool_flag(g, "--attention", "vae_attention", "self-attention at the lowest resolution (default on)")
    add(g, "--network-option", dest="network_option", action="append", metavar="KEY=VALUE", help="any other VAE setting (repeatable)")
    add_loop_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from .train import _launch_distributed, fit_from_args

    if args.distributed and "WORLD_SIZE" not in os.environ:
        return _launch_distributed(args)
    overrides = overrides_from_args(args)
    overrides["task"] = "vae"
    if args.iddm_loss and not args.recon_loss:
        overrides["recon_loss"] = IDDM_LOSSES[args.iddm_loss]
    if args.vae_attention is not None:
        overrides["network_options"] = dict(overrides.get("network_options", {}), attention=args.vae_attention)
    trainer, result = fit_from_args(args, overrides, defaults={"network": "vae"})
    if not trainer.dist.is_main:
        return 130 if result.interrupted else 0
    size = trainer.config.data.image_size
    print(f"run folder: {result.run_dir}")
    print(f"VAE file:   {result.model_file}")
    print(f"latent diffusion: difforge train --vae {result.model_file} --image-size {size}")
    print("            (the diffusion model records this file's path and sha256: copy it somewhere stable first if you will keep training this VAE)")
    return 130 if result.interrupted else 0

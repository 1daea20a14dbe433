"""`difforge train-sr`: flags -> Config (task sr or sr-regression) -> the shared Trainer -> an SR model file.

IDDM's ``sr/train.py`` flag names work as aliases (``--train_dataset_path``, ``--image_size``,
``--run_name``, ``--optim``, ``--lr_func``, ``--result_path``, ``--network srv1``, ``--val_dataset_path``,
...); its
``--quick_eval`` and ``--use_gpu`` are accepted.
"""

from __future__ import annotations

import argparse

from .aliases import option_strings
from .train import NETWORK_FLAGS, add, add_data_flags, add_diffusion_flags, add_loop_flags, overrides_from_args, value_bool_flag

SR_NETWORK_FLAGS = ("base_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "head_channels", "dropout", "act")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-sr",
        help="train a super-resolution model (a diffusion upsampler or a fast regression upscaler)",
        description="Train an x SCALE super-resolution model on an image folder (default: the built-in defect set): the images "
        "are the high-res targets at --image-size, their low-res inputs are made on the fly by the degradation below. "
        "Then: difforge upscale MODEL --input IMG, or difforge sample BASE --upscale MODEL.",
    )
    add_data_flags(p, data_names=tuple(option_strings("--train")))
    g = p.add_argument_group("super-resolution")
    add(g, "--scale", dest="scale", type=int, help="high-res / low-res size (default 4)")
    add(g, "--objective", dest="sr_objective", choices=("diffusion", "regression"),
        help="diffusion: an SR3-style upsampler (default); regression: the rdn-sr / srv1 network trained by L1 or MSE (fast)")
    add(g, "--down", dest="sr_down", choices=("bicubic", "area"), help="degradation: down-sampling filter (default bicubic)")
    add(g, "--blur", dest="sr_blur", type=float, help="degradation: Gaussian blur sigma in high-res pixels before down-sampling (default 0)")
    add(g, "--lr-noise", dest="sr_noise", type=float, help="degradation: std of Gaussian noise on the low-res image, [-1, 1] scale (default 0)")
    add(g, "--jpeg", dest="sr_jpeg", type=int, help="degradation: JPEG quality of the low-res image (default 0 = none)")
    add(g, "--noise-aug", dest="noise_aug", type=float,
        help="diffusion: noise-conditioning augmentation, low-res noised at s ~ U[0, S] with s given to the network (Ho et al. 2022; default 0 = off)")
    value_bool_flag(g, "--residual", "sr_residual", "diffusion: diffuse the scaled residual x - bicubic(z), so the untrained upsampler "
                    "is bicubic (default true; --residual false: SR3's plain x)")
    g.add_argument(*option_strings("--val"), dest="sr_val_data", default=None, metavar="DIR",
                   help="validation images: held-out PSNR / SSIM (and bicubic's) every --eval-every steps, default once per epoch")
    g.add_argument("--quick_eval", action="store_true", help=argparse.SUPPRESS)  # IDDM: accepted
    g.add_argument("--use_gpu", type=int, default=None, help=argparse.SUPPRESS)  # IDDM: the GPU index -> --device cuda:N
    g = p.add_argument_group("network (diffusion: unet-tiny by default; regression: rdn-sr, alias srv1)")
    add(g, "--network", dest="network", help="network name (diffusion: unet, unet-small, unet-tiny, ...; regression: rdn-sr or srv1)")
    for key in SR_NETWORK_FLAGS:
        flag, typ, text = NETWORK_FLAGS[key]
        add(g, flag, dest=f"net_{key}", type=typ, help=text)
    add(g, "--network-option", dest="network_option", action="append", metavar="KEY=VALUE",
        help="any other network setting (repeatable); rdn-sr: channels, blocks, layers, growth")
    add_diffusion_flags(p)
    add_loop_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from .train import _launch_distributed, fit_from_args

    if args.distributed and "WORLD_SIZE" not in os.environ:
        return _launch_distributed(args)
    overrides = overrides_from_args(args)
    if args.use_gpu is not None and not args.device:
        overrides["device"] = f"cuda:{args.use_gpu}"
    regression = args.sr_objective == "regression" or args.network in ("rdn-sr", "srv1")
    overrides["task"] = "sr-regression" if regression else "sr"
    if regression:
        overrides["sr_objective"] = "regression"
    trainer, result = fit_from_args(args, overrides, defaults={"loss": "mse"} if regression else None)
    if not trainer.dist.is_main:
        return 130 if result.interrupted else 0
    print(f"run folder: {result.run_dir}")
    print(f"upscale:    difforge upscale {result.model_file} --input IMG_OR_DIR --out DIR")
    print(f"cascade:    difforge sample BASE_MODEL --upscale {result.model_file}")
    return 130 if result.interrupted else 0

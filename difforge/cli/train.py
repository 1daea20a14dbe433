"""`difforge train`: flags -> Config -> Trainer.fit()."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._prompts import add_text_train_flags
from .aliases import option_strings
from .seedtools import Given, add_train_flags, resolve_train

# network options that have their own flag (stored in model.network_options)
NETWORK_FLAGS = {
    "base_channels": ("--base-channels", int, "width of the first level"),
    "channel_mult": ("--channel-mult", str, "per-level width multipliers, e.g. 1,2,2,2"),
    "num_res_blocks": ("--num-res-blocks", int, "residual blocks per level"),
    "attention_resolutions": ("--attention-resolutions", str, "feature-map sizes with self-attention, e.g. 16,8"),
    "head_channels": ("--head-channels", int, "channels per attention head"),
    "dropout": ("--dropout", float, "dropout in residual blocks"),
    "act": ("--act", str, "activation: silu, gelu, relu, relu6, lrelu"),
    "patch_size": ("--patch-size", int, "pixels per side folded into channels (UNets: default 2 from 64 px, else 1; DiT: the token size)"),
}

# adm's own option names, set by improved-diffusion's flags (cli/seedtools.py)
SEED_NETWORK_KEYS = ("num_channels", "num_heads", "num_head_channels", "use_scale_shift_norm", "resblock_updown",
                     "use_new_attention_order")


def add(p, flag: str, **kw):
    """add_argument with the IDDM aliases of ``flag`` and no default (unset flags keep the config's value)."""
    kw.setdefault("default", None)
    return p.add_argument(*option_strings(flag), **kw)


def bool_flag(p, flag: str, dest: str, help: str, auto: bool = False):
    """``--flag``, ``--flag True/False`` (IDDM's and improved-diffusion's form) and ``--no-flag``;
    ``auto``: also ``--flag auto``."""
    kind, metavar = (_auto_or_bool, "auto|BOOL") if auto else (parse_bool, "BOOL")
    p.add_argument(*option_strings(flag), dest=dest, nargs="?", const=True, type=kind, default=None, metavar=metavar, help=help)
    p.add_argument("--no-" + flag[2:], dest=dest, action="store_false", help=argparse.SUPPRESS)


def number_or_auto(text: str):
    if str(text).lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


def _auto_or_bool(text: str):
    return "auto" if str(text).lower() == "auto" else parse_bool(text)


def resume_value(text: str):
    """``--resume`` (alone: the run named by --run), ``--resume True/False`` (IDDM) or ``--resume RUN_DIR``."""
    low = str(text).lower()
    return True if low in ("true", "yes", "1") else (False if low in ("false", "no", "0") else text)


def parse_bool(text: str) -> bool:
    """improved-diffusion's str2bool: true/false, yes/no, 1/0 (any case)."""
    low = str(text).lower()
    if low in ("true", "yes", "y", "t", "1", "on"):
        return True
    if low in ("false", "no", "n", "f", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def value_bool_flag(p, flag: str, dest: str, help: str):
    """``--flag`` alone means true; ``--flag False`` as improved-diffusion's scripts write it."""
    add(p, flag, dest=dest, nargs="?", const=True, type=parse_bool, metavar="BOOL", help=help)


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of `difforge train`; the pieces serve the other trainers (train-vae, ...)."""
    add_data_flags(p)
    add_network_flags(p)
    add_diffusion_flags(p)
    add_latent_flags(p)
    add_loop_flags(p)


def add_latent_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latent diffusion (see `difforge train-vae`)")
    bool_flag(g, "--latent", "latent", "diffuse in the latent space of a VAE (needs --vae; --vae alone implies it)")
    add(g, "--vae", dest="vae", metavar="VAE_FILE", help="the VAE model file (from difforge train-vae); --image-size stays in pixels")
    g.add_argument("--autoencoder_network", dest="autoencoder_network", default=None, choices=("vae",),
                   help="IDDM: the autoencoder kind (the VAE file names its own architecture)")
    bool_flag(g, "--latent-cache", "latent_cache", "keep the encoded training set in the run folder, reused on resume (default on)")


def add_data_flags(p: argparse.ArgumentParser, data_names: tuple = ()) -> None:
    """Data flags; ``data_names`` are extra names of ``--data`` (train-vae's ``--train``)."""
    g = p.add_argument_group("data")
    g.add_argument(*data_names, *option_strings("--data"), dest="data", default=None, metavar="DIR",
                   help="image folder: class sub-folders (conditional) or flat; default: the built-in defect set")
    add(g, "--image-size", dest="image_size", type=int, help="train resolution in pixels (default 64)")
    add(g, "--channels", dest="channels", type=lambda v: v if v == "auto" else int(v), choices=(1, 3, "auto"),
        help="1 = grayscale, 3 = RGB, auto (default) = 1 when every image is grey (R = G = B), else 3")
    bool_flag(g, "--conditional", "conditional", "force class-conditional (or not); default: class sub-folders decide")
    add(g, "--labels-from-filenames", dest="labels_from_filenames", action="store_const", const=True,
        help="flat folder: the class is the file name before its first '_' (cat_001.png -> cat), as improved-diffusion")
    add(g, "--num-classes", dest="num_classes", type=int, help="the number of classes the data must have (checked; default: any)")
    bool_flag(g, "--hflip", "hflip", "plain random horizontal flips (default off: samples may come out mirrored; "
              "--augment flips teaches flips without that)")
    add(g, "--augment", dest="augment", metavar="LIST",
        help="EDM-style augmentations the network is told about (none reach the samples): any of flips,rot90,translate")
    add(g, "--augment-p", dest="augment_p", type=float, help="probability that an image is augmented (default 0 = off)")
    add(g, "--crop-p", dest="crop_p", type=float,
        help="probability that a batch trains on random crops, the network told where (Patch Diffusion; none in samples; default 0 = off)")
    add(g, "--crop-size", dest="crop_size", type=int, help="side of those crops in pixels (default: half the image size)")
    add(g, "--mask-weight", dest="mask_weight", type=number_or_auto, metavar="W|auto",
        help="the loss of a pixel inside its image's defect mask weighs 1 + W (masks: --masks, ROOT/images + ROOT/masks, "
             "or the built-in set's own). auto (default): W = 10 for a new text run that has masks, else 0 = off")
    add(g, "--skip-bad-images", dest="skip_bad_images", action="store_const", const=True, help="skip unreadable images instead of stopping")
    add(g, "--drop-empty-classes", dest="drop_empty_classes", action="store_const", const=True,
        help="with --skip-bad-images: train without a class folder whose images are all unreadable (default: stop)")
    add(g, "--mask-conditioning", dest="mask_conditioning", action="store_const", const=True,
        help="train an inpainting model: it sees (noisy image, mask, masked clean image); --data ROOT/images with masks in ROOT/masks")
    add(g, "--masks", dest="masks", metavar="MDIR",
        help="mask folder for --joint-mask / --mask-conditioning / --mask-weight: one mask per image, same relative path and stem as in --data")
    add(g, "--joint-mask", dest="joint_mask", action="store_const", const=True,
        help="the mask is one more channel the model generates: every sample comes with its pixel mask (needs --masks or ROOT/images + ROOT/masks)")
    add(g, "--builtin-per-class", dest="builtin_per_class", type=int, help="built-in set: images per class")
    add(g, "--builtin-seed", dest="builtin_seed", type=int, help="built-in set: seed")
    add(g, "--builtin-materials", dest="builtin_materials", metavar="LIST",
        help="built-in set: its surfaces, any of metal,wood,concrete (default metal,wood)")
    add_text_train_flags(g)


def add_network_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    add(g, "--network", dest="network", help="network name (see `difforge info --networks`; default unet-tiny), or auto: "
        "with --max-minutes the widest UNet that sees each image 30 times in the budget, by a timing probe")
    for key, (flag, typ, text) in NETWORK_FLAGS.items():
        add(g, flag, dest=f"net_{key}", type=typ, action=Given, help=text)
    add(g, "--network-option", dest="network_option", action="append", metavar="KEY=VALUE", help="any other network setting (repeatable)")
    value_bool_flag(g, "--learn-sigma", "learn_sigma", "network also predicts the variance (2C outputs), trained by the hybrid loss")


def add_diffusion_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("diffusion")
    add(g, "--diffusion-steps", dest="diffusion_steps", type=int, help="T, the number of noise levels (default 1000)")
    add(g, "--noise-schedule", dest="noise_schedule", help="linear, cosine, sqrt_linear or sqrt")
    add(g, "--noise-shift", dest="noise_shift", type=number_or_auto, metavar="SHIFT|auto",
        help="divide every signal-to-noise ratio by SHIFT^2 (simple diffusion's shifted schedule; default auto: 0.35 for a new "
             "cosine-schedule model under 32 px -- a 16 px model draws its shapes better with less noise -- else 1; "
             "2 at 64 px made 12-minute samples worse, README)")
    add(g, "--target", dest="target", help="what the network predicts: eps, x0 or v")
    add(g, "--loss", dest="loss", help="mse, l1, huber or smooth_l1")
    add(g, "--label-dropout", dest="label_dropout", type=float, help="null-class rate for classifier-free guidance (default 0.1)")
    add(g, "--word-dropout", dest="word_dropout", type=float,
        help="text runs with the built-in encoder: leave each caption word out with this probability (default 0)")
    add(g, "--phrase-dropout", dest="phrase_dropout", type=float,
        help="text runs with the built-in encoder: leave each caption phrase ('at the top left', 'on brushed steel': split at "
             "commas and before prepositions) out with this probability, so each phrase is also learnt alone (default 0)")
    value_bool_flag(g, "--use-kl", "use_kl", "train on the variational bound alone (L_vlb) instead of L_simple / L_hybrid")
    value_bool_flag(g, "--rescale-learned-sigmas", "rescale_learned_sigmas", "hybrid loss: VLB term x T/1000, i.e. lambda=0.001 (default true)")
    add(g, "--schedule-sampler", dest="schedule_sampler", choices=("uniform", "loss-second-moment"),
        help="timestep sampling: uniform, or loss-second-moment importance sampling (default uniform)")
    add(g, "--loss-weighting", dest="loss_weighting", choices=("none", "p2", "min_snr"),
        help="SNR weighting of L_simple: none, p2 (Choi et al. 2022) or min_snr (Hang et al. 2023)")
    add(g, "--p2-gamma", dest="p2_gamma", type=float, help="P2 weighting gamma (default 1)")
    add(g, "--p2-k", dest="p2_k", type=float, help="P2 weighting k (default 1)")
    add(g, "--snr-gamma", dest="snr_gamma", type=float, help="Min-SNR gamma (default 5)")


def add_loop_flags(p: argparse.ArgumentParser) -> None:
    """The shared loop's flags: run folder, optimisation, precision, checkpoints, previews, DDP, --config."""
    g = p.add_argument_group("training")
    add(g, "--run", dest="run", help="run name: files go to RUNS_DIR/RUN (default 'default')")
    add(g, "--runs-dir", dest="runs_dir", help="folder of runs (default ./runs)")
    add(g, "--epochs", dest="epochs", type=int, help="passes over the data (default 100 unless --max-steps)")
    add(g, "--max-steps", dest="max_steps", type=int, help="optimizer steps (overrides --epochs)")
    add(g, "--max-minutes", dest="max_minutes", type=float, help="stop (saving everything) after this many minutes")
    add(g, "--batch-size", dest="batch_size", type=int, help="images per micro-batch, per process (default 16)")
    add(g, "--num-workers", dest="num_workers", type=int, help="accepted for IDDM compatibility; images are decoded once up front")
    add(g, "--optimizer", dest="optimizer", help="adam, adamw or sgd")
    add(g, "--lr", dest="lr", type=number_or_auto, metavar="LR|auto", help="peak learning rate (default auto: 2e-3 for a new pixel-space unet-tiny diffusion run without captions, 1e-3 for other networks, fine-tunes, latent and text runs, VAEs, classifiers and upsamplers)")
    add(g, "--weight-decay", dest="weight_decay", type=float)
    add(g, "--lr-schedule", dest="lr_schedule", help="constant, linear, cosine or warmup_cosine")
    add(g, "--warmup-steps", dest="warmup_steps", type=int)
    add(g, "--ema-decay", dest="ema_decay", type=float, help="EMA decay (default 0.995; the --ema-power EMAs are tracked beside it and the best on held-out images kept)")
    add(g, "--ema-extra", dest="ema_extra", type=lambda v: [float(d) for d in v.split(",") if d.strip()], metavar="D1,D2",
        help="more fixed EMA decays tracked beside --ema-decay (default none); the best on held-out images is kept")
    add(g, "--ema-power", dest="ema_power", type=lambda v: [float(d) for d in v.split(",") if d.strip()], metavar="S1,S2",
        help="power-function EMAs tracked beside --ema-decay, by width as a fraction of the run (EDM2 sigma_rel; default 0.05,0.2)")
    bool_flag(g, "--ema-select", "ema_select", "hold out 5%% of the images (80 or more) and keep the best EMA on them (default on)")
    add(g, "--keep-all-ema", dest="keep_all_ema", action="store_const", const=True,
        help="also write every tracked EMA as checkpoints/ema_<label>.safetensors (ema_0.995, ema_p0.05, ...)")
    add(g, "--precision", dest="precision", help="auto (bf16 where the hardware has fast bf16), fp32, bf16, fp16")
    p.add_argument("--amp", dest="precision", action="store_const", const="auto", help="IDDM: mixed precision where it is fast (= --precision auto)")
    add(g, "--grad-accum", dest="grad_accum", type=int, help="micro-batches per optimizer step")
    add(g, "--grad-clip", dest="grad_clip", type=float, help="max gradient norm (default 1.0)")
    add(g, "--seed", dest="seed", type=int)
    bool_flag(g, "--channels-last", "channels_last", "channels_last memory layout: auto (default: probed against NCHW on "
              "this machine when --max-minutes is given, else off), true or false", auto=True)
    bool_flag(g, "--compile", "compile", "torch.compile the training network (same numbers as eager within float round-off; "
              "one step compiles, 1-2 minutes on a CPU, and checks the compiled gradients against eager ones: if they disagree "
              "the run says so and stays eager; needs a C++ compiler). auto (default): with --max-minutes >= 10, a network "
              "measured faster compiled (unet-tiny: 1.18-1.29x in bf16 on a CPU) and a working compiler, the run times its "
              "eager and its compiled steps and keeps the faster; else off. true: always; false: never", auto=True)
    add(g, "--device", dest="device", help="auto, cpu, cuda or cuda:N")

    g = p.add_argument_group("checkpoints and previews")
    add(g, "--resume", dest="resume", nargs="?", const=True, type=resume_value, metavar="RUN_DIR",
        help="continue a run: RUN_DIR, or alone / True the run named by --run (IDDM: --resume True --load_model_dir NAME)")
    p.add_argument("--start_epoch", dest="start_epoch", type=int, default=None, help=argparse.SUPPRESS)
    add(g, "--pretrain", dest="pretrain", metavar="FILE", help="start from the weights of a model file (fine-tune)")
    add(g, "--checkpoint-every", dest="checkpoint_every", type=int, help="steps between resumable checkpoints (default 500)")
    add(g, "--save-every", dest="save_every", type=int, help="steps between numbered EMA snapshots")
    add(g, "--save-every-epochs", dest="save_every_epochs", type=int, help="epochs between numbered EMA snapshots")
    add(g, "--save-start", dest="save_start", type=int, help="first epoch to keep numbered snapshots")
    add(g, "--preview-every", dest="preview_every", type=int, help="steps between preview grids (default: only at the end)")
    add(g, "--preview-num", dest="preview_num", type=int)
    add(g, "--preview-sampler", dest="preview_sampler", help="sampler of the preview grids (IDDM's --sample at training)")
    add(g, "--preview-steps", dest="preview_steps", type=int)
    add(g, "--image-format", dest="image_format", choices=("png", "jpg"))
    add(g, "--log-every", dest="log_every", type=int)
    add(g, "--tensorboard", dest="tensorboard", action="store_const", const=True,
        help="also write metrics, previews and the config to runs/NAME/tb/ (pip install 'difforge[tb]')")
    add(g, "--eval-every", dest="eval_every", type=int, help="steps between FID/KID of EMA samples (columns of metrics.csv)")
    add(g, "--eval-real", dest="eval_real", metavar="DIR|NPZ", help="reference images for --eval-every (default: the training images)")
    add(g, "--eval-num", dest="eval_num", type=int, help="samples per evaluation (default 256)")
    add(g, "--eval-metrics", dest="eval_metrics", help="comma-separated: fid,sfid,kid,is,pr (default fid,kid)")
    add(g, "--eval-features", dest="eval_features", metavar="inception|FILE.pt", help="feature extractor (default inception: needs its weight file)")
    g = p.add_argument_group("several processes (see README: torchrun for several GPUs / nodes)")
    g.add_argument("--distributed", nargs="?", const=True, default=False, type=parse_bool, metavar="BOOL",
                   help="launch --world-size processes on this machine (DDP; gloo on CPU, NCCL on GPUs); IDDM's --distributed True")
    g.add_argument("--world-size", "--world_size", dest="world_size", type=int, default=None, help="processes to launch with --distributed (default: GPUs, or 2 on CPU)")
    g.add_argument("--main_gpu", dest="main_gpu", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE.yaml", help="settings file; flags override it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion model on an image folder",
        description="Train a diffusion model on an image folder (class sub-folders -> conditional). "
        "Without --data it trains on the built-in industrial-defect dataset.",
    )
    add_training_flags(p)
    add_train_flags(p)
    from ..train.presets import DEFAULT_PRESET, PRESETS

    bool_flag(p, "--cascade", "cascade", "auto (default): a CPU run from 64 px with --max-minutes trains a small model "
              "and an upsampler (x2 or x4, --cascade-scale) side by side on half the cores each, and `difforge sample` writes "
              "full-size images (measured in 12 minutes: defect textures 2.75x the real-vs-real distance against 6.1x for one "
              "64 px model, glyphs 2.6-2.95x against 10.5x; README); false: one full-size model; true: a cascade anywhere", auto=True)
    add(p, "--cascade-scale", dest="cascade_scale", type=_cascade_scale, metavar="{auto,2,4}",
        help="cascade: the upsampler's factor. 4 trains a quarter-size model (16 px for 64 px) and an x4 upsampler: "
        "measured in 12 minutes, better for shapes on flat backgrounds (glyphs: distance 8.8 -> 2.4-3.2 with --noise-aug 0.15 "
        "and the small model's noise shift 0.35), worse for textures (defects: 13.05 -> 24.4). Default auto: x4 when a "
        "quarter-size copy of the training images keeps at least 90%% of their variation (the log says how much), else x2; README")
    add(p, "--noise-aug", dest="noise_aug", type=number_or_auto, metavar="S|auto",
        help="cascade: train its upsampler on low-res inputs noised at s ~ U[0, S] (noise-conditioning augmentation, as train-sr's "
        "--noise-aug; default auto: 0.15 for an x4 upsampler, 0 for x2). It makes the upsampler forgive the small model's grain: "
        "measured in 12 minutes, S = 0.15 gave glyphs on flat backgrounds a 25%% lower distance as x2 (18.7 -> 2.4-3.2 as x4) "
        "and the defect textures a 36%% higher one as x2 (README)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help=f"a named recipe for a new run (default {DEFAULT_PRESET}: the built-in defaults); flags win. "
                   "iddm = IDDM's defaults, classic = difforge's defaults before presets")
    p.set_defaults(func=run)


def overrides_from_args(args) -> dict:
    """Flat config overrides from parsed flags; only flags the user gave."""
    from ..train.start import config_overrides

    keys = [*NETWORK_FLAGS, *SEED_NETWORK_KEYS]
    return config_overrides(vars(args), {key: getattr(args, f"net_{key}", None) for key in keys},
                            getattr(args, "network_option", None) or [])


def _launch_distributed(args) -> int:
    import sys

    import torch

    from ..train.distributed import launch

    n = args.world_size or (torch.cuda.device_count() or 2)
    argv = list(getattr(args, "argv", None) or sys.argv[1:])  # the children see WORLD_SIZE and do not launch again
    print(f"launching {n} processes (batch {args.batch_size or 'per config'} each)", file=sys.stderr)
    return launch(argv, n)


def fit_from_args(args, overrides: dict, defaults: dict = None):
    """``--config``, ``--resume``, ``--pretrain``, ``--quiet`` and ``overrides`` -> ``(trainer, result)``
    (shared by ``train``, ``train-vae`` and ``train-classifier``)."""
    from ..train.start import start_run

    return start_run(args.config, overrides, resume=args.resume, pretrain=args.pretrain, progress=not args.quiet, defaults=defaults,
                     resume_name=getattr(args, "load_model_dir", None), start_epoch=args.start_epoch)


def prepare(args) -> bool:
    """Seed-tool flags folded in and their notes printed; True when this process only launches others."""
    import os
    import sys

    main = os.environ.get("RANK", "0") == "0"
    for note in resolve_train(args):
        if main:
            print(note, file=sys.stderr)
    return bool(args.distributed) and "WORLD_SIZE" not in os.environ


def _cascade_scale(text: str):
    """--cascade-scale: auto, 2 or 4."""
    if text == "auto":
        return text
    if text in ("2", "4"):
        return int(text)
    raise argparse.ArgumentTypeError(f"choose auto, 2 or 4, not {text!r}")


def cascade_note(config) -> str:
    """What ``sample`` makes of a cascade run's model file (train/cascade.py)."""
    from ..train.cascade import full_size

    if config.train.cascade is not True:
        return ""
    return f"   ({full_size(config)} px: its {config.data.image_size} px images upscaled by {config.train.run}/upsampler)"


def run(args) -> int:
    if prepare(args):
        return _launch_distributed(args)
    from ..train.presets import preset_values

    preset = preset_values(args.preset) if getattr(args, "preset", None) else None
    overrides = overrides_from_args(args)
    if getattr(args, "mask_conditioning", None):
        overrides["task"] = "inpaint"  # train/tasks/inpaint.py
    if overrides.get("text_encoder") and args.conditional is None:  # captions name the class; --conditional adds labels too
        overrides["conditional"] = False
    if getattr(args, "joint_mask", None):
        if getattr(args, "mask_conditioning", None):
            raise UserError("--joint-mask and --mask-conditioning are two kinds of model; choose one")
        overrides["task"] = "joint"  # train/tasks/joint.py
    trainer, result = fit_from_args(args, overrides, defaults=preset)
    if not trainer.dist.is_main:
        return 130 if result.interrupted else 0
    print(f"run folder: {result.run_dir}")  # the trainer's log already said "model file: ..."
    print(f"sample:     difforge sample {result.model_file} --num 16 --grid" + cascade_note(trainer.config))
    return 130 if result.interrupted else 0

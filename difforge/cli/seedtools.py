"""The seed tools' own sampling flags, so their documented command lines run unchanged.

IDDM's ``generate.py``, improved-diffusion's ``image_sample.py``, guided-diffusion's
``classifier_sample.py`` / ``free_sample.py`` and DiT's ``sample.py`` all repeat the network and
diffusion flags of training at sampling time, because their checkpoints do not describe
themselves. A difforge model file does, so here those flags are *checked* against it: equal ->
accepted silently, different -> one line naming the flag and the file's value (sampling a model
with another network's flags is how their users get pure noise). Flags that mean nothing for a
self-describing file or on this machine are accepted with one note.

The sampler follows improved-diffusion's rule: ``--timestep_respacing N`` runs the respaced DDPM
sampler unless ``--use_ddim True``; DiT's ``--num-sampling-steps`` runs DDPM too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import UserError

# improved-diffusion's --use_ddim: ddim_sample_loop, else p_sample_loop (respaced DDPM; DiT's too)
SEED_SAMPLER = {True: "ddim", False: "ddpm"}
TRUE = {"true", "t", "yes", "y", "1", "on"}
FALSE = {"false", "f", "no", "n", "0", "off"}


def str2bool(text) -> bool:
    """argparse type of the seed tools' boolean flags: ``--class_cond True``, ``--use_ddim False``."""
    v = str(text).strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _ints(text) -> List[int]:
    return [int(float(v)) for v in str(text).replace(" ", "").split(",") if v]


def _floats(text) -> List[float]:
    return [float(v) for v in str(text).replace(" ", "").split(",") if v]


def _net(meta, *keys):
    """The network config's value under the first of ``keys`` it has (KeyError if none)."""
    cfg = meta["network"]["config"]
    for k in keys:
        if k in cfg:
            return cfg[k]
    raise KeyError(keys[0])


def _attention(meta) -> List[int]:
    return sorted(int(r) for r in _net(meta, "attention_resolutions"))


def _channel_mult(meta) -> List[float]:
    return [float(m) for m in _net(meta, "channel_mult")]


def _dit_name(meta) -> str:
    return str(meta["network"]["name"]).lower()


# flag spellings, a name, argparse type, what the model file says, how to compare the given value to it
Check = Tuple[Tuple[str, ...], str, Callable, Callable[[Dict[str, Any]], Any], Callable[[Any], Any]]
MODEL_CHECKS: List[Check] = [
    (("--image_size", "--image-size"), "seed_image_size", int, lambda m: int(m["data"]["image_size"]), int),
    (("--num_channels",), "seed_num_channels", int, lambda m: int(_net(m, "num_channels", "base_channels")), int),
    (("--num_res_blocks",), "seed_num_res_blocks", int, lambda m: int(_net(m, "num_res_blocks")), int),
    (("--num_heads",), "seed_num_heads", int, lambda m: int(_net(m, "num_heads")), int),
    (("--num_head_channels",), "seed_num_head_channels", int, lambda m: int(_net(m, "num_head_channels", "head_channels")), int),
    (("--attention_resolutions",), "seed_attention_resolutions", _ints, _attention, sorted),
    (("--channel_mult",), "seed_channel_mult", _floats, _channel_mult, lambda v: [float(x) for x in v]),
    (("--use_scale_shift_norm",), "seed_use_scale_shift_norm", str2bool, lambda m: bool(_net(m, "use_scale_shift_norm")), bool),
    (("--resblock_updown",), "seed_resblock_updown", str2bool, lambda m: bool(_net(m, "resblock_updown")), bool),
    (("--use_new_attention_order",), "seed_use_new_attention_order", str2bool, lambda m: bool(_net(m, "use_new_attention_order")), bool),
    (("--learn_sigma", "--learn-sigma"), "seed_learn_sigma", str2bool, lambda m: bool(m["diffusion"].get("learn_sigma", False)), bool),
    (("--diffusion_steps", "--diffusion-steps"), "seed_diffusion_steps", int, lambda m: int(m["diffusion"]["diffusion_steps"]), int),
    (("--noise_schedule", "--noise-schedule"), "seed_noise_schedule", str, lambda m: m["diffusion"]["noise_schedule"], str),
    (("--predict_xstart",), "seed_predict_xstart", str2bool, lambda m: m["diffusion"]["target"] == "x0", bool),
    (("--class_cond", "--conditional"), "seed_class_cond", str2bool, lambda m: bool(m["data"].get("class_names")), bool),
    (("--num_classes", "--num-classes"), "seed_num_classes", int, lambda m: len(m["data"].get("class_names") or []), int),
    (("--network_name", "--network"), "seed_network", str, lambda m: m["network"]["name"], str),
    (("--act",), "seed_act", str, lambda m: _net(m, "act"), str),
    (("--model",), "seed_dit_model", str, _dit_name, lambda v: str(v).lower()),
]

# flags of the seed tools that describe training, a GPU set-up or a checkpoint format: no meaning here
IGNORED = ("--use_fp16", "--use_checkpoint", "--rescale_timesteps", "--rescale_learned_sigmas", "--use_kl",
           "--sigma_small", "--num_heads_upsample", "--dropout", "--main_gpu", "--num_workers", "--classifier_pool",
           "--classifier_width", "--classifier_depth", "--classifier_attention_resolutions",
           "--classifier_use_scale_shift_norm", "--classifier_resblock_updown")


def add_flags(p) -> None:
    """Add the seed tools' sampling flags to a ``sample`` parser (hidden from --help's main list)."""
    g = p.add_argument_group("flags of the seed tools (IDDM, improved-/guided-diffusion, DiT)",
                             "model flags are checked against the model file; --timestep_respacing runs DDPM unless --use_ddim True")
    for flags, _, typ, _, _ in MODEL_CHECKS:
        for flag in flags:  # one dest per spelling, so a message names the flag as the user typed it
            g.add_argument(flag, dest=_dest(flag), type=typ, default=None, help=argparse.SUPPRESS)
    g.add_argument("--timestep_respacing", dest="timestep_respacing", default=None,
                   help="improved-diffusion: respaced steps (250, ddim25, 10,15,20); DDPM unless --use_ddim True")
    g.add_argument("--use_ddim", dest="use_ddim", type=str2bool, default=None, help="improved-diffusion: DDIM (True) or DDPM (False)")
    g.add_argument("--num-sampling-steps", dest="dit_steps", type=int, default=None, help="DiT: DDPM steps")
    g.add_argument("--cfg-scale", dest="cfg", type=float, help="DiT: classifier-free guidance scale")
    g.add_argument("--ckpt", dest="ckpt", default=None, metavar="FILE", help="DiT: the model file (also writes the grid sample.png)")
    g.add_argument("--cmodel_path", dest="cmodel_path", default=None, metavar="FILE", help="guided-diffusion free_sample: the conditional model")
    g.add_argument("--ucmodel_path", dest="uncond_model", metavar="FILE", help=argparse.SUPPRESS)
    g.add_argument("--w", dest="two_model_w", type=float, default=None, help="guided-diffusion free_sample: weight w of (1 + w) eps_c - w eps_u")
    g.add_argument("--model_path", dest="model_path", default=None, metavar="FILE",
                   help="improved-/guided-diffusion: the model file (also writes the .npz batch, as they do)")
    g.add_argument("--num_samples", dest="num_samples", type=int, default=None, help="improved-/guided-diffusion: images (also writes the .npz)")
    g.add_argument("--result_path", dest="result_path", default=None, help="IDDM: folder the output folder --generate_name goes in")
    for flag in IGNORED:
        g.add_argument(flag, dest="ignored_" + flag.lstrip("-"), default=None, help=argparse.SUPPRESS)


def resolve(args) -> None:
    """Fold the seed tools' flags into difforge's own (sampler, steps, model file, cfg, output folder)."""
    if getattr(args, "ckpt", None):
        args.model_flag = args.model_flag or args.ckpt
        args.grid = True
    if getattr(args, "cmodel_path", None):
        args.model_flag = args.model_flag or args.cmodel_path
    if getattr(args, "two_model_w", None) is not None:
        if args.cfg is not None and args.cfg != args.two_model_w:
            raise UserError(f"--w {args.two_model_w:g} and --cfg {args.cfg:g} disagree; give one of them")
        args.cfg = args.two_model_w
    respacing = getattr(args, "timestep_respacing", None)
    dit_steps = getattr(args, "dit_steps", None)
    if respacing is not None or dit_steps is not None:
        if args.steps is not None:
            raise UserError("give the number of steps once (--steps, --timestep_respacing or --num-sampling-steps)")
        args.steps = respacing if respacing is not None else str(dit_steps)
    use_ddim = getattr(args, "use_ddim", None)
    if args.sampler is None and (use_ddim is not None or respacing is not None or dit_steps is not None):
        args.sampler = SEED_SAMPLER[bool(use_ddim)]
    elif use_ddim is not None and args.sampler != ("ddim" if use_ddim else "ddpm") and use_ddim:
        raise UserError(f"--use_ddim True and --sampler {args.sampler} disagree; give one of them")
    if getattr(args, "model_path", None):  # improved-/guided-diffusion write an .npz batch
        args.model_flag = args.model_flag or args.model_path
        args.npz = True
    if getattr(args, "num_samples", None) is not None:
        args.num = args.num_samples
        args.npz = True
    if getattr(args, "result_path", None) and not args.out:
        args.out = args.result_path


def check_model(args, meta: Dict[str, Any], source: str) -> None:
    """One UserError line for the first model flag the file contradicts; one note for ignored flags."""
    for flags, _, _, read, norm in MODEL_CHECKS:
        for flag in flags:
            given = getattr(args, _dest(flag), None)
            if given is None:
                continue
            try:
                have = read(meta)
            except (KeyError, TypeError):
                print(f"note: {flag} {_show(given)} is not a setting of {source}'s network "
                      f"({meta.get('network', {}).get('name', '?')}); ignored", file=sys.stderr)
                continue
            if norm(given) != have:
                raise UserError(f"{flag} {_show(given)} does not match the model file {source}, which has {_show(have)}; "
                                f"leave the flag out (the file describes its model)")
    ignored = [f for f in IGNORED if getattr(args, "ignored_" + f.lstrip("-"), None) is not None]
    if ignored:
        print(f"note: {', '.join(ignored)} mean nothing when sampling a difforge model file; ignored", file=sys.stderr)


# -- training -----------------------------------------------------------------------------------
# improved-diffusion's spellings of network flags: they describe OpenAI's UNet (difforge's ``adm``)
ADM_SPELLINGS = ("--num_channels", "--num_res_blocks", "--attention_resolutions", "--num_heads", "--num_head_channels",
                 "--use_scale_shift_norm", "--resblock_updown", "--channel_mult", "--use_new_attention_order")
# difforge option names -> adm's (OpenAI's) names
ADM_OPTION_NAMES = {"base_channels": "num_channels", "head_channels": "num_head_channels"}
# training flags of the seed tools that mean nothing here, with the reason shown in the note
TRAIN_IGNORED = {
    "--use_checkpoint": "no gradient checkpointing",
    "--num_heads_upsample": "the up path uses the down path's heads",
    "--fp16_scale_growth": "precision is --precision",
    "--microbatch": "use --grad-accum",
}
# flags with a difforge destination of their own that still mean nothing here
NOTED = {"main_gpu": ("--main_gpu", "the launcher gives each process its device"),
         "num_workers": ("--num_workers", "images are decoded once into memory"),
         "use_fp16": ("--use_fp16", "fp16 needs a GPU; --precision chooses")}


class Given(argparse.Action):
    """Store the value and remember the spelling the user typed (``args.given_flags``), so an
    improved-diffusion spelling can pick its network (see :func:`resolve_train`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if values is None and self.nargs == "?" else values)
        namespace.given_flags = (getattr(namespace, "given_flags", None) or set()) | {option_string}


def add_train_flags(p, classifier: bool = False) -> None:
    """The seed tools' training flags that have no difforge spelling (see README "Coming from IDDM")."""
    g = p.add_argument_group("flags of the seed tools (IDDM, improved-/guided-diffusion, DiT)",
                             "improved-diffusion's network flags (--num_channels, --num_heads, ...) pick the adm network "
                             "unless --network is given")
    g.add_argument("--class_cond", dest="class_cond", type=str2bool, default=None, metavar="BOOL",
                   help="improved-diffusion: class-conditional; a flat folder takes classes from file names (CLASS_xxx.png)")
    g.add_argument("--anneal_lr", dest="anneal_lr", type=str2bool, default=None, metavar="BOOL",
                   help="guided-diffusion: learning rate decays linearly to 0 (= --lr-schedule linear)")
    g.add_argument("--lr_anneal_steps", dest="lr_anneal_steps", type=int, default=None,
                   help="improved-diffusion: train N steps with the learning rate decaying linearly to 0")
    g.add_argument("--use_fp16", dest="use_fp16", type=str2bool, default=None, metavar="BOOL",
                   help="improved-diffusion: fp16 on a GPU (= --precision fp16); nothing on a CPU")
    g.add_argument("--rescale_timesteps", dest="rescale_timesteps", type=str2bool, default=None, metavar="BOOL",
                   help="improved-diffusion: the network sees t * 1000 / T (adm only)")
    g.add_argument("--load_model_dir", dest="load_model_dir", default=None, metavar="NAME",
                   help="IDDM: with --resume True, the run RESULT_PATH/NAME to continue")
    if classifier:
        g.add_argument("--classifier_pool", dest="classifier_pool", default=None,
                       help="guided-diffusion: pooling of the classifier head (only 'attention' here)")
        g.add_argument("--classifier_resblock_updown", dest="clf_resblock_updown", type=str2bool, default=None, metavar="BOOL")
        g.add_argument("--classifier_use_scale_shift_norm", dest="clf_use_scale_shift_norm", type=str2bool, default=None, metavar="BOOL")
    else:
        g.add_argument("--model", dest="dit_model", default=None, metavar="DiT-XL/2",
                       help="DiT: the model preset (= --network dit-xl/2)")
        for flag, opt in (("--num_heads", "num_heads"), ("--num_head_channels", "num_head_channels"), ("--channel_mult", "channel_mult"),
                          ("--use_scale_shift_norm", "use_scale_shift_norm"), ("--resblock_updown", "resblock_updown"),
                          ("--use_new_attention_order", "use_new_attention_order")):
            typ = str2bool if opt.startswith(("use_", "resblock")) else (str if opt == "channel_mult" else int)
            g.add_argument(flag, dest=f"net_{opt}", type=typ, default=None, action=Given, help=argparse.SUPPRESS)
    for flag in TRAIN_IGNORED:
        g.add_argument(flag, dest="ignored_" + flag.lstrip("-"), default=None, help=argparse.SUPPRESS)


def resolve_train(args) -> List[str]:
    """Fold the seed tools' training flags into difforge's; returns the notes to print (one line each)."""
    notes: List[str] = []
    if getattr(args, "class_cond", None) is not None:
        if args.conditional is not None and args.conditional != args.class_cond:
            raise UserError("--class_cond and --conditional disagree; give one of them")
        args.conditional = args.class_cond
        if args.class_cond:
            args.labels_from_filenames = True
    if getattr(args, "anneal_lr", None):
        args.lr_schedule = args.lr_schedule or "linear"
    if getattr(args, "lr_anneal_steps", None):
        args.max_steps = args.max_steps or args.lr_anneal_steps
        args.lr_schedule = args.lr_schedule or "linear"
    if getattr(args, "dit_model", None):
        name = args.dit_model.lower()
        if args.network and args.network.lower() != name:
            raise UserError(f"--model {args.dit_model} and --network {args.network} disagree; give one of them")
        args.network = name
    if getattr(args, "vae", None) in ("ema", "mse"):
        raise UserError(f"--vae {args.vae} is DiT's choice of Stable Diffusion's VAE, which difforge does not download; "
                        f"train one with `difforge train-vae` and pass its file, or leave --vae out to diffuse pixels")
    if getattr(args, "classifier_pool", None) not in (None, "attention"):
        raise UserError(f"--classifier_pool {args.classifier_pool}: only 'attention' pooling is implemented here "
                        f"(guided-diffusion's default); leave the flag out or pass --classifier_pool attention")
    given = getattr(args, "given_flags", None) or set()
    adm_flags = [f for f in ADM_SPELLINGS if f in given]
    if adm_flags and not args.network and not getattr(args, "config", None):
        args.network = "adm"
        notes.append(f"note: {', '.join(adm_flags)} describe OpenAI's UNet: training network 'adm' "
                     f"(pass --network to choose another)")
    if (args.network or "").startswith("adm"):
        for ours, theirs in ADM_OPTION_NAMES.items():
            if getattr(args, f"net_{ours}", None) is not None:
                setattr(args, f"net_{theirs}", getattr(args, f"net_{ours}"))
                setattr(args, f"net_{ours}", None)
        if getattr(args, "rescale_timesteps", None):
            args.network_option = [*(args.network_option or []), f"timestep_scale={1000.0 / (args.diffusion_steps or 1000)}"]
    elif getattr(args, "rescale_timesteps", None):
        notes.append("note: --rescale_timesteps True applies to the adm network only; ignored")
    ignored = [(f, why) for f, why in TRAIN_IGNORED.items() if getattr(args, "ignored_" + f.lstrip("-"), None) is not None]
    if getattr(args, "use_fp16", None):
        import torch

        if torch.cuda.is_available():
            args.precision = args.precision or "fp16"
            args.use_fp16 = None
    ignored += [NOTED[k] for k in NOTED if getattr(args, k, None) is not None and getattr(args, k) is not False]
    if ignored:
        notes.append(f"note: {', '.join(f'{f} ({why})' for f, why in ignored)}: nothing to do here; ignored")
    return notes


def _dest(flag: str) -> str:
    return "seed_" + flag.lstrip("-").replace("-", "_dash_")


def _show(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


__all__ = ["add_flags", "add_train_flags", "check_model", "resolve", "resolve_train", "str2bool", "MODEL_CHECKS", "IGNORED"]

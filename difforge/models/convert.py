"""Import OpenAI ADM (improved-/guided-diffusion) and DiT checkpoints as difforge weights.

    sd = load_torch_state_dict("256x256_diffusion.pt")            # safe: weights_only, tensors only
    weights, config = convert_openai_adm(sd, {"image_size": 256, "num_channels": 256, ...})
    net = build("adm", **config); net.load_state_dict(weights)

Both networks mirror their originals' parameter names and shapes (:mod:`.adm`, :mod:`.dit`), so the
mapping is the identity on every key but one, and what this module adds is the checking: every
source key must be consumed and every shape must match the network the config describes, or a
:class:`CheckpointError` lists the unmatched keys.

The one key that changes is the label table, because difforge's has a null row (index
``num_classes``) for classifier-free guidance:

- OpenAI ``label_emb.weight`` has ``num_classes`` rows (no null class was trained). We append the
  mean of the class rows, a neutral "average class" that keeps ``y=None`` meaningful, and report
  ``null_class_trained=False``: guidance with that row is not classifier-free guidance; sample
  such models with cfg 1 (or with a classifier).
- DiT ``y_embedder.embedding_table.weight`` has ``num_classes + 1`` rows when DiT trained with
  class dropout (all released models): taken as is. With exactly ``num_classes`` rows (dropout 0),
  a mean row is appended as for OpenAI.

Options missing from ``config`` are read off the weights where the shapes determine them (input
channels, widths, depth, patch size, learned sigma, classes, DiT's image size); a given option
that contradicts the weights is an error. :func:`export_openai_adm` / :func:`export_dit` are the
inverse mappings (difforge network -> original names), used by the tests' round trips.

Loading is ``torch.load(weights_only=True)`` only (plus ``argparse.Namespace``, which DiT's
``train.py`` checkpoints carry under ``args``, allow-listed as plain data); any other pickled
object is refused, and so is a dict whose values are not all tensors. ``{"ema": sd}`` (preferred)
/ ``{"model": sd}`` / ``{"state_dict": sd}`` wrappers are unwrapped and a DDP ``module.`` prefix
is dropped.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..errors import CheckpointError, ConfigError
from .adm import ADM
from .dit import DiT, sincos_pos_embed
from .dit import PRESETS as DIT_PRESETS

StateDict = Dict[str, torch.Tensor]

REFUSED = "refused: not a plain tensor state dict"


# -- loading ----------------------------------------------------------------------------------
def load_torch_state_dict(path) -> StateDict:
    """A checkpoint's tensors, loaded without running pickled code; wrappers unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any failure of a foreign file is the file's fault
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notes: the refusal below says what matters
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's message gives the reason at its end, after a long preamble
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", str(e), re.S)
        why = (f"it holds a pickled object of {found.group(1)}" if found else f"a weights-only load stops at: "
               f"{' '.join(detail.group(1).split())}; is it a PyTorch checkpoint?" if detail else " ".join(str(e).split())[-300:])
        raise CheckpointError(f"{path}: {REFUSED} ({why})") from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: Any, source="checkpoint") -> StateDict:
    """The plain ``{name: tensor}`` inside ``obj`` (``ema`` > ``model`` > ``state_dict`` wrappers)."""
    if isinstance(obj, Mapping):
        for key in ("ema", "model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: {REFUSED} (found {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: {REFUSED} (non-tensor entries: {', '.join(bad[:5])})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


# -- checking ---------------------------------------------------------------------------------
@dataclass
class Converted:
    """A converted checkpoint: weights under difforge names, the network config, and whether
    the label table's null row was trained (False when this module had to append it)."""

    state_dict: StateDict
    config: Dict[str, Any]
    null_class_trained: bool = True


def _expected_shapes(cls, config: Dict[str, Any]) -> Tuple[Dict[str, torch.Size], Dict[str, Any]]:
    with torch.device("meta"):
        net = cls(**config)
    return {k: v.shape for k, v in net.state_dict().items()}, net.config


def _match(sd: StateDict, expected: Dict[str, torch.Size], family: str) -> None:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(s)})" for k, s in expected.items() if k in sd and sd[k].shape != s]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("shape mismatch", wrong), ("missing", missing), ("unconsumed", unexpected)):
            if items:
                more = f" and {len(items) - 6} more" if len(items) > 6 else ""
                parts.append(f"{label}: {', '.join(items[:6])}{more}")
        raise CheckpointError(f"the {family} weights do not fit the given config ({'; '.join(parts)}); check the config options")


def _require(sd: StateDict, key: str, family: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"not a {family} checkpoint: it has no {key!r} (first keys: {', '.join(list(sd)[:4])})")
    return sd[key]


def _infer(config: Dict[str, Any], key: str, value: Any, family: str) -> None:
    """Fill ``config[key]`` from the weights, or check the given value agrees with them."""
    if key not in config or config[key] is None:
        config[key] = value
    elif config[key] != value:
        raise ConfigError(f"{family} option {key}={config[key]!r} contradicts the checkpoint, whose weights have {key}={value!r}")


def _with_null_row(table: torch.Tensor, num_classes: int, key: str, family: str) -> Tuple[torch.Tensor, bool]:
    rows = table.shape[0]
    if rows == num_classes + 1:
        return table, True
    if rows == num_classes:
        return torch.cat([table, table.mean(0, keepdim=True)]), False
    raise CheckpointError(f"{family} {key} has {rows} rows, which fits neither num_classes={num_classes} nor num_classes + 1")


def _float32(sd: StateDict) -> StateDict:
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


# -- OpenAI ADM -------------------------------------------------------------------------------
_ADM_LABEL = "label_emb.weight"


def convert_openai_adm_full(state_dict: StateDict, config: Optional[Dict[str, Any]] = None) -> Converted:
    """:func:`convert_openai_adm` with the null-row flag (see :class:`Converted`)."""
    family = "openai-adm"
    sd = _float32(state_dict)
    cfg = dict(config or {})
    first = _require(sd, "input_blocks.0.0.weight", family)
    _infer(cfg, "in_channels", first.shape[1], family)
    _infer(cfg, "num_channels", _require(sd, "time_embed.0.weight", family).shape[1], family)
    out_ch = _require(sd, "out.2.weight", family).shape[0]
    if out_ch not in (cfg["in_channels"], 2 * cfg["in_channels"]):
        raise CheckpointError(f"{family} out.2.weight has {out_ch} output channels for {cfg['in_channels']} input channels")
    _infer(cfg, "learn_sigma", out_ch == 2 * cfg["in_channels"], family)
    if "image_size" not in cfg:
        raise ConfigError("openai-adm conversion needs image_size (the size the model was trained at)")
    trained = True
    if _ADM_LABEL in sd:
        _infer(cfg, "num_classes", sd[_ADM_LABEL].shape[0], family)
        sd[_ADM_LABEL], trained = _with_null_row(sd[_ADM_LABEL], cfg["num_classes"], _ADM_LABEL, family)
    else:
        _infer(cfg, "num_classes", 0, family)
    expected, full_config = _expected_shapes(ADM, cfg)
    _match(sd, expected, family)
    return Converted(sd, full_config, trained)


def convert_openai_adm(state_dict: StateDict, config: Optional[Dict[str, Any]] = None) -> Tuple[StateDict, Dict[str, Any]]:
    """OpenAI ``UNetModel`` weights -> (difforge ``adm`` weights, ``adm`` config).

    ``config`` holds ``adm`` options (see :class:`difforge.models.adm.ADM`); ``image_size`` is
    required, and the options the weights cannot tell (num_res_blocks, channel_mult,
    attention_resolutions, heads, resblock_updown, attention order, scale-shift norm) must match
    how the model was trained, else the shape check fails or (heads, attention order, which
    change no shape) the outputs do.
    """
    out = convert_openai_adm_full(state_dict, config)
    return out.state_dict, out.config


def export_openai_adm(net_or_state_dict) -> StateDict:
    """difforge ``adm`` weights -> OpenAI ``UNetModel`` names (the null row of label_emb dropped)."""
    sd = net_or_state_dict.state_dict() if isinstance(net_or_state_dict, torch.nn.Module) else net_or_state_dict
    sd = {k: v.detach().clone() for k, v in sd.items()}
    if _ADM_LABEL in sd:
        sd[_ADM_LABEL] = sd[_ADM_LABEL][:-1]
    return sd


# -- DiT --------------------------------------------------------------------------------------
_DIT_LABEL = "y_embedder.embedding_table.weight"
_DIT_HEADS = {d["hidden_size"]: d["num_heads"] for d in DIT_PRESETS.values()}


def convert_dit_full(state_dict: StateDict, config: Optional[Dict[str, Any]] = None) -> Converted:
    """:func:`convert_dit` with the null-row flag (see :class:`Converted`)."""
    family = "dit"
    sd = _float32(state_dict)
    cfg = dict(config or {})
    proj = _require(sd, "x_embedder.proj.weight", family)
    hidden, in_ch, p = proj.shape[0], proj.shape[1], proj.shape[-1]
    _infer(cfg, "hidden_size", hidden, family)
    _infer(cfg, "in_channels", in_ch, family)
    _infer(cfg, "patch_size", p, family)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    _infer(cfg, "depth", depth, family)
    if "num_heads" not in cfg:
        if hidden not in _DIT_HEADS:
            raise ConfigError(f"dit conversion needs num_heads: hidden size {hidden} is none of DiT's S/B/L/XL sizes")
        cfg["num_heads"] = _DIT_HEADS[hidden]
    fc1 = _require(sd, "blocks.0.mlp.fc1.weight", family)
    if "mlp_ratio" not in cfg:
        cfg["mlp_ratio"] = fc1.shape[0] / hidden
    out_vals = _require(sd, "final_layer.linear.weight", family).shape[0]
    _infer(cfg, "learn_sigma", out_vals == 2 * p * p * in_ch, family)
    tokens = _require(sd, "pos_embed", family).shape[1]
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise CheckpointError(f"dit pos_embed has {tokens} tokens, not a square grid")
    _infer(cfg, "image_size", grid * p, family)
    trained = True
    if _DIT_LABEL in sd:
        if cfg.get("num_classes") is None:  # DiT's released models trained with class dropout: a null row
            cfg["num_classes"] = sd[_DIT_LABEL].shape[0] - 1
        sd[_DIT_LABEL], trained = _with_null_row(sd[_DIT_LABEL], cfg["num_classes"], _DIT_LABEL, family)
    else:
        _infer(cfg, "num_classes", 0, family)
    expected, full_config = _expected_shapes(DiT, cfg)
    _match(sd, expected, family)
    table = sincos_pos_embed(hidden, grid, grid)[None]
    if (sd["pos_embed"] - table).abs().max() > 1e-4:
        raise CheckpointError("dit pos_embed is not DiT's fixed 2-D sin-cos table; this network cannot represent it")
    return Converted(sd, full_config, trained)


def convert_dit(state_dict: StateDict, config: Optional[Dict[str, Any]] = None) -> Tuple[StateDict, Dict[str, Any]]:
    """DiT ``models.py`` weights -> (difforge ``dit`` weights, ``dit`` config).

    Everything but ``num_heads`` (taken from DiT's S/B/L/XL table when the width is one of
    theirs) and, for a dropout-free label table, ``num_classes`` is read off the weights;
    ``config`` may give any ``dit`` option, and a contradicting one is an error.
    """
    out = convert_dit_full(state_dict, config)
    return out.state_dict, out.config


def export_dit(net_or_state_dict) -> StateDict:
    """difforge ``dit`` weights -> DiT names (identical: DiT's table has the null row too)."""
    sd = net_or_state_dict.state_dict() if isinstance(net_or_state_dict, torch.nn.Module) else net_or_state_dict
    return {k: v.detach().clone() for k, v in sd.items()}


CONVERTERS = {"openai-adm": (convert_openai_adm_full, "adm"), "dit": (convert_dit_full, "dit")}
"""Source format -> (full converter, difforge network name)."""


# -- configs: OpenAI / DiT flag names -> difforge options, and the model-file description -----
_DIFFUSION_KEYS = {"diffusion_steps", "noise_schedule", "rescale_timesteps", "predict_xstart", "target", "class_names"}
_IGNORED = {
    "openai-adm": {"use_fp16", "use_checkpoint", "timestep_respacing", "use_kl", "rescale_learned_sigmas",
                   "predict_v", "conv_resample", "dims", "out_channels"},
    "dit": {"class_dropout_prob", "model", "vae", "cfg_scale", "num_sampling_steps", "seed", "ckpt"},
}
RELEASE_DIFFUSION = {"adm-imagenet64": {"noise_schedule": "cosine"}}
"""Diffusion settings of released models that differ from 1000 linear steps."""


def _coerce(value: Any) -> Any:
    """'True' / 'false' / '3' / '0.1' (pasted command-line flags) -> bool / int / float."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def _int_list(key: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return [float(v) if "." in v else int(v) for v in value.split(",") if v.strip()] or None
        except ValueError:
            raise ConfigError(f"option {key} must be comma-separated numbers, got {value!r}") from None
    return value


def options_from_config(source: str, mapping: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a conversion config into (network options, diffusion/data settings).

    Accepts difforge's option names and the original projects' flag names: OpenAI's
    ``model_channels``, ``class_cond``, ``attention_resolutions="32,16,8"``, ``channel_mult=""``,
    ``diffusion_steps``, ``noise_schedule``, ``rescale_timesteps``, ``predict_xstart``; DiT's
    ``input_size``. Training-only flags (use_fp16, use_kl, ...) are ignored.
    """
    cls = {"openai-adm": ADM, "dit": DiT}[source]
    valid = set(inspect.signature(cls).parameters)
    net: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    unknown = []
    for key, value in mapping.items():
        value = _coerce(value)
        key = {"model_channels": "num_channels", "input_size": "image_size"}.get(key, key)
        if key in _DIFFUSION_KEYS:
            extra[key] = value
        elif key in _IGNORED[source]:
            continue
        elif source == "openai-adm" and key == "class_cond":
            if not value:
                net["num_classes"] = 0
            else:
                net.setdefault("num_classes", None)  # read off label_emb
        elif source == "openai-adm" and key == "num_heads_upsample":
            if value not in (-1, mapping.get("num_heads", value)):
                raise ConfigError("num_heads_upsample (deprecated in guided-diffusion) is not supported; it must be -1")
        elif key in ("attention_resolutions", "channel_mult"):
            net[key] = _int_list(key, value)
        elif key in valid:
            net[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"unknown {source} option {unknown[0]!r}; valid options: {', '.join(sorted(valid | _DIFFUSION_KEYS))}")
    if source == "openai-adm" and extra.get("rescale_timesteps"):
        net["timestep_scale"] = 1000.0 / int(extra.get("diffusion_steps") or 1000)  # improved-diffusion's t * 1000 / T
    return net, extra


def model_meta(converted: Converted, source: str, extra: Mapping[str, Any], source_name: str = "") -> Dict[str, Any]:
    """The difforge model-file description of a converted checkpoint.

    diffusion: ``diffusion_steps`` (default 1000), ``noise_schedule`` (default linear, as every
    released OpenAI model but ImageNet-64 and every DiT), ``target`` (eps, or x0 with
    predict_xstart), ``learn_sigma`` from the weights. data: image size, channels and
    ``class_names`` (the class numbers as names unless given). ``converted`` records the source
    and whether the null class was trained (if not, sample with cfg 1).
    """
    cfg = converted.config
    target = extra.get("target") or ("x0" if extra.get("predict_xstart") else "eps")
    names = extra.get("class_names")
    if names is None:
        names = [str(i) for i in range(cfg["num_classes"])]
    names = [str(n) for n in names]
    if len(names) != cfg["num_classes"]:
        raise ConfigError(f"{len(names)} class names given for a model with {cfg['num_classes']} classes")
    return {
        "network": {"name": CONVERTERS[source][1], "config": cfg},
        "diffusion": {
            "diffusion_steps": int(extra.get("diffusion_steps") or 1000),
            "noise_schedule": extra.get("noise_schedule") or "linear",
            "target": target,
            "learn_sigma": cfg["learn_sigma"],
        },
        "data": {"image_size": cfg["image_size"], "channels": cfg["in_channels"], "class_names": names},
        "converted": {"from": source, "source": source_name, "null_class_trained": converted.null_class_trained},
        "weights": "converted",
    }


__all__ = [
    "CONVERTERS",
    "Converted",
    "REFUSED",
    "RELEASE_DIFFUSION",
    "convert_dit",
    "convert_dit_full",
    "convert_openai_adm",
    "convert_openai_adm_full",
    "export_dit",
    "export_openai_adm",
    "load_torch_state_dict",
    "model_meta",
    "options_from_config",
    "unwrap_state_dict",
]

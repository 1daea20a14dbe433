"""The self-describing model file: safetensors weights + versioned JSON metadata.

A **model file** is a ``.safetensors`` file whose metadata key ``difforge`` holds JSON with

- ``format``: ``"difforge-model"`` and ``version``: the schema version (:data:`FORMAT_VERSION`;
  a file without it reads as version 0, a newer one is refused with "upgrade difforge");
- ``kind``: ``diffusion`` (the default when absent), ``vae`` or ``classifier``;
- ``network``: ``{"name", "config"}``, so ``models.registry.build(name, **config)`` rebuilds it;
- ``diffusion``, ``data`` (image size in pixels, channels, class names), ``train``, ``weights``;
- ``latent`` (latent models): the VAE's path and sha256 (see :mod:`difforge.codec`).

``difforge sample model.safetensors`` needs nothing else: a model file never needs a flag from
training to be used. A training-state file (``difforge.train.checkpoint``) embeds a model file's
metadata under ``model`` and its weights under ``ema/``, so it reads as a model file too. Nothing
is ever unpickled, so opening a file a stranger sent cannot run code. Every write goes through
:func:`difforge.atomic.atomic_write`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .atomic import atomic_write
from .errors import CheckpointError, ConfigError

MODEL_FORMAT = "difforge-model"
STATE_FORMAT = "difforge-train-state"  # written by difforge.train.checkpoint; readable here for its EMA weights
FORMAT_VERSION = 1  # the metadata schema version, stored as "version"


def _cpu(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_tensors(path, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    """Write ``tensors`` (moved to the CPU) with ``meta`` as the ``difforge`` JSON metadata, atomically."""
    with atomic_write(path) as tmp:
        save_file(_cpu(tensors), str(tmp), metadata={"difforge": json.dumps(meta)})
    return Path(path)


def open_checked(path) -> Path:
    """``path`` as a Path, or one CheckpointError saying why it is not a file difforge can read."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a .safetensors model file (e.g. {path}/checkpoints/ema.safetensors)")
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise CheckpointError(
            f"{path} is a PyTorch pickle file; difforge reads only .safetensors model files "
            "(import other tools' checkpoints with `difforge convert`)"
        )
    return path


def read_metadata(path) -> Dict[str, Any]:
    """The ``difforge`` JSON metadata of a model or state file (reads the header only)."""
    path = open_checked(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("difforge")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); is it complete?") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file without difforge metadata; it was not written by difforge")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path} has corrupt difforge metadata (not valid JSON)") from None
    if not isinstance(meta, dict):
        kind = {list: "list", str: "string", type(None): "null", bool: "boolean"}.get(type(meta), "number")
        raise CheckpointError(f"{path} has corrupt difforge metadata (a JSON {kind}, not an object)")
    return meta


def load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a damaged file is one CheckpointError."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} could not be read ({e}); the file may be truncated") from None


def stamp_model_meta(meta: Dict[str, Any]) -> Dict[str, Any]:
    """``meta`` stamped with the model-file format and schema version."""
    return {"format": MODEL_FORMAT, "version": FORMAT_VERSION, **meta}


def nonfinite_tensors(tensors: Dict[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def nonfinite_message(bad: List[str], total: int) -> str:
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"NaN/Inf weights in {len(bad)} of {total} tensors ({', '.join(bad[:3])}{more})"


def check_finite(tensors: Dict[str, torch.Tensor], path) -> None:
    """CheckpointError when a weight is NaN or infinite: such a model samples grey or NaN images."""
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(
            f"{path} holds {nonfinite_message(bad, len(tensors))}: training diverged before this file was written; "
            "use an earlier checkpoint (step_*.safetensors) or retrain with a lower --lr or with --grad-clip"
        )


def save_model_file(path, state_dict: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    """Write a model file; weights with a NaN or an infinity are refused (the file already there is kept)."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise CheckpointError(f"not writing {path}: {nonfinite_message(bad, len(state_dict))}; the file already there is kept")
    return save_tensors(path, state_dict, stamp_model_meta(meta))


def load_model_file(path, check_weights: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Weights and metadata of a model file; a training-state file is accepted too (its EMA weights).

    ``check_weights``: refuse NaN/Inf weights (``difforge info`` reads them to report it instead)."""
    meta = read_metadata(path)
    fmt = meta.get("format")
    if fmt not in (MODEL_FORMAT, STATE_FORMAT):
        raise CheckpointError(f"{path} has format {fmt!r}, not a difforge model file")
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: metadata field 'version' must be a whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer difforge (format version {meta['version']}); upgrade difforge")
    tensors = load_tensors(Path(path))
    if fmt == STATE_FORMAT:
        tensors = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
        meta = meta.get("model")
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: training-state metadata field 'model' is missing or not an object")
    if check_weights:
        check_finite(tensors, path)
    return tensors, meta


def load_weights_into(net: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source) -> None:
    """Load ``state_dict`` strictly, turning mismatches into one message that names the layers."""
    check_fit(net.state_dict(), state_dict, source)
    net.load_state_dict(state_dict)


def check_fit(own: Dict[str, torch.Tensor], state_dict: Dict[str, torch.Tensor], source) -> None:
    """CheckpointError naming the layers when ``state_dict``'s names or shapes differ from ``own``'s."""
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("shape mismatch", wrong), ("missing", missing), ("unexpected", unexpected)):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"weights in {source} do not fit this network ({'; '.join(parts)})")


def build_network(meta: Dict[str, Any], tensors: Dict[str, torch.Tensor], path) -> torch.nn.Module:
    """The network of checked metadata (:func:`check_meta`) with ``tensors`` loaded.

    It is first built on the ``meta`` device (no memory), so a config that does not build, or
    whose layers the file's weights do not fit, is one CheckpointError before anything is allocated.
    """
    from .models import registry

    name, config = meta["network"]["name"], meta["network"]["config"]
    try:
        with torch.device("meta"):
            shell = registry.build(name, **config)
    except ConfigError as e:
        raise CheckpointError(f"{path}: metadata field network.config does not build {name!r}: {e}") from None
    except Exception as e:  # any value of a stranger's file: a wrong type, a negative size, ...
        raise CheckpointError(f"{path}: metadata field network.config does not build {name!r} ({type(e).__name__}: {str(e)[:200]})") from None
    check_fit(shell.state_dict(), tensors, path)
    net = registry.build(name, **config)
    net.load_state_dict(tensors)
    return net


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes (how a model file identifies the VAE it links)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- the metadata schema ------------------------------------------------------------------------
KINDS = {"diffusion": "network", "classifier": "network", "vae": "autoencoder", "upscaler": "upscaler"}  # kind -> registry kind
MAX_IMAGE_SIZE = 8192
MAX_DIFFUSION_STEPS = 100_000


def _bad(path, field: str, message: str) -> CheckpointError:
    return CheckpointError(f"{path}: metadata field {field} {message}; the file is damaged or was not written by this difforge")


def _obj(parent: Dict[str, Any], key: str, path, where: str = "") -> Dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise _bad(path, where + key, "is missing" if value is None else f"must be an object, got {type(value).__name__}")
    return value


def _int(parent: Dict[str, Any], key: str, path, where: str, lo: int, hi: int) -> int:
    value = parent.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        got = "missing" if value is None else repr(value)[:40]
        raise _bad(path, where + key, f"must be a whole number in {lo}..{hi}, got {got}")
    return value


def _text(parent: Dict[str, Any], key: str, path, where: str, choices=None) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or (choices is not None and value not in choices):
        allowed = f"one of {', '.join(choices)}" if choices is not None else "text"
        raise _bad(path, where + key, f"must be {allowed}, got {'missing' if value is None else repr(value)[:60]}")
    return value


def check_meta(meta: Any, path) -> Dict[str, Any]:
    """``meta`` when it describes a usable model, else one CheckpointError naming the file and the field.

    Checks the schema of :mod:`difforge.modelfile`: ``kind``; ``network`` (a registered name of
    the kind's family, a config object); ``diffusion`` (schedule, steps, target) for diffusion
    models and classifiers; ``data`` (``image_size`` 1..8192, ``channels`` 1..4, ``class_names``
    a list of distinct texts); a latent model's ``latent`` link; a cascade base's ``cascade`` link. Whether the config builds and the
    weights fit is :func:`build_network`'s check.
    """
    from .diffusion.denoiser import TARGETS
    from .diffusion.schedule import MAX_SHIFT, SCHEDULES, make_betas
    from .models import registry

    if not isinstance(meta, dict):
        raise _bad(path, "(the whole description)", f"must be an object, got {type(meta).__name__}")
    kind = meta.get("kind", "diffusion")
    if kind not in KINDS:
        raise _bad(path, "kind", f"must be one of {', '.join(KINDS)}, got {repr(kind)[:40]}")
    net = _obj(meta, "network", path)
    name = _text(net, "name", path, "network.")
    family = registry.kind_of(name)
    if family is None:
        raise _bad(path, "network.name", f"names no network this difforge knows ({name[:40]!r}; it has {', '.join(registry.available(KINDS[kind]))})")
    if family != KINDS[kind]:
        raise _bad(path, "network.name", f"is {name!r}, which a {kind} model file cannot use (it is registered as {family})")
    config = _obj(net, "config", path, "network.")
    data = _obj(meta, "data", path)
    _int(data, "image_size", path, "data.", 1, MAX_IMAGE_SIZE)
    channels = _int(data, "channels", path, "data.", 1, 4)
    names = data.get("class_names") if data.get("class_names") is not None else []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise _bad(path, "data.class_names", f"must be a list of distinct non-empty texts, got {repr(names)[:60]}")
    if kind == "classifier" and not names:
        raise _bad(path, "data.class_names", "is empty; a classifier file names its classes")
    if kind in ("diffusion", "classifier"):
        d = _obj(meta, "diffusion", path)
        schedule = _text(d, "noise_schedule", path, "diffusion.", SCHEDULES)
        steps = _int(d, "diffusion_steps", path, "diffusion.", 1, MAX_DIFFUSION_STEPS)
        shift = d.get("noise_shift", 1.0)
        if not isinstance(shift, (int, float)) or isinstance(shift, bool) or not 0.0 < shift <= MAX_SHIFT:
            raise _bad(path, "diffusion.noise_shift", f"must be a number in (0, {MAX_SHIFT:g}], got {repr(shift)[:40]}")
        try:
            make_betas(schedule, steps, float(shift))
        except ValueError as e:
            raise _bad(path, "diffusion.diffusion_steps", f"does not fit the schedule ({e})") from None
    if kind == "diffusion":
        _text(d, "target", path, "diffusion.", TARGETS)
        if not isinstance(d.get("learn_sigma", False), bool):
            raise _bad(path, "diffusion.learn_sigma", f"must be true or false, got {d['learn_sigma']!r}")
        n = config.get("num_classes")
        if n is not None and n != len(names):
            raise _bad(path, "data.class_names", f"names {len(names)} classes but network.config.num_classes is {n!r}")
    want_in = channels
    if meta.get("latent"):
        want_in = _check_latent(meta["latent"], path)
    if want_in is not None and (meta.get("inputs") or {}).get("mask_conditioning"):
        want_in = 2 * want_in + 1  # x_t, the masked clean image and the mask (train/tasks/inpaint.py)
    if want_in is not None and (meta.get("inputs") or {}).get("low_res") and kind == "diffusion":
        want_in = 2 * want_in  # x_t and the up-sampled low-res image (train/tasks/superres.py)
        res = meta["inputs"]["low_res"].get("residual") if isinstance(meta["inputs"]["low_res"], dict) else None
        k = res.get("scale") if isinstance(res, dict) else res
        if res is not None and (not isinstance(k, (int, float)) or isinstance(k, bool) or not 1.0 <= k <= 64.0):
            raise _bad(path, "inputs.low_res.residual.scale", f"must be a number in [1, 64] (diffusion/superres.py residual_scale), got {repr(k)[:40]}")
    if meta.get("cascade") is not None:
        _check_cascade(meta["cascade"], path, int(data["image_size"]))
    if not isinstance(data.get("joint_mask", False), bool):
        raise _bad(path, "data.joint_mask", f"must be true or false, got {data['joint_mask']!r}")
    if data.get("joint_mask"):
        if meta.get("latent") or (meta.get("inputs") or {}).get("mask_conditioning"):
            raise _bad(path, "data.joint_mask", "applies to pixel-space models without mask conditioning")
        want_in = channels + 1  # the image and its generated mask (train/tasks/joint.py)
    if kind != "vae" and want_in is not None and "in_channels" in config and config["in_channels"] != want_in:
        raise _bad(path, "network.config.in_channels", f"is {config['in_channels']!r} but the model's inputs have {want_in} channels")
    return meta


def _check_cascade(link: Any, path, image_size: int) -> None:
    """A cascade base's link to its upsampler (:mod:`difforge.train.cascade`): where it is, its factor and output size."""
    if not isinstance(link, dict):
        raise _bad(path, "cascade", f"must be an object, got {type(link).__name__}")
    for key in ("upsampler_relpath", "upsampler_path"):
        _text(link, key, path, "cascade.")
    scale = _int(link, "scale", path, "cascade.", 2, 16)
    if _int(link, "image_size", path, "cascade.", 1, MAX_IMAGE_SIZE) != scale * image_size:
        raise _bad(path, "cascade.image_size", f"must be scale x data.image_size = {scale * image_size}, got {link['image_size']!r}")


def _check_latent(link: Any, path) -> Optional[int]:
    """The latent link's fields (see :mod:`difforge.codec`); returns the latent channels."""
    if not isinstance(link, dict):
        raise _bad(path, "latent", f"must be an object, got {type(link).__name__}")
    _text(link, "vae_path", path, "latent.")
    for key in ("vae_relpath", "vae_sha256"):
        if link.get(key) is not None and not isinstance(link[key], str):
            raise _bad(path, f"latent.{key}", f"must be text, got {link[key]!r}")
    scale = link.get("scale_factor")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise _bad(path, "latent.scale_factor", f"must be a finite number > 0, got {scale!r}")
    return _int(link, "latent_channels", path, "latent.", 1, 1024) if "latent_channels" in link else None


__all__ = [
    "FORMAT_VERSION", "MODEL_FORMAT", "STATE_FORMAT", "build_network", "check_finite", "check_fit", "check_meta",
    "file_sha256", "load_model_file", "load_tensors", "load_weights_into", "nonfinite_tensors", "open_checked",
    "read_metadata", "save_model_file", "save_tensors", "stamp_model_meta",
]

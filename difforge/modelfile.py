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
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .atomic import atomic_write
from .errors import CheckpointError

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
        return json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} has corrupt difforge metadata") from None


def load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a damaged file is one CheckpointError."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} could not be read ({e}); the file may be truncated") from None


def stamp_model_meta(meta: Dict[str, Any]) -> Dict[str, Any]:
    """``meta`` stamped with the model-file format and schema version."""
    return {"format": MODEL_FORMAT, "version": FORMAT_VERSION, **meta}


def save_model_file(path, state_dict: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    return save_tensors(path, state_dict, stamp_model_meta(meta))


def load_model_file(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Weights and metadata of a model file; a training-state file is accepted too (its EMA weights)."""
    meta = read_metadata(path)
    fmt = meta.get("format")
    if fmt not in (MODEL_FORMAT, STATE_FORMAT):
        raise CheckpointError(f"{path} has format {fmt!r}, not a difforge model file")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer difforge (format version {meta['version']}); upgrade difforge")
    tensors = load_tensors(Path(path))
    if fmt == STATE_FORMAT:
        tensors = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
        meta = meta["model"]
    return tensors, meta


def load_weights_into(net: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source) -> None:
    """Load ``state_dict`` strictly, turning mismatches into one message that names the layers."""
    own = net.state_dict()
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
    net.load_state_dict(state_dict)


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes (how a model file identifies the VAE it links)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = [
    "FORMAT_VERSION", "MODEL_FORMAT", "STATE_FORMAT", "file_sha256", "load_model_file", "load_tensors",
    "load_weights_into", "open_checked", "read_metadata", "save_model_file", "save_tensors", "stamp_model_meta",
]

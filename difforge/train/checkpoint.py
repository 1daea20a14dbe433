"""Safe, atomic, self-describing files: model files and resumable training state.

- A **model file** is a ``.safetensors`` file whose metadata key ``difforge`` holds JSON with
  the network name + config, the diffusion settings and the data description (image size,
  channels, class names). ``difforge sample model.safetensors`` needs nothing else.
- The **training state** is another ``.safetensors`` file: raw and EMA weights, optimizer
  tensors, and the optimizer's non-tensor state plus the loop counters as JSON metadata. Nothing
  is ever unpickled, so opening a file a stranger sent cannot run code.

Every write goes through :func:`difforge.atomic.atomic_write`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..atomic import atomic_write
from ..errors import CheckpointError

MODEL_FORMAT = "difforge-model"
STATE_FORMAT = "difforge-train-state"
FORMAT_VERSION = 1


def _cpu(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def _save(path, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    with atomic_write(path) as tmp:
        save_file(_cpu(tensors), str(tmp), metadata={"difforge": json.dumps(meta)})
    return Path(path)


def _open_checked(path) -> Path:
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
    """The ``difforge`` JSON metadata of a model or state file."""
    path = _open_checked(path)
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


def _load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} could not be read ({e}); the file may be truncated") from None


# -- model files ------------------------------------------------------------------------------
def save_model_file(path, state_dict: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    meta = {"format": MODEL_FORMAT, "version": FORMAT_VERSION, **meta}
    return _save(path, state_dict, meta)


def load_model_file(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Weights and metadata of a model file; a training-state file is accepted too (its EMA weights)."""
    meta = read_metadata(path)
    fmt = meta.get("format")
    if fmt not in (MODEL_FORMAT, STATE_FORMAT):
        raise CheckpointError(f"{path} has format {fmt!r}, not a difforge model file")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer difforge (format version {meta['version']}); upgrade difforge")
    tensors = _load_tensors(Path(path))
    if fmt == STATE_FORMAT:
        tensors = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
        meta = meta["model"]
    return tensors, meta


# -- training state ----------------------------------------------------------------------------
def _flatten_optimizer(opt_sd: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    tensors, plain = {}, {}
    for idx, state in opt_sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{idx}/{name}"] = value
            else:
                plain.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": opt_sd["param_groups"], "plain_state": plain}


def _unflatten_optimizer(tensors: Dict[str, torch.Tensor], info: Dict[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split("/", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in info.get("plain_state", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": info["param_groups"]}


def save_training_state(
    path,
    *,
    model: Dict[str, torch.Tensor],
    ema: Dict[str, torch.Tensor],
    optimizer: Dict[str, Any],
    extra_tensors: Dict[str, torch.Tensor],
    model_meta: Dict[str, Any],
    loop: Dict[str, Any],
) -> Path:
    """Everything needed to continue a run exactly, in one safetensors file."""
    opt_tensors, opt_info = _flatten_optimizer(optimizer)
    tensors = {f"model/{k}": v for k, v in model.items()}
    tensors.update({f"ema/{k}": v for k, v in ema.items()})
    tensors.update(opt_tensors)
    tensors.update({f"extra/{k}": v for k, v in extra_tensors.items()})
    meta = {
        "format": STATE_FORMAT,
        "version": FORMAT_VERSION,
        "model": {"format": MODEL_FORMAT, "version": FORMAT_VERSION, **model_meta},
        "optimizer": opt_info,
        "loop": loop,
    }
    return _save(path, tensors, meta)


def load_training_state(path) -> Dict[str, Any]:
    path = _open_checked(path)
    meta = read_metadata(path)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a difforge training-state file (it is {meta.get('format')!r})")
    tensors = _load_tensors(path)
    groups: Dict[str, Dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "extra": {}}
    for key, value in tensors.items():
        head, rest = key.split("/", 1)
        if head == "optim":
            groups["optim"][key] = value
        else:
            groups[head][rest] = value
    return {
        "model": groups["model"],
        "ema": groups["ema"],
        "optimizer": _unflatten_optimizer(groups["optim"], meta["optimizer"]),
        "extra": groups["extra"],
        "model_meta": meta["model"],
        "loop": meta["loop"],
    }


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

"""Resumable training state: one ``.safetensors`` file next to the model files of a run.

It holds the raw and EMA weights, the optimizer's tensors, and as JSON metadata the optimizer's
non-tensor state, the loop counters and the model file's metadata (``model``), so a state file
also reads as a model file (its EMA weights; see :func:`difforge.modelfile.load_model_file`).
Nothing is ever unpickled. Model files themselves are :mod:`difforge.modelfile`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from ..errors import CheckpointError
from ..modelfile import FORMAT_VERSION, STATE_FORMAT, load_tensors, open_checked, read_metadata, save_tensors, stamp_model_meta


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
        "model": stamp_model_meta(model_meta),
        "optimizer": opt_info,
        "loop": loop,
    }
    return save_tensors(path, tensors, meta)


def load_training_state(path) -> Dict[str, Any]:
    path = open_checked(path)
    meta = read_metadata(path)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a difforge training-state file (it is {meta.get('format')!r})")
    tensors = load_tensors(path)
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


__all__ = ["load_training_state", "save_training_state"]

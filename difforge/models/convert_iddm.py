"""Import an IDDM checkpoint (``ckpt_last.pt`` of chairc/Integrated-Design-Diffusion-Model).

IDDM saves one ``torch.save`` dict per checkpoint: ``model`` and ``ema_model`` (state dicts),
``optimizer``, ``start_epoch`` and the settings ``num_classes``, ``classes_name``, ``conditional``,
``image_size``, ``sample``, ``network``, ``act``, ``mode``. It is read with
``torch.load(weights_only=True)`` only (plain containers, numbers, strings and tensors; anything
pickled is refused). The EMA weights are taken when present (IDDM samples with them), else
``model``. IDDM's default network ``unet`` becomes difforge's ``iddm-unet`` (:mod:`.iddm_unet`,
IDDM's parameter names): every key must be consumed and every shape must match, and the label
table gains the null row of zeros that reproduces IDDM's ``y=None`` branch exactly (IDDM trains
it with 10% label dropout, so classifier-free guidance works). Diffusion: IDDM's DDPM defaults,
1000 linear steps predicting the noise, unless given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..errors import CheckpointError, ConfigError
from .convert import REFUSED, Converted, _expected_shapes, _match, _require, unwrap_state_dict
from .iddm_unet import IDDMUNet

FAMILY = "iddm"
NETWORKS = {"unet": "iddm-unet"}  # IDDM network name -> difforge network


def load_iddm_checkpoint(path) -> Dict[str, Any]:
    """The checkpoint dict, loaded without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of a foreign file is the file's fault
        raise CheckpointError(f"{path}: {REFUSED} ({str(e).strip().splitlines()[0][:200]})") from None
    if not isinstance(obj, Mapping) or not any(isinstance(obj.get(k), Mapping) for k in ("ema_model", "model")):
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path} is not an IDDM checkpoint: it has no 'model' / 'ema_model' state dict (found {keys})")
    return dict(obj)


def _image_size(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(set(int(v) for v in value)) != 1:
            raise ConfigError(f"IDDM image_size {list(value)} is not square; difforge networks take square images")
        value = value[0]
    return int(value)


def convert_iddm(ckpt: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None) -> Converted:
    """IDDM checkpoint dict -> ``Converted`` (``iddm-unet`` weights and config)."""
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    network = str(ckpt.get("network") or "unet")
    if network not in NETWORKS:
        raise CheckpointError(f"IDDM network {network!r} cannot be imported yet (supported: {', '.join(NETWORKS)})")
    ema = ckpt.get("ema_model")
    sd = unwrap_state_dict(ema if isinstance(ema, Mapping) and ema else ckpt["model"], f"IDDM {'ema_model' if ema else 'model'}")
    first = _require(sd, "inc.double_conv.0.weight", FAMILY)
    size = _image_size(ckpt.get("image_size"))
    if over.get("image_size") and size and int(over["image_size"]) != size:
        raise ConfigError(f"--image-size {over['image_size']} contradicts the checkpoint, trained at {size}")
    cfg: Dict[str, Any] = dict(
        image_size=int(over.get("image_size") or size or 64), in_channels=int(first.shape[1]), base_channels=int(first.shape[0]),
        time_channel=int(_require(sd, "down1.emb_layer.1.weight", FAMILY).shape[1]), act=str(ckpt.get("act") or "silu"),
    )
    out = int(_require(sd, "outc.weight", FAMILY).shape[0])
    if out not in (cfg["in_channels"], 2 * cfg["in_channels"]):
        raise CheckpointError(f"IDDM outc has {out} channels for {cfg['in_channels']} input channels; not a network difforge knows")
    cfg["learn_sigma"] = out == 2 * cfg["in_channels"]
    table = sd.get("label_emb.weight")
    cfg["num_classes"] = int(table.shape[0]) if table is not None else 0
    stated = ckpt.get("num_classes")
    if table is not None and ckpt.get("conditional", True) and stated is not None and int(stated) != cfg["num_classes"]:
        raise CheckpointError(f"IDDM checkpoint says num_classes={stated} but its label table has {cfg['num_classes']} rows")
    if table is not None:
        sd["label_emb.weight"] = torch.cat([table, table.new_zeros(1, table.shape[1])])
    expected, full = _expected_shapes(IDDMUNet, cfg)
    _match(sd, expected, FAMILY)
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    return Converted(state, full, null_class_trained=True)


def iddm_meta(converted: Converted, ckpt: Mapping[str, Any], overrides: Mapping[str, Any], source_name: str) -> Dict[str, Any]:
    """Model-file metadata of a converted IDDM checkpoint (class names from ``classes_name``)."""
    cfg = converted.config
    names = overrides.get("class_names") or ckpt.get("classes_name") or [str(i) for i in range(cfg["num_classes"])]
    names = [str(n) for n in names] if cfg["num_classes"] else []
    if len(names) != cfg["num_classes"]:
        raise ConfigError(f"{len(names)} class names for an IDDM model with {cfg['num_classes']} classes")
    return {
        "network": {"name": NETWORKS[str(ckpt.get("network") or "unet")], "config": cfg},
        "diffusion": {"diffusion_steps": int(overrides.get("diffusion_steps") or 1000),
                      "noise_schedule": overrides.get("noise_schedule") or "linear", "target": "eps", "learn_sigma": cfg["learn_sigma"]},
        "data": {"image_size": cfg["image_size"], "channels": cfg["in_channels"], "class_names": names},
        "converted": {"from": FAMILY, "source": source_name, "null_class_trained": True,
                      "epoch": ckpt.get("start_epoch"), "sampler": ckpt.get("sample")},
        "weights": "converted",
    }


def convert_iddm_checkpoint(src, overrides: Optional[Mapping[str, Any]] = None) -> Tuple[Converted, Dict[str, Any]]:
    """``(converted, metadata)`` of the IDDM checkpoint file ``src``."""
    ckpt = load_iddm_checkpoint(src)
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    converted = convert_iddm(ckpt, over)
    return converted, iddm_meta(converted, ckpt, over, Path(src).name)


__all__ = ["convert_iddm", "convert_iddm_checkpoint", "iddm_meta", "load_iddm_checkpoint"]

"""What ``difforge info`` (and ``Pipeline.describe``) shows of a loaded diffusion model: its file, network,
size, classes, schedule, the guidance a request without ``--cfg`` gets, whether its weights are finite, and
the files it links (a latent model's VAE, a cascade base's upsampler)."""

from __future__ import annotations

from typing import Any, Dict

import torch

from ..models.info import nonfinite_weights
from .config import interval_json


def describe(pipe) -> Dict[str, Any]:
    """The description of :class:`~difforge.pipeline.Pipeline` ``pipe`` as a JSON-ready dict."""
    meta = pipe.meta
    return {
        "file": pipe.source,
        "network": meta["network"]["name"],
        "parameters": sum(p.numel() for p in pipe.net.parameters()),
        "image_size": pipe.image_size,
        "channels": pipe.channels,
        "classes": pipe.class_names,
        "diffusion": meta["diffusion"],
        "default_cfg": pipe.default_cfg,  # the guidance scale a request without --cfg gets
        "default_cfg_interval": interval_json(pipe.default_cfg_interval),  # and its interval ([lo, null]: no upper end)
        "network_config": meta["network"]["config"],
        "trained": meta.get("train", {}),
        "weights": meta.get("weights", "?"),
        "nonfinite_weights": nonfinite_weights(pipe.net) if isinstance(pipe.net, torch.nn.Module) else "not checked",
        **({"latent": dict(meta["latent"], vae_file=str(pipe.codec.path))} if pipe.codec is not None else {}),
        **({"cascade": meta["cascade"]} if meta.get("cascade") else {}),  # its samples come out at cascade.image_size
    }


__all__ = ["describe"]

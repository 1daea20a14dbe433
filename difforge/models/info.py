"""Size and cost of a network: parameters, forward GFLOPs per image, a one-glance summary;
the descriptions ``difforge info`` prints of a registered network and of a VAE."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in net.parameters())


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """2 * (q k^T) + 2 * (attn v) multiply-adds, the count torch uses for its GPU SDPA kernels."""
    b, h, sq, d = query_shape
    sk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * sq * sk * (d + dv)


def _custom_flops() -> dict:
    # FlopCounterMode knows the CUDA attention kernels, not the CPU flash kernel SDPA uses here.
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_flops} if op is not None else {}


def dummy_inputs(net: nn.Module, batch: int = 1, image_size: Optional[int] = None):
    """(x, t, y) for one forward of ``net`` at its image size, on its device and dtype."""
    p = next(net.parameters())
    size = image_size or net.image_size
    x = torch.zeros(batch, net.in_channels, size, size, device=p.device, dtype=p.dtype)
    t = torch.full((batch,), 500.0, device=p.device)
    y = torch.zeros(batch, dtype=torch.long, device=p.device) if getattr(net, "num_classes", 0) else None
    return x, t, y


@torch.no_grad()
def forward_gflops(net: nn.Module, batch: int = 1, image_size: Optional[int] = None) -> float:
    """Forward GFLOPs per image (a multiply-add counts 2), counted by ``FlopCounterMode``.

    Counts matmuls, convolutions and attention, not elementwise ops or norms; a training step
    costs about 3x this.
    """
    x, t, y = dummy_inputs(net, batch, image_size)
    with FlopCounterMode(display=False, custom_mapping=_custom_flops()) as counter:
        net(x, t, y)
    return counter.get_total_flops() / batch / 1e9


def describe(net: nn.Module) -> str:
    """A short table: architecture, parameters, GFLOPs, image size, channels, classes."""
    classes = getattr(net, "num_classes", 0)
    rows = [
        ("network", getattr(net, "arch", type(net).__name__)),
        ("parameters", f"{count_parameters(net) / 1e6:.2f} M"),
        ("forward GFLOPs / image", f"{forward_gflops(net):.3f}"),
        ("image size", f"{net.image_size} x {net.image_size}"),
        ("channels in / out", f"{net.in_channels} / {net.out_channels}"
         + (" (learned sigma)" if getattr(net, "learn_sigma", False) else "")),
        ("classes", f"{classes} (+ null class)" if classes else "unconditional"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def describe_network(name: str, image_size: int = 64, channels: int = 3, num_classes: int = 0) -> Dict[str, Any]:
    """A registered network built at this size: parameters, forward GFLOPs per image, its config."""
    from . import registry

    registry.check_image_size(name, {}, image_size)
    net = registry.build(name, image_size=image_size, in_channels=channels, num_classes=num_classes)
    return {
        "network": name,
        "image_size": image_size,
        "channels": channels,
        "parameters": count_parameters(net),
        "forward_gflops_per_image": round(forward_gflops(net), 3),
        "config": net.config,
    }


def describe_vae(vae: nn.Module, meta: Dict[str, Any], path: str = "") -> Dict[str, Any]:
    """A VAE model file (its loaded network and metadata): size, latent shape, training and validation."""
    size = int(meta["data"]["image_size"])
    return {
        "file": str(path),
        "kind": "vae",
        "network": meta["network"]["name"],
        "parameters": count_parameters(vae),
        "image_size": size,
        "channels": meta["data"]["channels"],
        "latent_shape": "x".join(map(str, vae.latent_shape(size))),
        "network_config": meta["network"]["config"],
        "training": {k: v for k, v in meta.get("vae", {}).items() if k != "val"},
        "validation": meta.get("vae", {}).get("val", {}),
        "trained": meta.get("train", {}),
        "nonfinite_weights": nonfinite_weights(vae),
    }


def nonfinite_weights(net: nn.Module) -> str:
    """``"none"``, or how many of the network's tensors hold NaN/Inf and which (``difforge info``)."""
    sd = net.state_dict()
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not bad:
        return "none"
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"{len(bad)} of {len(sd)} tensors hold NaN/Inf ({', '.join(bad[:3])}{more}): this model cannot sample; use an earlier checkpoint"


__all__ = ["count_parameters", "describe", "describe_network", "describe_vae", "dummy_inputs", "forward_gflops", "nonfinite_weights"]

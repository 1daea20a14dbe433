"""Size and cost of a network: parameters, forward GFLOPs per image, a one-glance summary."""

from __future__ import annotations

from typing import Optional

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


__all__ = ["count_parameters", "describe", "dummy_inputs", "forward_gflops"]

"""Helpers shared by samplers: per-sample noise and schedule lookups."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Generator = Optional[Union[torch.Generator, Sequence[torch.Generator]]]


def make_generators(seeds: Sequence[int], device: torch.device) -> list:
    """One generator per image, seeded with ``seeds[i]``: image i draws all of its noise from it,
    so it depends on its seed only, not on the batch size or its position in the batch."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) & 0xFFFF_FFFF_FFFF_FFFF)
        gens.append(g)
    return gens


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``.

    With a list of generators, sample i draws from generator i only, so the noise an image sees
    does not depend on the batch size or its position in the batch.
    """
    if generator is None:
        return torch.randn_like(x)
    if isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=g.device) for g in generator]).to(x.device)


def batch_t(t: float, x: torch.Tensor) -> torch.Tensor:
    """The scalar timestep ``t`` as a (B,) tensor on x's device.

    Long for integer steps; float32 for the fractional steps of log-SNR / Karras spacings.
    """
    t = float(t)
    if t.is_integer():
        return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
    return torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)

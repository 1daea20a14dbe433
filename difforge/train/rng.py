"""Counter-based randomness of a training run: every draw is a function of (seed, counter).

A step's generator is seeded from (seed, step), an epoch's data order from (seed, epoch), the
initial weights from the seed alone. A resumed run therefore needs only the step counter to
draw exactly what the uninterrupted run drew.

Under DDP every rank draws for the *global* batch and keeps its own slice (:class:`StepRNG`), so
the draws an image gets do not depend on how many processes share the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

# the third counter of mix_seed: which stream of a step (or epoch) a seed is for
INIT, EPOCH_ORDER, STEP_DRAWS, STEP_GLOBAL = 0, 1, 2, 3


def mix_seed(*ints: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), for counter-based generators."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h ^= (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


@dataclass
class StepRNG:
    """The random draws of one optimizer step: one CPU generator, used over the global batch.

    ``randn`` / ``rand`` / ``randint`` draw ``(global_batch, *shape)`` values and return this
    rank's rows ``[mine]``, so a sample's draws depend on its place in the global batch only.
    Code that needs the generator itself (a timestep sampler, label dropout) uses
    ``generator`` with ``global_batch`` and keeps ``local(...)`` of the result.
    """

    generator: torch.Generator
    global_batch: int
    mine: slice

    @classmethod
    def for_step(cls, seed: int, step: int, global_batch: int, mine: Optional[slice] = None) -> "StepRNG":
        g = torch.Generator().manual_seed(mix_seed(seed, step, STEP_DRAWS))
        return cls(g, global_batch, slice(0, global_batch) if mine is None else mine)

    def local(self, values: torch.Tensor, device=None) -> torch.Tensor:
        """This rank's rows of a global-batch tensor (moved to ``device`` when given)."""
        out = values[self.mine]
        return out if device is None else out.to(device)

    def randn(self, shape: Sequence[int] = (), device=None) -> torch.Tensor:
        return self.local(torch.randn((self.global_batch, *shape), generator=self.generator), device)

    def rand(self, shape: Sequence[int] = (), device=None) -> torch.Tensor:
        return self.local(torch.rand((self.global_batch, *shape), generator=self.generator), device)

    def randint(self, low: int, high: int, shape: Sequence[int] = (), device=None) -> torch.Tensor:
        return self.local(torch.randint(low, high, (self.global_batch, *shape), generator=self.generator), device)


def seed_global(seed: int, step: int) -> None:
    """Seed torch's global RNG for ``step``: dropout and any other draw outside :class:`StepRNG`."""
    torch.manual_seed(mix_seed(seed, step, STEP_GLOBAL))


__all__ = ["StepRNG", "mix_seed", "seed_global", "INIT", "EPOCH_ORDER", "STEP_DRAWS", "STEP_GLOBAL"]

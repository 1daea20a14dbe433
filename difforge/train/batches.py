"""Which images a micro-batch holds (:class:`BatchPlan`) and what a task receives (:class:`Batch`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .rng import EPOCH_ORDER, StepRNG, mix_seed


@dataclass
class Batch:
    """One micro-batch as a task sees it.

    ``x``: this rank's inputs (what :meth:`Task.inputs` made of the rows, on the device);
    ``labels``: the *global* micro-batch's class labels (CPU; None for unlabelled data), so
    random label dropout can be drawn over the global batch (keep ``rng.local(labels)``);
    ``index``: this rank's dataset rows.
    """

    x: torch.Tensor
    labels: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None


class BatchPlan:
    """Which images form micro-batch m: epoch e = m // per_epoch uses permutation(seed, e).

    With several processes the *global* micro-batch (``batch_size * world_size`` images) is cut
    from the permutation and every rank takes its slice, so the data order does not depend on
    how many processes share the work (the distributed sampler of this trainer).
    """

    def __init__(self, n: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.world_size, self.rank = world_size, rank
        self.global_batch = batch_size * world_size
        self.per_epoch = max(1, n // self.global_batch)
        self._perm_epoch, self._perm = -1, None

    def global_indices(self, m: int) -> torch.Tensor:
        epoch, k = divmod(m, self.per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, EPOCH_ORDER))
            perm = torch.randperm(self.n, generator=g)
            if self.n < self.global_batch:  # tiny sets: cycle through the permutation
                perm = perm.repeat(math.ceil(self.global_batch / self.n))
            self._perm_epoch, self._perm = epoch, perm
        return self._perm[k * self.global_batch : (k + 1) * self.global_batch]

    def local_slice(self) -> slice:
        return slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)

    def indices(self, m: int) -> torch.Tensor:
        return self.global_indices(m)[self.local_slice()]

    def batch(self, m: int, task, data, rng: StepRNG, device: torch.device, channels_last: bool = False) -> Batch:
        """Micro-batch ``m``: this rank's rows through ``task.inputs``, each mirrored with
        probability 1/2 (drawn from ``rng`` over the global batch, before the task's own draws)."""
        gidx = self.global_indices(m)
        idx = gidx[self.local_slice()]
        flip = rng.rand() < 0.5
        x = task.inputs(data, idx, flip, device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = data.labels[gidx] if data.labels is not None else None
        return Batch(x, labels, idx)


__all__ = ["Batch", "BatchPlan"]

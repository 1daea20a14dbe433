"""Exponential moving average of the weights, updated with one vectorised call per step.

Several EMA lengths can be tracked at once (``extra`` decays): the configured one stays *the* EMA
of the run (previews, ``ema.safetensors`` during training, the training state's ``ema``), the
others live beside it and are stored as extra tensors of the training state, so the best one can
be chosen after training on held-out images (:mod:`difforge.train.validation`). Every EMA is
updated by the same rule as a lone one, so each equals an independently tracked EMA bit for bit.
With warm-up every decay is capped at (1 + n) / (10 + n) after n updates, so decays above that
cap (0.999 and 0.9999 alike, for runs of a few thousand steps) are the same EMA until it passes.
"""

from __future__ import annotations

import copy
from typing import Dict, Iterable

import torch

EXTRA_PREFIX = "ema_extra/"


class EMA:
    """Keeps ``shadow`` = decay * shadow + (1 - decay) * weights.

    With ``warmup`` the decay ramps as min(decay, (1 + n) / (10 + n)) over the first updates,
    so early EMA weights are not dominated by the random initialisation.
    """

    def __init__(self, net: torch.nn.Module, decay: float = 0.999, warmup: bool = True, extra: Iterable[float] = ()):
        self.decay = decay
        self.warmup = warmup
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)
        self.updates = 0
        self.others: Dict[float, EMA] = {float(d): EMA(net, float(d), warmup) for d in sorted(set(extra)) if d != decay}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        d = self.current_decay()
        ema_p = [p for p in self.shadow.parameters()]
        net_p = [p.detach() for p in net.parameters()]
        torch._foreach_lerp_(ema_p, net_p, 1.0 - d)
        for b_ema, b in zip(self.shadow.buffers(), net.buffers()):
            b_ema.copy_(b)
        self.updates += 1
        for other in self.others.values():
            other.update(net)

    def all(self) -> Dict[float, torch.nn.Module]:
        """Every tracked EMA network by its decay (the configured one included)."""
        return {self.decay: self.shadow, **{d: e.shadow for d, e in self.others.items()}}

    def extra_tensors(self) -> Dict[str, torch.Tensor]:
        """The other EMAs' weights as ``ema_extra/<decay>/<name>`` tensors of the training state."""
        return {f"{EXTRA_PREFIX}{d!r}/{k}": v for d, e in self.others.items() for k, v in e.state_dict().items()}

    def state_dict(self):
        return self.shadow.state_dict()

    def load_state_dict(self, sd, updates: int, extra: Dict[str, torch.Tensor] = None) -> None:
        """Restore the EMA (and the others from ``extra``: the state's extra tensors; an EMA missing
        there, e.g. from an older state file, starts from this one's weights)."""
        self.shadow.load_state_dict(sd)
        self.updates = updates
        for d, e in self.others.items():
            prefix = f"{EXTRA_PREFIX}{d!r}/"
            mine = {k[len(prefix):]: v for k, v in (extra or {}).items() if k.startswith(prefix)}
            e.load_state_dict(mine or sd, updates)

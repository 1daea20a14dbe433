"""Exponential moving average of the weights, updated with one vectorised call per step."""

from __future__ import annotations

import copy

import torch


class EMA:
    """Keeps ``shadow`` = decay * shadow + (1 - decay) * weights.

    With ``warmup`` the decay ramps as min(decay, (1 + n) / (10 + n)) over the first updates,
    so early EMA weights are not dominated by the random initialisation.
    """

    def __init__(self, net: torch.nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)
        self.updates = 0

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

    def state_dict(self):
        return self.shadow.state_dict()

    def load_state_dict(self, sd, updates: int) -> None:
        self.shadow.load_state_dict(sd)
        self.updates = updates

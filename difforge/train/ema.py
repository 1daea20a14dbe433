"""Exponential moving averages of the weights, updated with one vectorised call per step.

Several EMAs can be tracked at once: the configured one stays *the* EMA of the run (previews,
``ema.safetensors`` during training, the training state's ``ema``); the others live beside it,
are stored as extra tensors of the training state, and the best one is chosen after training on
held-out images (:mod:`difforge.train.validation`). Every EMA is updated by the same rule as a
lone one, so each equals an independently tracked EMA bit for bit.

Why power-function profiles beside fixed decays: with warm-up every fixed decay is capped at
(1 + n) / (10 + n) after n updates, so decays above that cap (0.995 and 0.999 alike, for runs of
under ~1,800 steps; 0.999 up to ~9,000) are the *same* EMA, and a choice between them is no
choice on a CPU budget. A power-function EMA (Karras et al., EDM2, 2024) averages the weights
with a profile proportional to tau^gamma over the steps tau done so far, so its width is a fixed
fraction ``sigma_rel`` of the run whatever its length: EMAs of different ``sigma_rel`` differ at
every step count, and the same candidates fit a 3-minute CPU run and a 100,000-step GPU run.
"""

from __future__ import annotations

import copy
from typing import Dict, Iterable

import torch

EXTRA_PREFIX = "ema_extra/"


def power_gamma(sigma_rel: float) -> float:
    """The exponent gamma whose profile tau^gamma on [0, t] has standard deviation ``sigma_rel * t``:
    sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)) (EDM2 eq. 3), solved by bisection on
    gamma >= 0, where the right side falls monotonically from 1/12 (sigma_rel 0.289)."""
    if not 0.0 < sigma_rel < 12 ** -0.5:
        raise ValueError(f"sigma_rel={sigma_rel} must be in (0, 0.288)")
    target = sigma_rel ** 2
    lo, hi = 0.0, 1.0
    while (hi + 1) / ((hi + 2) ** 2 * (hi + 3)) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (mid + 1) / ((mid + 2) ** 2 * (mid + 3)) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class EMA:
    """Keeps ``shadow`` = decay * shadow + (1 - decay) * weights.

    With ``warmup`` the decay ramps as min(decay, (1 + n) / (10 + n)) over the first updates,
    so early EMA weights are not dominated by the random initialisation. ``extra`` are more fixed
    decays, ``power`` power-function EMAs by ``sigma_rel`` (:class:`PowerEMA`), tracked beside it.
    """

    def __init__(self, net: torch.nn.Module, decay: float = 0.999, warmup: bool = True, extra: Iterable[float] = (),
                 power: Iterable[float] = ()):
        self.decay = decay
        self.warmup = warmup
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)
        self.updates = 0
        others = [EMA(net, float(d), warmup) for d in sorted(set(extra)) if d != decay]
        others += [PowerEMA(net, float(s)) for s in sorted(set(power))]
        self.others: Dict[str, EMA] = {e.label: e for e in others}

    @property
    def label(self) -> str:
        """The name of this EMA in logs, files (``ema_<label>.safetensors``) and model metadata."""
        return repr(self.decay)

    @property
    def state_key(self) -> str:
        return self.label

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

    def all(self) -> Dict[str, torch.nn.Module]:
        """Every tracked EMA network by its label (the configured one first)."""
        return {self.label: self.shadow, **{k: e.shadow for k, e in self.others.items()}}

    def extra_tensors(self) -> Dict[str, torch.Tensor]:
        """The other EMAs' weights as ``ema_extra/<key>/<name>`` tensors of the training state."""
        return {f"{EXTRA_PREFIX}{e.state_key}/{k}": v for e in self.others.values() for k, v in e.state_dict().items()}

    def state_dict(self):
        return self.shadow.state_dict()

    def load_state_dict(self, sd, updates: int, extra: Dict[str, torch.Tensor] = None) -> None:
        """Restore the EMA (and the others from ``extra``: the state's extra tensors; an EMA missing
        there, e.g. from an older state file, starts from this one's weights)."""
        self.shadow.load_state_dict(sd)
        self.updates = updates
        for e in self.others.values():
            prefix = f"{EXTRA_PREFIX}{e.state_key}/"
            mine = {k[len(prefix):]: v for k, v in (extra or {}).items() if k.startswith(prefix)}
            e.load_state_dict(mine or sd, updates)


class PowerEMA(EMA):
    """EDM2's power-function EMA: after t updates the shadow is (nearly) the average of the weights
    of steps 1..t weighted by tau^gamma, through the decay (1 - 1/t)^(gamma + 1) at update t (the
    first update copies the weights). ``sigma_rel`` is the profile's width as a fraction of t."""

    def __init__(self, net: torch.nn.Module, sigma_rel: float):
        self.sigma_rel = sigma_rel
        self.gamma = power_gamma(sigma_rel)
        super().__init__(net, decay=0.0, warmup=False)

    @property
    def label(self) -> str:
        return f"p{self.sigma_rel!r}"

    def current_decay(self) -> float:
        t = self.updates + 1  # the update being applied
        return (1.0 - 1.0 / t) ** (self.gamma + 1.0)

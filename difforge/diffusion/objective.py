"""The training objective: q_sample, targets, per-sample losses, label dropout, timestep samplers.

Losses are returned per sample (a dict of (B,) tensors, guided-diffusion's habit), so
importance weights, SNR weighting or extra terms multiply or add instead of forking the code.
The trainer only averages ``terms["loss"]`` and logs the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from .parametrization import check_target, training_target
from .schedule import Schedule, extract, q_sample

LOSSES = ("mse", "l1", "huber", "smooth_l1")


def elementwise_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Unreduced loss of ``kind``: mse, l1, huber (delta) or smooth_l1 (beta = delta)."""
    if kind == "mse":
        return (pred - target) ** 2
    if kind == "l1":
        return (pred - target).abs()
    if kind == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=delta)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="none", beta=delta)
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def drop_labels(y: torch.Tensor, p: float, num_classes: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each label by the null class ``num_classes`` with probability ``p`` (CFG training)."""
    if p <= 0:
        return y
    u = torch.rand(y.shape, generator=generator, device="cpu" if generator is None else generator.device).to(y.device)
    return torch.where(u < p, torch.full_like(y, num_classes), y)


@dataclass
class Objective:
    """L_simple: the network regresses ``target`` (eps / x0 / v) of noised data under ``loss``."""

    schedule: Schedule
    target: str = "eps"
    loss: str = "mse"
    learn_sigma: bool = False

    def __post_init__(self):
        check_target(self.target)
        elementwise_loss(self.loss, torch.zeros(1), torch.zeros(1))  # validates the name

    def __call__(self, net: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, y=None) -> Dict[str, torch.Tensor]:
        """Per-sample loss terms for a batch; ``terms['loss']`` is what the trainer minimises."""
        x_t = q_sample(self.schedule, x0, t, noise)
        out = net(x_t, t, y)
        c = x0.shape[1]
        if self.learn_sigma:
            if out.shape[1] != 2 * c:
                raise ValueError(f"learn_sigma needs a network with {2 * c} output channels, it has {out.shape[1]}")
            out = out[:, :c]
        ab = extract(self.schedule.alphas_cumprod, t, x0.ndim, x0.dtype)
        target = training_target(self.target, x0, noise, ab.sqrt(), (1.0 - ab).sqrt())
        per_sample = mean_flat(elementwise_loss(self.loss, out.float(), target))
        return {"loss": per_sample, self.loss: per_sample.detach()}


class UniformTimesteps:
    """t ~ U{0, ..., T-1} with unit importance weights."""

    def __init__(self, num_steps: int):
        self.num_steps = num_steps

    def sample(self, batch: int, generator: Optional[torch.Generator] = None, device="cpu"):
        t = torch.randint(0, self.num_steps, (batch,), generator=generator)
        return t.to(device), torch.ones(batch, device=device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Uniform sampling ignores the losses; loss-aware samplers record them."""

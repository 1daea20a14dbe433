"""The one place where eps, x0 and v predictions are converted into each other.

With a = sqrt(ab_t) and s = sqrt(1 - ab_t) (so a^2 + s^2 = 1) and x_t = a x0 + s eps:
    eps = (x_t - a x0) / s,   x0 = (x_t - s eps) / a,   v = a eps - s x0  (Salimans & Ho 2022),
    x0 = a x_t - s v,         eps = s x_t + a v.
"""

from __future__ import annotations

import torch

TARGETS = ("eps", "x0", "v")


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown prediction target {target!r}; choose one of {', '.join(TARGETS)}")
    return target


def training_target(target: str, x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """What the network is trained to output for ``target``."""
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    if target == "v":
        return a * eps - s * x0
    raise ValueError(check_target(target))


def to_eps_x0(target: str, pred: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor):
    """Turn a network output of kind ``target`` into the pair (eps, x0)."""
    if target == "eps":
        return pred, (x_t - s * pred) / a
    if target == "x0":
        return (x_t - a * pred) / s, pred
    if target == "v":
        return s * x_t + a * pred, a * x_t - s * pred
    raise ValueError(check_target(target))


def eps_from_x0(x0: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """eps consistent with x_t and a (possibly clipped) x0."""
    return (x_t - a * x0) / s

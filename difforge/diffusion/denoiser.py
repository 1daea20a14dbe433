"""Denoiser: a network plus its parametrization and guidance, seen by samplers as (eps, x0, var).

Samplers talk only to a denoiser, never to a network, so a sampler is independent of the
prediction target (eps / x0 / v), of classifier-free guidance and of x0 clipping. Guidance of
other kinds (a classifier, a second unconditional model) wraps a denoiser and returns the same
:class:`Prediction`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .parametrization import check_target, eps_from_x0, to_eps_x0
from .schedule import Schedule


@dataclass
class Prediction:
    """What a denoiser tells a sampler about x_0 given x_t.

    ``var_frac`` is the learned-variance interpolation weight v in [0, 1] of improved DDPM
    (log var = v log beta_t + (1 - v) log beta~_t), or None when the network predicts no variance.

    ``mean_grad`` is an optional gradient g = grad_x log f(x_t) of an extra factor f of the density
    to sample (classifier guidance: f = p(y | x_t)^s). An ancestral (DDPM) sampler adds
    Sigma_t g to its reverse-step mean, Sigma_t being the variance of the step it takes
    (Sohl-Dickstein et al. 2015; Dhariwal & Nichol 2021, Alg. 1); ``eps`` / ``x0`` then carry no
    such guidance. A denoiser sets it only for samplers that read it (ddpm): the others get the
    guidance folded into ``eps`` instead (:mod:`difforge.diffusion.guidance`).
    """

    eps: torch.Tensor
    x0: torch.Tensor
    var_frac: Optional[torch.Tensor] = None
    mean_grad: Optional[torch.Tensor] = None


def alpha_bar_at(schedule: Schedule, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar at (possibly fractional) timesteps, float64.

    Integer t reads the table; fractional t (Karras-spaced samplers) interpolates log(sigma)
    linearly between the neighbours, which is smooth and exact at the integers.
    """
    ab = schedule.alphas_cumprod.to(t.device)
    t = t.to(torch.float64).clamp(0, schedule.num_steps - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=schedule.num_steps - 1)
    w = t - lo.to(torch.float64)
    log_sigma = lambda a: 0.5 * torch.log((1.0 - a) / a)  # noqa: E731
    ls = (1.0 - w) * log_sigma(ab[lo]) + w * log_sigma(ab[hi])
    return torch.sigmoid(-2.0 * ls)  # ab = 1 / (1 + sigma^2)


def dynamic_threshold(x0: torch.Tensor, percentile: float) -> torch.Tensor:
    """Imagen's dynamic thresholding: clip to the per-sample ``percentile`` of |x0| (at least 1), rescale."""
    flat = x0.detach().abs().flatten(1).float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-s, s) / s


class Denoiser:
    """Wrap ``net(x, t, y) -> out`` into ``denoiser(x_t, t, y) -> Prediction``.

    Args:
        net: the network; its output has C channels, or 2C when ``learn_sigma``.
        schedule: the training schedule the network was trained with.
        target: what the network predicts: ``eps``, ``x0`` or ``v``.
        learn_sigma: the network's second C channels carry the variance interpolation.
        num_classes: number of classes of a conditional network (index ``num_classes`` = null).
        cfg_scale: classifier-free guidance s: out = uncond + s (cond - uncond); 1 = plain
            conditional, 0 = unconditional. Cond and uncond run as one batched forward.
        cfg_rescale: guidance rescale phi of Lin et al. 2024 (0 = off).
        clip_x0: clamp predicted x0 to [-1, 1] (then eps is made consistent with it).
        threshold: dynamic-thresholding percentile (e.g. 0.995), applied instead of plain clipping.
        autocast: a context-manager factory used around the network call (mixed precision).
    """

    def __init__(
        self,
        net: Callable,
        schedule: Schedule,
        *,
        target: str = "eps",
        learn_sigma: bool = False,
        num_classes: int = 0,
        cfg_scale: float = 1.0,
        cfg_rescale: float = 0.0,
        clip_x0: bool = True,
        threshold: Optional[float] = None,
        autocast: Callable = contextlib.nullcontext,
    ):
        self.net = net
        self.schedule = schedule
        self.target = check_target(target)
        self.learn_sigma = learn_sigma
        self.num_classes = num_classes
        self.cfg_scale = float(cfg_scale)
        self.cfg_rescale = float(cfg_rescale)
        self.clip_x0 = clip_x0
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"dynamic threshold percentile must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.autocast = autocast

    def with_options(self, **changes) -> "Denoiser":
        """A copy with some options changed (e.g. a different cfg_scale for one request)."""
        new = object.__new__(Denoiser)
        new.__dict__.update(self.__dict__)
        for k, v in changes.items():
            if k not in new.__dict__:
                raise TypeError(f"unknown denoiser option {k!r}")
            setattr(new, k, v)
        return new

    # -- the network call ------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        with self.autocast():
            out = self.net(x, t, y)
        return out.float()

    def raw(self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None):
        """Network output split into (prediction of ``target``, var_frac or None), guidance applied."""
        guided = self.num_classes > 0 and y is not None and self.cfg_scale != 1.0
        if guided:
            null = torch.full_like(y, self.num_classes)
            out = self._forward(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]))
            cond, uncond = out.chunk(2)
        else:
            cond = self._forward(x_t, t, y if self.num_classes > 0 else None)
        c = x_t.shape[1]
        var_frac = None
        if self.learn_sigma:
            var_frac = (cond[:, c:].clamp(-1, 1) + 1.0) / 2.0
            cond = cond[:, :c]
            if guided:
                uncond = uncond[:, :c]
        if guided:
            return uncond + self.cfg_scale * (cond - uncond), var_frac, cond
        return cond, var_frac, None

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> Prediction:
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        ab = alpha_bar_at(self.schedule, t).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        a, s = ab.sqrt(), (1.0 - ab).sqrt()
        pred, var_frac, cond = self.raw(x_t, t, y)
        eps, x0 = to_eps_x0(self.target, pred, x_t, a, s)
        if cond is not None and self.cfg_rescale > 0:
            _, x0_cond = to_eps_x0(self.target, cond, x_t, a, s)
            dims = tuple(range(1, x0.ndim))
            ratio = x0_cond.std(dim=dims, keepdim=True) / x0.std(dim=dims, keepdim=True).clamp(min=1e-8)
            x0 = self.cfg_rescale * (x0 * ratio) + (1.0 - self.cfg_rescale) * x0
            eps = eps_from_x0(x0, x_t, a, s)
        if self.threshold is not None:
            x0 = dynamic_threshold(x0, self.threshold)
            eps = eps_from_x0(x0, x_t, a, s)
        elif self.clip_x0:
            clipped = x0.clamp(-1.0, 1.0)
            eps = eps_from_x0(clipped, x_t, a, s)
            x0 = clipped
        return Prediction(eps=eps, x0=x0, var_frac=var_frac)


__all__ = ["Denoiser", "Prediction", "alpha_bar_at", "dynamic_threshold"]

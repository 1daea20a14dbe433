"""Inpainting constraints: keep the known pixels, let the model fill the rest.

The constraint wraps the denoiser (DESIGN.md: never a sampler's body). :class:`KnownRegion`
replaces the known pixels of every x_t the network sees by a fresh forward-noised copy of the
known image at that step, x_t = sqrt(ab_t) x0_known + sqrt(1 - ab_t) z (Lugmayr et al. 2022,
eq. 8), and reports x0 = x0_known, eps = z there. Every sampler updates each pixel from x_t, x0 and
eps of that pixel alone, so the unknown pixels then follow exactly the sampler run on the
constrained x_t, and the known pixels of the state never matter (they are replaced at the next call).

Two methods over it:

- **blend** (:func:`blend`): any registered sampler with the wrapped denoiser: one pass, no
  resampling (the "replacement" method; fast, but the filled region only sees the known region
  through the network's one-shot prediction at each step, so it harmonises poorly).
- **repaint** (:func:`repaint`): RePaint's resampling (Lugmayr et al. 2022, Alg. 1 and sec. 4.2):
  DDPM posterior steps down; after every ``jump`` steps the state is diffused ``jump`` steps back up
  (x_hi = sqrt(ab_hi / ab_lo) x_lo + sqrt(1 - ab_hi / ab_lo) z) and denoised again, ``resample`` - 1
  times, so the known and generated regions are brought into agreement.

:func:`inpainting_sampler` packs either into a function with the sampler contract, so the
pipeline's one batch core runs it like any sampler.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, List, Optional

import torch

from .denoiser import Prediction
from .samplers.common import batch_t, randn_like
from .schedule import Schedule, alpha_bars, respaced_posterior, vp_coefs_at

METHODS = ("repaint", "blend")


class KnownRegion:
    """``denoiser`` constrained to ``known`` (x0, broadcasting over the batch) where ``keep`` is True.

    ``keep`` is a bool tensor broadcasting against x (e.g. (1, 1, H, W)); ``generator`` the
    sampler's (one or one per image), so the known region's noise is reproducible per image.
    """

    def __init__(self, denoiser: Callable, known: torch.Tensor, keep: torch.Tensor, schedule: Schedule, generator=None):
        self.denoiser = denoiser
        self.known = known
        self.keep = keep.to(torch.bool)
        self.schedule = schedule
        self.generator = generator

    def noised(self, x: torch.Tensor, t) -> tuple:
        """(x with the known pixels replaced by sqrt(ab_t) x0_known + sqrt(1 - ab_t) z, z)."""
        a, s = vp_coefs_at(self.schedule, t, x)
        z = randn_like(x, self.generator)
        known = self.known.to(x.dtype)
        return torch.where(self.keep, a * known + s * z, x), z

    def __call__(self, x_t: torch.Tensor, t, y: Optional[torch.Tensor] = None) -> Prediction:
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        x_c, z = self.noised(x_t, t)
        pred = self.denoiser(x_c, t, y)
        x0 = torch.where(self.keep, self.known.to(pred.x0.dtype), pred.x0)
        eps = torch.where(self.keep, z.to(pred.eps.dtype), pred.eps)
        return replace(pred, eps=eps, x0=x0)

    def paste(self, x0: torch.Tensor) -> torch.Tensor:
        """The final x0 with the known pixels exactly ``known``."""
        return torch.where(self.keep, self.known.to(x0.dtype), x0)


def blend(sampler: Callable, denoiser, x_T, schedule, timesteps, *, known, keep, y=None, generator=None, callback=None, **opts):
    """``sampler`` (any registered one) over the known-region-constrained denoiser; known pixels pasted at the end."""
    region = KnownRegion(denoiser, known, keep, schedule, generator)
    return region.paste(sampler(region, x_T, schedule, timesteps, y=y, generator=generator, callback=callback, **opts))


def jump_levels(n: int, resample: int, jump: int) -> List[int]:
    """RePaint's walk over noise levels n (the first timestep), ..., 1, 0 (= x0), with jumps.

    Level j is the j-th kept timestep from the clean end. Going down, at every level
    j = 1 + k * jump below n - jump the walk goes ``jump`` levels back up and down again,
    ``resample`` - 1 times (the schedule of the RePaint code, ``get_schedule_jump``).
    ``resample`` = 1 is the plain descent n, n-1, ..., 0.
    """
    if resample < 1 or jump < 1:
        raise ValueError(f"repaint: resample (--resample) and jump (--jump) must be >= 1, got {resample} and {jump}")
    left = {j: resample - 1 for j in range(0, n - jump, jump)}
    t, walk = n - 1, [n]
    while t >= 0:
        t -= 1
        walk.append(t + 1)
        if left.get(t, 0) > 0:
            left[t] -= 1
            for _ in range(jump):
                t += 1
                walk.append(t + 1)
    return walk


def repaint(denoiser, x_T, schedule, timesteps, *, known, keep, y=None, generator=None, callback=None,
            resample: int = 10, jump: int = 10, variance: Optional[str] = None):
    """RePaint over the kept ``timesteps`` (descending): x_T -> x0 with the known pixels kept.

    Down moves are DDPM posterior steps between kept timesteps (as the ``ddpm`` sampler takes them:
    ``variance`` fixed_small, fixed_large or learned; a ``mean_grad`` shifts the mean); the last one
    returns the predicted x0. Up moves diffuse by q(x_hi | x_lo). ``callback(k, x, x0)`` after every
    down move k = 0, 1, ... (there are ``len(timesteps) + (resample - 1) * jump * jumps`` of them).
    """
    if variance not in (None, "fixed_small", "fixed_large", "learned"):
        raise ValueError(f"repaint: unknown variance {variance!r}; choose fixed_small, fixed_large or learned")
    region = KnownRegion(denoiser, known, keep, schedule, generator)
    n = len(timesteps)
    ab = [1.0] + alpha_bars(schedule, timesteps)[::-1]  # ab[j] at level j; level 0 is x0
    level_t = [None] + list(timesteps)[::-1]
    walk = jump_levels(n, resample, jump)
    x, x0, k = x_T, x_T, 0
    for hi, lo in zip(walk, walk[1:]):
        if lo > hi:  # up: forward-diffuse the whole state
            r = ab[lo] / ab[hi]
            x = math.sqrt(r) * x + math.sqrt(1.0 - r) * randn_like(x, generator)
            continue
        pred = region(x, batch_t(level_t[hi], x), y)
        x0 = pred.x0
        if lo == 0:
            x = x0
        else:
            coef_x0, coef_xt, beta, post_var = respaced_posterior(ab[hi], ab[lo])
            mean = coef_x0 * x0 + coef_xt * x
            kind = variance or ("fixed_small" if pred.var_frac is None else "learned")
            if kind == "learned":
                if pred.var_frac is None:
                    raise ValueError("repaint: variance 'learned' needs a model trained with learn_sigma")
                v = pred.var_frac.to(x.dtype)
                std = torch.exp(0.5 * (v * math.log(beta) + (1.0 - v) * math.log(post_var)))
            else:
                std = math.sqrt(beta if kind == "fixed_large" else post_var)
            if pred.mean_grad is not None:
                mean = mean + std**2 * pred.mean_grad
            x = mean + std * randn_like(x, generator)
        if callback is not None:
            callback(k, x, x0)
        k += 1
    return region.paste(x)


def repaint_evaluations(n: int, resample: int, jump: int) -> int:
    """Network evaluations of :func:`repaint` over ``n`` timesteps (down moves of :func:`jump_levels`)."""
    walk = jump_levels(n, resample, jump)
    return sum(1 for hi, lo in zip(walk, walk[1:]) if lo < hi)


def inpainting_sampler(method: str, known: torch.Tensor, keep: torch.Tensor, sampler: Optional[Callable] = None,
                       resample: int = 10, jump: int = 10) -> Callable:
    """A function with the sampler contract that inpaints: ``repaint`` (with ``resample``, ``jump``)
    or ``blend`` (over ``sampler``, any registered one)."""
    if method not in METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; choose {' or '.join(METHODS)}")

    def run(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None, **opts):
        k, m = known.to(x_T.device), keep.to(x_T.device)
        if method == "repaint":
            return repaint(denoiser, x_T, schedule, timesteps, known=k, keep=m, y=y, generator=generator,
                           callback=callback, resample=resample, jump=jump, **opts)
        return blend(sampler, denoiser, x_T, schedule, timesteps, known=k, keep=m, y=y, generator=generator, callback=callback, **opts)

    return run


class MaskConditionedNet(torch.nn.Module):
    """A mask-conditioned network seen as a plain one: ``net(x_t, t, y)`` with the fill ``mask``
    (1 = fill) and the ``known`` image (x0 in [-1, 1]) fixed.

    The inner network takes 2C + 1 channels: x_t, the mask and the masked clean image
    ``known * (1 - mask)`` (the inpainting-model recipe of latent diffusion); it was built with
    in_channels 2C + 1 and so also outputs 2C + 1 (x2 with learned variance) channels, of which
    the first C (and, with ``learn_sigma``, the first C of the second half) are the prediction.
    ``mask`` and ``known`` have batch 1 or the batch of x (a CFG batch of 2B repeats them).
    """

    def __init__(self, net: torch.nn.Module, mask: torch.Tensor, known: torch.Tensor, learn_sigma: bool = False):
        super().__init__()
        self.net = net
        self.mask, self.known, self.learn_sigma = mask, known, learn_sigma

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None, **cond) -> torch.Tensor:
        out = self.net(mask_condition(x, self.mask, self.known), t, y, **cond)
        return _split_sigma(out, x.shape[1]) if self.learn_sigma else out[:, : x.shape[1]]


def mask_condition(x: torch.Tensor, mask: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The 2C + 1 input channels (x_t, mask, known * (1 - mask)), mask and known repeated to x's batch."""
    reps = x.shape[0] // mask.shape[0]
    m, k = mask.to(x.dtype).repeat(reps, 1, 1, 1), known.to(x.dtype).repeat(reps, 1, 1, 1)
    return torch.cat([x, m, k * (1 - m)], dim=1)


def _split_sigma(out: torch.Tensor, c: int) -> torch.Tensor:
    half = out.shape[1] // 2
    return torch.cat([out[:, :c], out[:, half : half + c]], dim=1)


__all__ = ["KnownRegion", "METHODS", "MaskConditionedNet", "mask_condition", "blend", "inpainting_sampler", "jump_levels", "repaint", "repaint_evaluations"]

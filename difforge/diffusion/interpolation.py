"""Interpolation between two diffusion endpoints: slerp of noises, lerp of x_t, partial timesteps.

Two ways to walk between images (both used by :meth:`difforge.pipeline.Pipeline.interpolate`):

- **between seeds**: x_T of two seeds are (near-orthogonal) Gaussian vectors whose norm is
  ~sqrt(d). A straight line between them passes through vectors of norm ~sqrt(d / 2) at the
  middle, which the sampler never saw, so samples go flat and grey. Spherical interpolation
  (Shoemake 1985) stays on the sphere: ``slerp`` keeps unit vectors unit.
- **between images** (Ho et al. 2020, sec. 4.3 / fig. 8): encode both images to step t with the
  same noise, x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, mix linearly, and run the reverse
  process from t only; :func:`timesteps_from` gives the sampler's timesteps t -> 0.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch

from .schedule import Schedule
from .timesteps import SPACINGS, sigma_spaced


def slerp(a: torch.Tensor, b: torch.Tensor, lam: float, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation between ``a`` and ``b`` (each seen as one flat vector).

        slerp(a, b, l) = sin((1 - l) theta) / sin(theta) a + sin(l theta) / sin(theta) b,
        theta = angle(a, b).

    l = 0 gives ``a``, l = 1 gives ``b`` exactly; unit vectors stay unit; ``slerp(a, b, l)`` equals
    ``slerp(b, a, 1 - l)``. When a and b are (anti-)parallel (sin theta < ``eps``) the angle is
    undefined and it falls back to the straight line.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    lam = float(lam)
    a64, b64 = a.double(), b.double()
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return lerp(a, b, lam)
    cos = ((a64 * b64).sum() / (na * nb)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    if sin < eps:
        return lerp(a, b, lam)
    out = (torch.sin((1.0 - lam) * theta) / sin) * a64 + (torch.sin(lam * theta) / sin) * b64
    return out.to(a.dtype)


def lerp(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """The straight line (1 - l) a + l b (how x_t of two images are mixed)."""
    lam = float(lam)
    return ((1.0 - lam) * a.double() + lam * b.double()).to(a.dtype)


def mix_lambdas(num: int) -> List[float]:
    """``num`` >= 2 mixing weights evenly spread over [0, 1], both ends included."""
    if num < 2:
        raise ValueError(f"an interpolation needs at least 2 frames (the two ends), got {num}")
    return [i / (num - 1) for i in range(num)]


def timesteps_from(schedule: Schedule, t: int, steps: Optional[int], spacing: str = "uniform", rho: float = 7.0) -> list:
    """The descending timesteps of a reverse process that starts at step ``t`` (not T - 1) and ends at 0.

    - ``uniform``: ``steps`` integers evenly spread over [0, t], both ends included (at most
      t + 1 of them; ``steps`` None = every step t, t-1, ..., 0).
    - ``logsnr`` / ``karras``: the same grids as :func:`~difforge.diffusion.timesteps.sampling_timesteps`
      with sigma_max = sigma(t) instead of sigma(T - 1) (fractional timesteps).
    """
    last = schedule.num_steps - 1
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= last:
        raise ValueError(f"t must be an integer timestep in [0, {last}] (the model has {schedule.num_steps} diffusion steps), got {t}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)} when starting from step t, got {spacing!r}")
    if steps is None:
        steps = t + 1
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if t == 0 or steps == 1:
        return [t]
    if spacing == "uniform":
        n = min(steps, t + 1)
        return [int(math.floor(t * (n - 1 - i) / (n - 1) + 0.5)) for i in range(n)]
    return sigma_spaced(schedule, t, steps, spacing, rho)


__all__ = ["lerp", "mix_lambdas", "slerp", "timesteps_from"]

"""Noise schedules: betas, cumulative alphas and everything derived from them.

A :class:`Schedule` is an immutable table over the T training timesteps. Samplers never need a
"respaced" copy of it: they receive the list of kept timesteps and read
``alphas_cumprod[timesteps]``, which is exactly what respacing in improved-diffusion preserves
(the model keeps seeing its original timestep indices).

All tables are float64: ``1 - alphas_cumprod`` near t=0 and ``log`` of tiny betas lose digits in
float32, and the tables are small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

SCHEDULES = ("linear", "cosine", "sqrt_linear", "sqrt")


def _betas_from_alpha_bar(alpha_bar, num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Discretise a continuous alpha_bar(s), s in [0, 1], into betas (Nichol & Dhariwal 2021, eq. 17)."""
    s = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    ab = alpha_bar(s)
    betas = 1.0 - ab[1:] / ab[:-1]
    return betas.clamp(max=max_beta)


def make_betas(name: str, num_steps: int = 1000) -> torch.Tensor:
    """Return the float64 betas of a named schedule.

    - ``linear``: Ho et al. 2020, 1e-4 .. 0.02 at T=1000, rescaled by 1000/T so any T has the
      same signal-to-noise curve (improved-diffusion's convention).
    - ``cosine``: Nichol & Dhariwal 2021, alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2).
    - ``sqrt_linear``: latent-diffusion's betas = linspace(sqrt(b0), sqrt(b1))^2.
    - ``sqrt``: Diffusion-LM, alpha_bar(s) = 1 - sqrt(s + 1e-4).
    """
    if num_steps < 1:
        raise ValueError(f"diffusion steps must be >= 1, got {num_steps}")
    scale = 1000.0 / num_steps
    if name in ("linear", "sqrt_linear") and scale * 0.02 >= 1.0:
        raise ValueError(f"the {name} schedule needs at least 21 diffusion steps (its last beta is 20/T); got {num_steps}, or use cosine")
    if name == "linear":
        return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)
    if name == "sqrt_linear":
        start, end = math.sqrt(scale * 1e-4), math.sqrt(scale * 0.02)
        return torch.linspace(start, end, num_steps, dtype=torch.float64) ** 2
    if name == "cosine":
        return _betas_from_alpha_bar(lambda s: torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2, num_steps)
    if name == "sqrt":
        return _betas_from_alpha_bar(lambda s: 1.0 - torch.sqrt(s + 1e-4), num_steps)
    raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


@dataclass(frozen=True, eq=False)
class Schedule:
    """The forward process q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I) over T discrete steps."""

    betas: torch.Tensor  # (T,) float64

    @classmethod
    def named(cls, name: str = "linear", num_steps: int = 1000) -> "Schedule":
        return cls(make_betas(name, num_steps))

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    @cached_property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        return torch.cat([self.betas.new_ones(1), self.alphas_cumprod[:-1]])

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """beta~_t = beta_t (1 - ab_{t-1}) / (1 - ab_t), the variance of q(x_{t-1} | x_t, x_0)."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_log_variance_clipped(self) -> torch.Tensor:
        """log beta~_t with the t=0 entry (which is 0) replaced by t=1's, as improved-diffusion does."""
        pv = self.posterior_variance
        return torch.log(torch.cat([pv[1:2], pv[1:]]))

    def snr(self) -> torch.Tensor:
        ab = self.alphas_cumprod
        return ab / (1.0 - ab)

    def strided(self, timesteps) -> "Schedule":
        """The schedule of the kept ``timesteps`` (ascending): betas that reproduce alphas_cumprod there.

        This is improved-diffusion's respacing: beta'_i = 1 - ab[t_i] / ab[t_{i-1}].
        """
        ts = torch.as_tensor(sorted(int(t) for t in timesteps), dtype=torch.long)
        ab = self.alphas_cumprod[ts]
        prev = torch.cat([ab.new_ones(1), ab[:-1]])
        return Schedule(1.0 - ab / prev)


def extract(table: torch.Tensor, t: torch.Tensor, ndim: int, dtype=torch.float32) -> torch.Tensor:
    """Gather ``table[t]`` for a batch of integer steps and shape it to broadcast over ``ndim`` dims."""
    out = table.to(t.device)[t.long()]
    return out.to(dtype).reshape(-1, *([1] * (ndim - 1)))


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) with the given noise: sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps."""
    ab = extract(schedule.alphas_cumprod, t, x0.ndim, x0.dtype)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def q_posterior(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7)."""
    nd, dt = x_t.ndim, x_t.dtype
    ab = extract(schedule.alphas_cumprod, t, nd, dt)
    ab_prev = extract(schedule.alphas_cumprod_prev, t, nd, dt)
    beta = extract(schedule.betas, t, nd, dt)
    coef_x0 = beta * ab_prev.sqrt() / (1.0 - ab)
    coef_xt = (1.0 - ab_prev) * (1.0 - beta).sqrt() / (1.0 - ab)
    mean = coef_x0 * x0 + coef_xt * x_t
    var = extract(schedule.posterior_variance, t, nd, dt)
    log_var = extract(schedule.posterior_log_variance_clipped, t, nd, dt)
    return mean, var, log_var

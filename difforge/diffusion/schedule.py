"""Noise schedules: betas, cumulative alphas and everything derived from them.

A :class:`Schedule` is an immutable table over the T training timesteps. Samplers never need a
"respaced" copy of it: they receive the list of kept timesteps and read
``alphas_cumprod[timesteps]``, which is exactly what respacing in improved-diffusion preserves
(the model keeps seeing its original timestep indices).

All tables are float64: ``1 - alphas_cumprod`` near t=0 and ``log`` of tiny betas lose digits in
float32, and the tables are small.

This module is also the one place where the schedule is read as coefficients, so no sampler
converts by hand. With ab = alpha_bar_t:

- variance preserving (VP): x_t = a x_0 + s eps, a = sqrt(ab), s = sqrt(1 - ab)  (:func:`vp_coefs`);
- variance exploding (VE, Karras et al. 2022): x = x_t / a = x_0 + sigma eps with
  sigma = sqrt((1 - ab) / ab), so x_t = x / sqrt(1 + sigma^2)  (:func:`to_vp`, :func:`to_ve`);
- log-SNR = -2 log(sigma); fractional timesteps interpolate log(sigma) (:func:`alpha_bar_at`).

The eps / x0 / v conversions at given (a, s) live in :mod:`difforge.diffusion.denoiser`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import torch

SCHEDULES = ("linear", "cosine", "sqrt_linear", "sqrt")
MAX_SHIFT = 64.0  # a noise shift beyond this leaves no step with a readable image


def _betas_from_alpha_bar(alpha_bar, num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Discretise a continuous alpha_bar(s), s in [0, 1], into betas (Nichol & Dhariwal 2021, eq. 17)."""
    s = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    ab = alpha_bar(s)
    betas = 1.0 - ab[1:] / ab[:-1]
    return betas.clamp(max=max_beta)


def make_betas(name: str, num_steps: int = 1000, shift: float = 1.0) -> torch.Tensor:
    """Return the float64 betas of a named schedule, its noise shifted by ``shift`` (:func:`shift_alpha_bar`).

    - ``linear``: Ho et al. 2020, 1e-4 .. 0.02 at T=1000, rescaled by 1000/T so any T has the
      same signal-to-noise curve (improved-diffusion's convention).
    - ``cosine``: Nichol & Dhariwal 2021, alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2).
    - ``sqrt_linear``: latent-diffusion's betas = linspace(sqrt(b0), sqrt(b1))^2.
    - ``sqrt``: Diffusion-LM, alpha_bar(s) = 1 - sqrt(s + 1e-4).
    """
    if num_steps < 1:
        raise ValueError(f"diffusion steps must be >= 1, got {num_steps}")
    if not (isinstance(shift, (int, float)) and not isinstance(shift, bool) and 0.0 < shift <= MAX_SHIFT):
        raise ValueError(f"the noise shift must be a number in (0, {MAX_SHIFT:g}], got {shift!r}")
    betas = _named_betas(name, num_steps)
    if shift == 1.0:
        return betas
    ab = shift_alpha_bar(torch.cumprod(1.0 - betas, dim=0), shift)
    return 1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]])


def shift_alpha_bar(ab: torch.Tensor, shift: float) -> torch.Tensor:
    """alpha_bar with every signal-to-noise ratio divided by ``shift`` ** 2 (log-SNR - 2 log shift).

    Why: neighbouring pixels of a larger image are more alike, so the same noise level destroys
    less of it -- at 64 px a schedule tuned at 32 px spends most steps where the image is already
    readable from a blurred view (Hoogeboom et al. 2023, "simple diffusion", shift their cosine
    schedule by the resolution ratio; SD3 does the same for its flows). SNR' = SNR / s^2 gives
    ab' = ab / (ab + s^2 (1 - ab)); s = 1 is the identity and t -> 0 still has ab' -> 1.
    """
    return ab / (ab + shift**2 * (1.0 - ab))


def _named_betas(name: str, num_steps: int) -> torch.Tensor:
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


def _setting(d, key: str, default=None):
    """``key`` of a model file's ``diffusion`` dict or of a config's diffusion section."""
    return d.get(key, default) if isinstance(d, dict) else getattr(d, key, default)


def schedule_name(d) -> str:
    """'cosine schedule' or 'cosine schedule, noise shift 2' for a ``diffusion`` settings dict or config."""
    shift = float(_setting(d, "noise_shift", 1.0))
    return f"{_setting(d, 'noise_schedule')} schedule" + (f", noise shift {shift:g}" if shift != 1.0 else "")


@dataclass(frozen=True, eq=False)
class Schedule:
    """The forward process q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I) over T discrete steps."""

    betas: torch.Tensor  # (T,) float64

    @classmethod
    def named(cls, name: str = "linear", num_steps: int = 1000, shift: float = 1.0) -> "Schedule":
        return cls(make_betas(name, num_steps, shift))

    @classmethod
    def from_settings(cls, d) -> "Schedule":
        """The schedule a model file's (or a config's) ``diffusion`` settings describe.

        ``noise_shift`` is absent from files written before it existed: they mean 1 (no shift). A config's
        ``auto`` is the run's to settle first (:func:`difforge.train.noise_shift.choose_noise_shift`).
        """
        shift = _setting(d, "noise_shift", 1.0)
        if shift == "auto":
            raise ValueError("noise_shift is still 'auto': a run settles it from its image size before building its schedule "
                             "(difforge.train.noise_shift.choose_noise_shift); give a number to build one directly")
        return cls.named(_setting(d, "noise_schedule"), int(_setting(d, "diffusion_steps")), float(shift))

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


def extract_vp_coefs(schedule: Schedule, t: torch.Tensor, ndim: int, dtype=torch.float32):
    """(a, s) = (sqrt(ab_t), sqrt(1 - ab_t)) at integer steps ``t``, shaped to broadcast over ``ndim`` dims."""
    return vp_coefs(extract(schedule.alphas_cumprod, t, ndim, dtype))


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) with the given noise: sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps."""
    a, s = extract_vp_coefs(schedule, t, x0.ndim, x0.dtype)
    return a * x0 + s * noise


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


def respaced_posterior(a: float, a_next: float):
    """Coefficients of q(x_t' | x_t, x0) between kept steps t > t' (ab = a at t, a_next at t').

    The respaced beta' = 1 - a / a_next makes the kept steps a Markov chain with the original
    alphas_cumprod (improved-diffusion's respacing, :meth:`Schedule.strided`). Returns
    (coef_x0, coef_xt, beta', beta~') with the posterior mean coef_x0 x0 + coef_xt x_t and
    beta~' = beta' (1 - a_next) / (1 - a) its variance (the float form of :func:`q_posterior`).
    """
    beta = 1.0 - a / a_next
    coef_x0 = beta * math.sqrt(a_next) / (1.0 - a)
    coef_xt = (1.0 - a_next) * math.sqrt(1.0 - beta) / (1.0 - a)
    return coef_x0, coef_xt, beta, beta * (1.0 - a_next) / (1.0 - a)


def ddim_coefs(a: float, a_next: float, eta: float):
    """DDIM's step t -> t' (Song et al. 2021, eq. 12): x_t' = c_x0 x0 + c_eps eps + sigma z.

    c_x0 = sqrt(ab'), c_eps = sqrt(1 - ab' - sigma^2), sigma = eta sqrt((1 - ab') / (1 - ab))
    sqrt(1 - ab / ab'). Returns (c_x0, c_eps, sigma); eta = 0 gives the VP coefficients of ab'.
    """
    sigma = eta * math.sqrt((1.0 - a_next) / (1.0 - a) * (1.0 - a / a_next))
    return math.sqrt(a_next), math.sqrt(max(1.0 - a_next - sigma**2, 0.0)), sigma


# -- VP <-> VE and fractional timesteps ----------------------------------------------------------


def _sqrt(v):
    return v.sqrt() if isinstance(v, torch.Tensor) else math.sqrt(v)


def vp_coefs(ab):
    """(a, s) = (sqrt(ab), sqrt(1 - ab)) of x_t = a x_0 + s eps; ``ab`` a tensor or a Python float."""
    return _sqrt(ab), _sqrt(1.0 - ab)


def sigma_of(ab):
    """The VE noise level sigma = sqrt((1 - ab) / ab) (tensor or float)."""
    return _sqrt((1.0 - ab) / ab)


def log_sigma_of(ab: torch.Tensor) -> torch.Tensor:
    """log(sigma) = 0.5 log((1 - ab) / ab) = -log-SNR / 2, elementwise."""
    return 0.5 * torch.log((1.0 - ab) / ab)


def log_sigmas(schedule: Schedule) -> torch.Tensor:
    """(T,) float64 log(sigma) of every training step, increasing in t."""
    return log_sigma_of(schedule.alphas_cumprod)


def to_ve(x_t, sigma):
    """The VE view x = x_t sqrt(1 + sigma^2) (= x_t / sqrt(ab)) of a VP sample at noise level ``sigma``."""
    return x_t * _sqrt(1.0 + sigma**2)


def to_vp(x, sigma):
    """The VP sample x_t = x / sqrt(1 + sigma^2) (= sqrt(ab) x) of a VE point ``x`` at noise level ``sigma``."""
    return x / _sqrt(1.0 + sigma**2)


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
    ls = (1.0 - w) * log_sigma_of(ab[lo]) + w * log_sigma_of(ab[hi])
    return torch.sigmoid(-2.0 * ls)  # ab = 1 / (1 + sigma^2)


def vp_coefs_at(schedule: Schedule, t, x_t: torch.Tensor):
    """(a, s) at timesteps ``t`` (a scalar or (B,), fractional allowed) in x_t's dtype, broadcasting over x_t."""
    t = torch.as_tensor(t, device=x_t.device)
    if t.ndim == 0:
        t = t.expand(x_t.shape[0])
    ab = alpha_bar_at(schedule, t).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
    return vp_coefs(ab)


def alpha_bars(schedule: Schedule, timesteps: Sequence[float], check: bool = True) -> list:
    """alpha_bar at each of a sampler's timesteps, as Python floats.

    With ``check``, the timesteps must be a non-empty, strictly descending sequence in [0, T-1]
    (the sampler contract); a ValueError says what is wrong otherwise.
    """
    # Fractional steps reach the network as float32 (samplers.common.batch_t); use the same value.
    ts = [float(t) if float(t).is_integer() else float(torch.tensor(float(t), dtype=torch.float32)) for t in timesteps]
    if check:
        if not ts:
            raise ValueError("timesteps is empty; give at least one step")
        if any(b >= a for a, b in zip(ts, ts[1:])):
            raise ValueError(f"timesteps must be strictly descending, got {ts[:6]}{'...' if len(ts) > 6 else ''}")
        if ts[-1] < 0 or ts[0] > schedule.num_steps - 1:
            raise ValueError(f"timesteps must lie in [0, {schedule.num_steps - 1}], got {ts[0]} .. {ts[-1]}")
    return alpha_bar_at(schedule, torch.tensor(ts, dtype=torch.float64)).tolist()


def sigmas(schedule: Schedule, timesteps: Sequence[float]) -> list:
    """sigma = sqrt((1 - ab) / ab) at a sampler's (possibly fractional) timesteps, as Python floats."""
    ab = torch.tensor(alpha_bars(schedule, timesteps), dtype=torch.float64)
    return sigma_of(ab).tolist()


def sigma_to_t(schedule: Schedule, sigma) -> torch.Tensor:
    """The fractional timestep whose sigma is ``sigma``: the exact inverse of :func:`alpha_bar_at`.

    log(sigma) is interpolated linearly between table entries, so t(sigma(t)) = t; sigmas
    outside the table's range clamp to t = 0 or T - 1.
    """
    table = log_sigmas(schedule)
    ls = torch.as_tensor(sigma, dtype=torch.float64).log().clamp(table[0], table[-1])
    hi = torch.searchsorted(table, ls).clamp(1, len(table) - 1)
    lo = hi - 1
    w = (ls - table[lo]) / (table[hi] - table[lo])
    return (lo.to(torch.float64) + w).clamp(0, len(table) - 1)

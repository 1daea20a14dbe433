"""Euler and Heun ODE samplers of EDM (Karras et al. 2022, Alg. 1-2) over a discrete schedule.

They integrate the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma in the
variance-exploding view x = x_t / sqrt(ab), sigma = sqrt((1 - ab) / ab). The denoiser D is the
model's x0 prediction, called with x_t = x / sqrt(1 + sigma^2) at the (fractional) timestep of
sigma. The grid is the given timesteps' sigmas followed by sigma = 0.
"""

from __future__ import annotations

import math

import torch

from ..denoiser import x0_at_sigma
from ..schedule import sigma_to_t, sigmas, to_ve, to_vp
from . import register
from .common import batch_t, randn_like


def _churn(x, t, sigma, schedule, n, generator, s_churn, s_tmin, s_tmax, s_noise):
    """EDM's stochastic churn: raise sigma to sigma (1 + gamma) by adding fresh noise."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return x, t, sigma
    sigma_max = sigmas(schedule, [schedule.num_steps - 1])[0]
    sigma_hat = min(sigma * (1.0 + min(s_churn / n, math.sqrt(2.0) - 1.0)), sigma_max)
    if sigma_hat <= sigma:
        return x, t, sigma
    x = x + s_noise * math.sqrt(sigma_hat**2 - sigma**2) * randn_like(x, generator)
    t_hat = float(sigma_to_t(schedule, torch.tensor(sigma_hat)))
    sigma_hat = sigmas(schedule, [t_hat])[0]  # what the denoiser will see at float32 t_hat
    return x, t_hat, sigma_hat


def _edm(denoiser, x_T, schedule, timesteps, y, generator, callback, second_order, churn):
    sig = sigmas(schedule, timesteps) + [0.0]
    x = to_ve(x_T, sig[0])
    for i, t in enumerate(timesteps):
        x, t_hat, s_hat = _churn(x, float(t), sig[i], schedule, len(timesteps), generator, **churn)
        x0 = x0_at_sigma(denoiser, x, batch_t(t_hat, x), s_hat, y)
        d = (x - x0) / s_hat
        s_next = sig[i + 1]
        x_next = x + (s_next - s_hat) * d
        if second_order and s_next > 0:
            d_next = (x_next - x0_at_sigma(denoiser, x_next, batch_t(timesteps[i + 1], x_next), s_next, y)) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)
        x = x_next
        if callback is not None:
            callback(i, to_vp(x, s_next), x0)
    return x


def _churn_opts(s_churn, s_tmin, s_tmax, s_noise):
    if s_churn < 0:
        raise ValueError(f"s_churn must be >= 0 (0 = deterministic), got {s_churn}")
    return dict(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@register("euler", spacing="karras", guidance="eps")
def euler(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None,
          s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0):
    """Euler steps in sigma (EDM Alg. 2 without the correction); one evaluation per step.

    ``s_churn`` > 0 adds EDM's churn noise for sigma in [s_tmin, s_tmax] (0 = the deterministic ODE).
    """
    churn = _churn_opts(s_churn, s_tmin, s_tmax, s_noise)
    return _edm(denoiser, x_T, schedule, timesteps, y, generator, callback, False, churn)


@register("heun", spacing="karras", guidance="eps")
def heun(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None,
         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0):
    """Heun's 2nd-order method in sigma (EDM Alg. 1/2); 2 evaluations per step, 1 for the last.

    n timesteps cost 2n - 1 denoiser evaluations. ``s_churn`` as for :func:`euler`.
    """
    churn = _churn_opts(s_churn, s_tmin, s_tmax, s_noise)
    return _edm(denoiser, x_T, schedule, timesteps, y, generator, callback, True, churn)

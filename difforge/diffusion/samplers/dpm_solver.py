"""DPM-Solver++ multistep samplers (Lu et al. 2022, "DPM-Solver++"), data prediction.

In the variance-exploding view x = x_t / alpha (alpha = sqrt(ab), sigma = sqrt((1 - ab) / ab),
lambda = -log sigma = half the log-SNR) the SDE family with noise level eta >= 0 has the exact
solution from lambda_s to lambda_t = lambda_s + h

    x_t = (sigma_t / sigma_s) e^(-eta h) x_s + int_0^h c e^(-c (h - u)) x0(lambda_s + u) du
          + sigma_t sqrt(1 - e^(-2 eta h)) z,          c = 1 + eta,

(eta = 0: the probability-flow ODE). The solvers replace x0(lambda) by a polynomial through the
last 1-3 predictions and integrate it exactly:

    J0 = 1 - e^(-c h),   J1 = h - J0 / c,   J2 = h^2 / 2 - J1 / c   (weights of 1, u, u^2 / 2).

Order 2 uses the paper's form J0 h / (2 h_prev) (x0_s - x0_prev) (DPM-Solver++(2M), and its
SDE variant for eta = 1); order 3 uses the Taylor form with backward divided differences. The
first steps use lower orders (warm start); the last step returns the predicted x0.
"""

from __future__ import annotations

import math

from ..denoiser import x0_at_sigma
from ..schedule import sigmas, to_ve, to_vp
from . import register
from .common import batch_t, randn_like


def _multistep(denoiser, x_T, schedule, timesteps, y, generator, callback, order, eta, s_noise=1.0, lower_order_final=False):
    sig = sigmas(schedule, timesteps) + [0.0]
    x = to_ve(x_T, sig[0])
    c = 1.0 + eta
    history = []  # (lambda, x0) of earlier steps, newest last
    for i, t in enumerate(timesteps):
        s, s_next = sig[i], sig[i + 1]
        x0 = x0_at_sigma(denoiser, x, batch_t(t, x), s, y)
        if s_next == 0:
            x = x0
        else:
            lam = -math.log(s)
            h = -math.log(s_next) - lam
            j0 = -math.expm1(-c * h)
            x = (s_next / s) * math.exp(-eta * h) * x + j0 * x0
            k = min(order, len(history) + 1)
            if lower_order_final and len(timesteps) < 10:
                k = min(k, len(timesteps) - 1 - i)
            if k >= 2:
                lam1, x0_1 = history[-1]
                h1 = lam - lam1
                d01 = (x0 - x0_1) / h1
                if k == 2:
                    x = x + (j0 * h / 2.0) * d01
                else:
                    lam2, x0_2 = history[-2]
                    h2 = lam1 - lam2
                    d012 = (d01 - (x0_1 - x0_2) / h2) / (h1 + h2)
                    j1 = h - j0 / c
                    j2 = h * h / 2.0 - j1 / c
                    x = x + j1 * (d01 + h1 * d012) + (2.0 * j2) * d012
            if eta > 0:
                x = x + (s_noise * s_next * math.sqrt(-math.expm1(-2.0 * eta * h))) * randn_like(x, generator)
            history = (history + [(lam, x0)])[-2:]
        if callback is not None:
            callback(i, to_vp(x, s_next), x0)
    return x


@register("dpm++2m", spacing="logsnr", guidance="eps")
def dpmpp_2m(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None):
    """DPM-Solver++(2M): second-order multistep ODE solver, one evaluation per step."""
    return _multistep(denoiser, x_T, schedule, timesteps, y, generator, callback, order=2, eta=0.0)


@register("dpm++2m-sde", spacing="logsnr", guidance="eps")
def dpmpp_2m_sde(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None,
                 eta: float = 1.0, s_noise: float = 1.0):
    """SDE-DPM-Solver++(2M): the same multistep scheme on the reverse SDE (``eta`` = 1), adding noise.

    ``eta`` in [0, 1] scales the injected noise (0 is exactly ``dpm++2m``).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"dpm++2m-sde: eta must be in [0, 1], got {eta}")
    return _multistep(denoiser, x_T, schedule, timesteps, y, generator, callback, order=2, eta=eta, s_noise=s_noise)


@register("dpm++3m", spacing="logsnr", guidance="eps")
def dpmpp_3m(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None, lower_order_final: bool = True):
    """DPM-Solver++(3M): third-order multistep ODE solver, one evaluation per step."""
    return _multistep(denoiser, x_T, schedule, timesteps, y, generator, callback, order=3, eta=0.0, lower_order_final=lower_order_final)

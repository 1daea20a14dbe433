"""UniPC-bh2 (Zhao et al. 2023): a multistep predictor (UniP) plus a free corrector (UniC).

Data prediction in the variance-exploding view x = x_t / alpha, lambda = -log sigma, step
h = lambda_t - lambda_s. From the current prediction m0 and earlier ones m_k at relative
positions r_k = (lambda_k - lambda_s) / h (r < 0 for the past, r = 1 for the new point),
D_k = (m_k - m0) / r_k and

    x_t = (sigma_t / sigma_s) x_s + J0 m0 + J0 sum_k rho_k D_k,    J0 = 1 - e^-h  (B(h) of "bh2"),

where rho solves sum_k rho_k r_k^(i-1) = b_i = i! phi_(i+1)(-h) (-h) / (e^-h - 1), i = 1..p, with
phi_1(z) = (e^z - 1) / z and phi_(i+1)(z) = (phi_i(z) - 1/i!) / z. The predictor uses the p - 1
past points; the corrector adds the evaluation at the predicted point (which the next step
needs anyway), raising the order by one at no extra cost. The corrector is skipped on the step
into the last timestep, whose prediction is returned as x0.
"""

from __future__ import annotations

import math

import torch

from ..denoiser import x0_at_sigma
from ..schedule import sigmas, to_ve, to_vp
from . import register
from .common import batch_t


def _b(h: float, p: int) -> list:
    """b_i = i! phi_(i+1)(-h) (-h) / (e^-h - 1) for i = 1..p."""
    z = -h
    bh = math.expm1(z)
    phi = bh / z  # phi_1
    out, fact = [], 1.0
    for i in range(1, p + 1):
        fact *= i  # i!
        phi = (phi - 1.0 / fact) / z  # phi_(i+1)
        out.append(fact * phi * z / bh)
    return out


def _rhos(rks: list, b: list) -> list:
    """Solve sum_k rho_k r_k^(i-1) = b_i (a Vandermonde system), in float64."""
    R = torch.tensor([[r**i for r in rks] for i in range(len(rks))], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()


@register("unipc", spacing="logsnr", guidance="eps")
def unipc(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None,
          order: int = 2, lower_order_final: bool = True):
    """UniPC-bh2 multistep sampler, one evaluation per step.

    ``order`` (1-3) is the predictor's order; the corrector adds one. With fewer than 10 steps
    and ``lower_order_final`` the last steps use lower orders, which is more stable.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc: order must be 1, 2 or 3, got {order}")
    sig = sigmas(schedule, timesteps)
    lam = [-math.log(s) for s in sig]
    n = len(timesteps)
    x = to_ve(x_T, sig[0])
    m = denoiser(x_T, batch_t(timesteps[0], x), y).x0
    history = [m]  # x0 predictions at timesteps[0..i], newest last
    for i in range(n - 1):
        p = min(order, i + 1)
        if lower_order_final and n < 10:
            p = min(p, n - 1 - i)
        h = lam[i + 1] - lam[i]
        j0 = -math.expm1(-h)
        m0 = history[-1]
        rks = [(lam[i - k] - lam[i]) / h for k in range(1, p)]
        ds = [(history[-1 - k] - m0) / r for k, r in enumerate(rks, start=1)]
        b = _b(h, p)
        x_base = (sig[i + 1] / sig[i]) * x + j0 * m0
        if ds:
            rho_p = [0.5] if p == 2 else _rhos(rks, b[:-1])
            x_pred = x_base + j0 * sum(r * d for r, d in zip(rho_p, ds))
        else:
            x_pred = x_base
        m_new = x0_at_sigma(denoiser, x_pred, batch_t(timesteps[i + 1], x), sig[i + 1], y)
        if i < n - 2:  # UniC: reuse the new evaluation to correct x (not on the last step)
            rho_c = [0.5] if p == 1 else _rhos(rks + [1.0], b)
            corr = sum(r * d for r, d in zip(rho_c[:-1], ds)) + rho_c[-1] * (m_new - m0)
            x = x_base + j0 * corr
        else:
            x = x_pred
        history = (history + [m_new])[-order:]
        if callback is not None:
            callback(i, to_vp(x, sig[i + 1]), m0)
    if callback is not None:
        callback(n - 1, history[-1], history[-1])
    return history[-1]

"""DDIM (Song et al. 2021): the deterministic (eta=0) or partly stochastic non-Markovian sampler."""

from __future__ import annotations

from ..schedule import alpha_bars, ddim_coefs
from . import register
from .common import batch_t, randn_like


@register("ddim", spacing="uniform", guidance="eps")
def ddim(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None, eta: float = 0.0):
    """DDIM, eq. 12 of Song et al. 2021, between consecutive kept timesteps t -> t':

        x_t' = sqrt(ab') x0 + sqrt(1 - ab' - sigma^2) eps + sigma z,
        sigma = eta sqrt((1 - ab') / (1 - ab)) sqrt(1 - ab / ab').

    eta = 0 is the probability-flow ODE's first-order exponential integrator (deterministic);
    eta = 1 has the DDPM posterior variance. The last step returns the predicted x0.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddim: eta must be in [0, 1] (0 = deterministic, 1 = DDPM-like noise), got {eta}")
    ab = alpha_bars(schedule, timesteps) + [1.0]
    x = x_T
    for i, t in enumerate(timesteps):
        pred = denoiser(x, batch_t(t, x), y)
        c_x0, c_eps, sigma = ddim_coefs(ab[i], ab[i + 1], eta)
        x = c_x0 * pred.x0 + c_eps * pred.eps
        if sigma > 0:
            x = x + sigma * randn_like(x, generator)
        if callback is not None:
            callback(i, x, pred.x0)
    return x

"""PLMS: the pseudo linear multistep method of PNDM (Liu et al. 2022) on eps."""

from __future__ import annotations

from ..denoiser import x0_from_eps
from ..schedule import alpha_bars, vp_coefs
from . import register
from .common import batch_t

# Adams-Bashforth weights on (eps_n, eps_n-1, ...) for orders 2..4, PNDM eq. 12 and its warm start.
_AB = {2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _transfer(x, eps, a, a_next):
    """PNDM's transfer phi(x_t, eps, t -> t'): the DDIM step with a given eps."""
    x0 = x0_from_eps(x, eps, *vp_coefs(a))
    c_x0, c_eps = vp_coefs(a_next)
    return c_x0 * x0 + c_eps * eps


@register("plms", spacing="uniform", guidance="eps")  # its multistep weights assume equal steps in t
def plms(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None):
    """Linear multistep on eps with DDIM's transfer (PNDM / latent-diffusion's PLMS).

    eps' = (55 e_n - 59 e_n-1 + 37 e_n-2 - 9 e_n-3) / 24 once four evaluations exist; before
    that the first step is a pseudo improved-Euler step (one extra evaluation) and the next two
    use 2nd and 3rd order Adams-Bashforth. The weights assume equal steps, so give it a grid
    that is uniform in t (the default) or in log-SNR. The last step returns the predicted x0.
    """
    ab = alpha_bars(schedule, timesteps) + [1.0]
    n = len(timesteps)
    x, history = x_T, []
    for i, t in enumerate(timesteps):
        pred = denoiser(x, batch_t(t, x), y)
        if i == n - 1:
            x = pred.x0
        else:
            a, a_next = ab[i], ab[i + 1]
            if not history:
                x_mid = _transfer(x, pred.eps, a, a_next)
                eps_mid = denoiser(x_mid, batch_t(timesteps[i + 1], x), y).eps
                eps = 0.5 * (pred.eps + eps_mid)
            else:
                weights = _AB[min(len(history) + 1, 4)]
                eps = sum(w * e for w, e in zip(weights, [pred.eps] + history[::-1]))
            history = (history + [pred.eps])[-3:]
            x = _transfer(x, eps, a, a_next)
        if callback is not None:
            callback(i, x, pred.x0)
    return x

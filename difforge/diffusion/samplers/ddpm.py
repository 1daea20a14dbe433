"""DDPM ancestral sampling (Ho et al. 2020), respaced and with learned variances (Nichol & Dhariwal 2021)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..schedule import alpha_bars, respaced_posterior
from . import register
from .common import batch_t, randn_like

VARIANCES = ("fixed_small", "fixed_large", "learned")
respaced_step = respaced_posterior  # its old name here


@register("ddpm", spacing="uniform", guidance="mean")
def ddpm(denoiser, x_T, schedule, timesteps, *, y=None, generator=None, callback=None,
         variance: Optional[str] = None):
    """Ancestral sampling x_t' ~ N(posterior mean, var) over the kept timesteps.

    ``variance``: ``fixed_small`` = beta~' (the posterior's), ``fixed_large`` = beta',
    ``learned`` = exp(v log beta' + (1 - v) log beta~') with v = ``Prediction.var_frac``
    (improved DDPM eq. 15, over the respaced betas); None = ``learned`` when the denoiser
    predicts variance, else ``fixed_small``. A ``Prediction.mean_grad`` g shifts the mean by
    var * g (Dhariwal & Nichol 2021, Alg. 1). The last step returns the predicted x0.
    """
    if variance is not None and variance not in VARIANCES:
        raise ValueError(f"ddpm: unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    ab = alpha_bars(schedule, timesteps) + [1.0]
    last = len(timesteps) - 1
    x = x_T
    for i, t in enumerate(timesteps):
        pred = denoiser(x, batch_t(t, x), y)
        if variance is None:
            variance = "fixed_small" if pred.var_frac is None else "learned"
        if variance == "learned" and pred.var_frac is None:
            raise ValueError(
                "ddpm: variance='learned' needs a denoiser that predicts variance (a network trained "
                "with learn_sigma); this one returned var_frac=None -- use 'fixed_small' or 'fixed_large'"
            )
        if i == last:
            x = pred.x0
        else:
            coef_x0, coef_xt, beta, post_var = respaced_posterior(ab[i], ab[i + 1])
            mean = coef_x0 * pred.x0 + coef_xt * x
            if variance == "learned":
                v = pred.var_frac.to(x.dtype)
                std = torch.exp(0.5 * (v * math.log(beta) + (1.0 - v) * math.log(post_var)))
            else:
                std = math.sqrt(beta if variance == "fixed_large" else post_var)
            if pred.mean_grad is not None:  # the contract's generic hook: mean + Sigma g (Prediction docs)
                mean = mean + std**2 * pred.mean_grad
            x = mean + std * randn_like(x, generator)
        if callback is not None:
            callback(i, x, pred.x0)
    return x

"""Likelihood pieces of diffusion models: Gaussian KL, the discretised decoder, the VLB in bits/dim.

The variational bound of Ho et al. 2020 (eq. 5), with the reverse process
p(x_{t-1} | x_t) = N(mean, exp(log_var)) and data x_0 on 256 levels scaled to [-1, 1]:

    L = L_T + sum_{t>=1} L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) || N(0, I))                      (the prior term; no parameters)
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))    (index t >= 1 here)
    L_0     = -log p(x_0 | x_1), a Gaussian integrated over each pixel's bin (the decoder)

Table index t = 0 holds the decoder term (the network sees x_1 there); every term is measured
in bits per dimension (nats / ln 2, averaged over C x H x W), improved-diffusion's unit, so the
total is directly comparable with published bits/dim numbers.

The model's log variance (Nichol & Dhariwal 2021, eq. 15), one convention for training,
sampling and evaluation:

- ``learned``: log var = frac log beta_t + (1 - frac) log beta~_t with frac = (v + 1) / 2 from
  the network's second C channels v (v in [-1, 1] spans beta~_t .. beta_t);
- ``fixed_small``: log beta~_t (t = 0 uses beta~_1, as beta~_0 = 0);
- ``fixed_large``: log beta_t, with t = 0 using beta~_1 too (improved-diffusion's choice: a
  decoder as wide as beta_0 wastes bits on the finest pixel bins).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch

from .schedule import Schedule, extract, q_posterior, q_sample, vp_coefs

VARIANCES = ("fixed_small", "fixed_large", "learned")
LN2 = math.log(2.0)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats (broadcasts)."""
    mean1, logvar1, mean2, logvar2 = (torch.as_tensor(v) for v in (mean1, logvar1, mean2, logvar2))
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def _log_normal_mass(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Phi(hi) - Phi(lo)) for lo < hi, accurate in both tails.

    Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi); the interval is mirrored to the lower tail, where
    log_ndtr keeps its digits, and log(a - b) = log a + log1p(-b / a).
    """
    flip = (lo + hi) > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    lb = torch.special.log_ndtr(b)
    return lb + torch.log1p(-torch.exp(torch.special.log_ndtr(a) - lb))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, num_levels: int = 256
) -> torch.Tensor:
    """log P(x) in nats, elementwise, for x on ``num_levels`` levels evenly spaced on [-1, 1].

    P is N(mean, exp(log_scale)^2) integrated over x's bin [x - d, x + d], d = 1 / (levels - 1);
    the two edge bins reach to -inf (x = -1) and +inf (x = 1), so the levels' masses sum to 1
    (Ho et al. 2020, eq. 13). Uses the exact normal CDF (improved-diffusion uses a tanh
    approximation of it).
    """
    x, mean, log_scale = torch.broadcast_tensors(x.float(), mean.float(), log_scale.float())
    half = 1.0 / (num_levels - 1)
    inv = torch.exp(-log_scale)
    lo = (x - half - mean) * inv
    hi = (x + half - mean) * inv
    edge = 1.0 - 0.5 * half  # halfway between the last level and its neighbour
    lo = torch.where(x < -edge, torch.full_like(lo, -math.inf), lo)
    hi = torch.where(x > edge, torch.full_like(hi, math.inf), hi)
    # log_ndtr(+inf) = 0 and log_ndtr(-inf) = -inf make the edge bins one-sided CDFs.
    return _log_normal_mass(lo, hi)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


# -- the model's variance ----------------------------------------------------------------------


def fixed_log_variance_table(schedule: Schedule, kind: str) -> torch.Tensor:
    """(T,) float64 log variances of ``fixed_small`` / ``fixed_large`` (see the module docstring)."""
    if kind == "fixed_small":
        return schedule.posterior_log_variance_clipped
    if kind == "fixed_large":
        pv = schedule.posterior_variance
        return torch.log(torch.cat([pv[1:2], schedule.betas[1:]]))
    raise ValueError(f"unknown fixed variance {kind!r}; choose fixed_small or fixed_large")


def learned_log_variance(schedule: Schedule, frac: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """frac log beta_t + (1 - frac) log beta~_t (improved DDPM eq. 15); frac = (v + 1) / 2."""
    nd, dt = frac.ndim, frac.dtype
    max_log = extract(torch.log(schedule.betas), t, nd, dt)
    min_log = extract(schedule.posterior_log_variance_clipped, t, nd, dt)
    return frac * max_log + (1.0 - frac) * min_log


def extract_log_variance(
    schedule: Schedule, t: torch.Tensor, ndim: int, frac: Optional[torch.Tensor] = None, fixed: str = "fixed_large"
) -> torch.Tensor:
    """Log variance of p(x_{t-1} | x_t): learned from ``frac`` when given, else the ``fixed`` table."""
    if frac is not None:
        return learned_log_variance(schedule, frac, t)
    return extract(fixed_log_variance_table(schedule, fixed), t, ndim, torch.float32)


# -- the terms of the bound ----------------------------------------------------------------------


def vlb_terms_bits(
    schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """(B,) bits/dim of the VLB term at table index t: KL for t > 0, the decoder NLL for t = 0.

    ``mean`` and ``log_var`` describe the model's p(x_{t-1} | x_t); ``x0`` must lie on the
    256 levels in [-1, 1] for the decoder term to be a probability.
    """
    mean, log_var = mean.float(), log_var.float()
    first = t.to(mean.device) == 0
    decoder = kl = None
    if bool(first.any()):
        decoder = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / LN2
    if not bool(first.all()):
        true_mean, _, true_log_var = q_posterior(schedule, x0.float(), x_t.float(), t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / LN2
    if decoder is None or kl is None:
        return kl if decoder is None else decoder
    return torch.where(first, decoder, kl)


def prior_bits(schedule: Schedule, x0: torch.Tensor) -> torch.Tensor:
    """(B,) bits/dim of KL(q(x_T | x_0) || N(0, I)); constant for a given schedule and x_0."""
    t = torch.full((x0.shape[0],), schedule.num_steps - 1, dtype=torch.long, device=x0.device)
    ab = extract(schedule.alphas_cumprod, t, x0.ndim, torch.float64)
    a, _ = vp_coefs(ab)
    kl = normal_kl(a * x0.double(), torch.log1p(-ab), 0.0, 0.0)  # q(x_T | x_0) = N(a x_0, 1 - ab)
    return (mean_flat(kl) / LN2).float()


def model_mean_log_var(schedule: Schedule, pred, x_t: torch.Tensor, t: torch.Tensor, variance: str):
    """Mean and log variance of p(x_{t-1} | x_t) from a denoiser's :class:`Prediction`.

    The mean is the posterior mean at the predicted x0 (whatever the network's target); the
    variance follows ``variance`` (``learned`` reads ``pred.var_frac``).
    """
    mean, _, _ = q_posterior(schedule, pred.x0.float(), x_t.float(), t)
    if variance == "learned" and pred.var_frac is None:
        raise ValueError("variance='learned' needs a model trained with learn_sigma; use fixed_small or fixed_large")
    frac = pred.var_frac.float() if variance == "learned" else None
    return mean, extract_log_variance(schedule, t, x_t.ndim, frac, fixed=variance)


@torch.no_grad()
def bits_per_dim(
    denoiser: Callable,
    x0: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    *,
    variance: Optional[str] = None,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable[[int], None]] = None,
) -> Dict[str, torch.Tensor]:
    """The full variational bound of a batch, in bits/dim: all T terms, the prior and the decoder.

    Args:
        denoiser: a :class:`~difforge.diffusion.denoiser.Denoiser` (its ``schedule`` is used; give it
            ``cfg_scale=1``; its ``clip_x0`` clips the predicted x0 before the posterior mean).
        x0: (B, C, H, W) images on the 256 levels in [-1, 1].
        y: class labels for a conditional model (or None).
        variance: ``learned``, ``fixed_small`` or ``fixed_large``; None = ``learned`` when the
            denoiser predicts variance, else ``fixed_large`` (improved-diffusion's default).
        generator: draws the q(x_t | x_0) noise of every term (one draw per term, as in
            improved-diffusion's ``calc_bpd_loop``; the bound is exact in expectation).
        callback: called with the table index after each term (progress bars).

    Returns (B,) tensors ``total``, ``prior``, ``decoder`` (t = 0), ``kl`` (sum over t >= 1) and
    the (B, T) table ``terms``.
    """
    schedule = denoiser.schedule
    if variance is None:
        variance = "learned" if getattr(denoiser, "learn_sigma", False) else "fixed_large"
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    x0 = x0.float()
    terms = torch.zeros(x0.shape[0], schedule.num_steps, dtype=torch.float64)
    for i in reversed(range(schedule.num_steps)):
        t = torch.full((x0.shape[0],), i, dtype=torch.long, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else "cpu").to(x0.device)
        x_t = q_sample(schedule, x0, t, noise)
        mean, log_var = model_mean_log_var(schedule, denoiser(x_t, t, y), x_t, t, variance)
        terms[:, i] = vlb_terms_bits(schedule, x0, x_t, t, mean, log_var).double().cpu()
        if callback is not None:
            callback(i)
    prior = prior_bits(schedule, x0).double().cpu()
    return {
        "total": terms.sum(1) + prior,
        "prior": prior,
        "decoder": terms[:, 0].clone(),
        "kl": terms[:, 1:].sum(1),
        "terms": terms,
    }


__all__ = [
    "VARIANCES",
    "bits_per_dim",
    "discretized_gaussian_log_likelihood",
    "extract_log_variance",
    "fixed_log_variance_table",
    "learned_log_variance",
    "model_mean_log_var",
    "normal_kl",
    "prior_bits",
    "vlb_terms_bits",
]

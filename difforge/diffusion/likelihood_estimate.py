"""The variational bound from K of the T steps, and the bound over a whole image set (``difforge nll``).

:func:`~difforge.diffusion.likelihood.bits_per_dim` evaluates all T terms: T network calls per
batch. :func:`bits_per_dim_estimate` evaluates K of them by stratified importance sampling with
an error bar, the prior and decoder exactly; :func:`dataset_bits_per_dim` runs either over images
in batches. How the estimate works, and why it is unbiased, is in :func:`bits_per_dim_estimate`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from .likelihood import VARIANCES, bits_per_dim, model_mean_log_var, prior_bits, vlb_terms_bits
from .schedule import Schedule, q_sample


def term_weights(schedule: Schedule, data_var: float = 0.25, uniform: float = 0.5) -> torch.Tensor:
    """(T,) float64 sampling weights of t = 1 .. T-1 (w_0 = 0, sum 1): a guess of L_t's shape, made safe.

    The guess r_t: with variance beta_t, L_t = beta_t / (2 alpha_t (1 - ab_t)) E||eps - eps_hat||^2 / dims
    nats (Ho et al. 2020, eq. 12), and for data N(0, data_var) the best eps error is
    ab_t data_var / (ab_t data_var + 1 - ab_t) (small at high noise, where beta_t is clipped large).
    r_t falls like 1/t near t = 0, where most of the bound is. A real model's L_t / r_t still varies,
    so ``uniform`` of the weight is spread evenly over t (defensive importance sampling, Hesterberg
    1995): no term is drawn with less than ``uniform`` / (T - 1), which bounds every importance
    ratio. Only the estimate's variance depends on this choice, never its mean.
    """
    ab = schedule.alphas_cumprod.double()
    b = schedule.betas.double()
    r = b / ((1.0 - b) * (1.0 - ab)) * ab * data_var / (ab * data_var + 1.0 - ab)
    r[0] = 0.0
    w = torch.full_like(r, uniform / (len(r) - 1))
    w[0] = 0.0
    return w + (1.0 - uniform) * r / r.sum()


def strata(weights: torch.Tensor, k: int) -> list:
    """K - 1 contiguous strata [lo, hi) of t = 1 .. T-1 holding about equal shares of ``weights``.

    Every stratum has at least one step, so K = T gives one-step strata: every term, the full bound.
    """
    num_steps = len(weights)
    if not 2 <= k <= num_steps:
        raise ValueError(f"the estimate needs 2 <= K <= T={num_steps} timesteps (the decoder and at least one KL term), got {k}")
    cum = torch.cumsum(weights[1:], 0) / weights[1:].sum()
    edges = [1]
    for j in range(1, k - 1):
        e = 1 + int(torch.searchsorted(cum, torch.tensor(j / (k - 1), dtype=cum.dtype)))
        edges.append(min(max(e, edges[-1] + 1), num_steps - (k - 1 - j)))
    edges.append(num_steps)
    return list(zip(edges[:-1], edges[1:]))


def collapsed_strata_variance(values: torch.Tensor, masses, exact) -> torch.Tensor:
    """(B,) variance estimate of sum_j Y_j, Y_j one draw's estimate of stratum j's total (Cochran 1977, 5A.12).

    One draw per stratum gives no within-stratum variance, so neighbouring inexact strata are
    collapsed in pairs (a triple at an odd end); each group g of k draws with weight mass M_g
    contributes M_g^2 / (k (k - 1)) sum_i (l_i - mean_g l)^2 with l_i = Y_i / M_i, the variance of a
    k-draw estimate of the group's total if the draws were spread over all of it. A trend across
    the group counts as variance too, so the estimate errs on the large side. ``exact`` strata
    (one step) contribute nothing.
    """
    idx = [j for j in range(values.shape[1]) if not exact[j]]
    groups = [idx[i : i + 2] for i in range(0, len(idx), 2)]
    if len(groups) > 1 and len(groups[-1]) == 1:
        groups[-2].extend(groups.pop())
    var = torch.zeros(values.shape[0], dtype=torch.float64)
    for g in groups:
        if len(g) < 2:  # a lone inexact stratum: nothing to compare it with, no error estimate
            var += float("nan")
            continue
        m = torch.tensor([float(masses[j]) for j in g], dtype=torch.float64)
        per_mass = values[:, g].double() / m
        var += m.sum() ** 2 / (len(g) * (len(g) - 1)) * ((per_mass - per_mass.mean(1, keepdim=True)) ** 2).sum(1)
    return var


@torch.no_grad()
def bits_per_dim_estimate(
    denoiser: Callable,
    x0: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    *,
    timesteps: int,
    variance: Optional[str] = None,
    generator: Optional[torch.Generator] = None,
    t_generator: Optional[torch.Generator] = None,
    callback: Optional[Callable[[int], None]] = None,
) -> Dict[str, torch.Tensor]:
    """The variational bound from K = ``timesteps`` network calls: the KL sum by stratified importance sampling.

    The prior and the decoder (t = 0) are exact. The KL sum S = sum_{t=1}^{T-1} L_t: with the
    schedule's reference shape w_t (:func:`term_weights`), t = 1 .. T-1 is cut into K - 1 strata
    of about equal weight mass W_j (:func:`strata`) and, per image, one t_j is drawn in each with
    probability w_t / W_j (``t_generator``). Y_j = W_j L_{t_j} / w_{t_j} has E[Y_j] = sum_{t in j} L_t,
    so S^ = sum_j Y_j is unbiased (also over the q(x_t | x_0) noise), and its variance comes from
    how much L_t / w_t (about the eps error) varies inside a stratum, not from the 1/t fall of L_t.
    Var S^ = sum_j Var Y_j is estimated per image by :func:`collapsed_strata_variance` (``kl_var``).
    Draws are independent across images, so the spread of ``total`` over images includes the
    timestep sampling error. ``generator`` draws the noise of all T steps in the order of
    :func:`bits_per_dim` and each image uses the noise of its own t (common random numbers; T draws
    cost little next to K network calls), so with the same generator the estimate differs from the
    full value only by the stratified sampling error, and K = T (one-step strata, Y_j = L_t)
    gives the same numbers bit for bit.

    Returns (B,) ``total``, ``prior``, ``decoder``, ``kl``, ``kl_var`` (bits/dim and bits/dim^2).
    """
    schedule = denoiser.schedule
    if variance is None:
        variance = "learned" if getattr(denoiser, "learn_sigma", False) else "fixed_large"
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    w = term_weights(schedule)
    parts = strata(w, timesteps)
    masses = [float(w[lo:hi].sum()) for lo, hi in parts]
    exact = [hi - lo == 1 for lo, hi in parts]
    x0 = x0.float()
    b = x0.shape[0]
    picks = torch.zeros(b, len(parts) + 1, dtype=torch.long)  # the t of every image in every stratum; last: t = 0
    for j, (lo, hi) in enumerate(parts):
        picks[:, j] = lo if exact[j] else lo + torch.multinomial(w[lo:hi], b, replacement=True, generator=t_generator)
    values = torch.zeros(b, len(parts) + 1, dtype=torch.float64)  # column j: Y_j of stratum j; last: the decoder
    j, dec, noise = len(parts) - 1, len(parts), torch.empty_like(x0)
    for i in reversed(range(schedule.num_steps)):
        # the full bound's noise of step i, drawn whether used or not: each image sees the noise the
        # full bound would at its t (common random numbers), so est - full is the stratification alone
        step = torch.randn(x0.shape, generator=generator, device=generator.device if generator else "cpu").to(x0.device)
        cur = dec if i == 0 else j
        rows = (picks[:, cur] == i).to(x0.device)
        noise[rows] = step[rows]
        if i != (0 if cur == dec else parts[cur][0]):
            continue
        t = picks[:, cur].to(x0.device)
        x_t = q_sample(schedule, x0, t, noise)
        mean, log_var = model_mean_log_var(schedule, denoiser(x_t, t, y), x_t, t, variance)
        term = vlb_terms_bits(schedule, x0, x_t, t, mean, log_var).double().cpu()
        values[:, cur] = term if cur == dec or exact[cur] else term * (masses[cur] / w[picks[:, cur]])
        if callback is not None:
            callback(cur)
        j -= 1
    kl = values[:, :-1].sum(1)
    prior = prior_bits(schedule, x0).double().cpu()
    decoder = values[:, -1].clone()
    return {"total": kl + decoder + prior, "prior": prior, "decoder": decoder, "kl": kl,
            "kl_var": collapsed_strata_variance(values[:, :-1], masses, exact)}


def dataset_bits_per_dim(
    denoiser: Callable,
    images: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
    *,
    batch_size: int = 32,
    variance: Optional[str] = None,
    seed: int = 0,
    device="cpu",
    progress: bool = False,
    timesteps: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """:func:`bits_per_dim` over (N, C, H, W) uint8 ``images`` in batches, with a tqdm bar.

    ``timesteps`` K < T: :func:`bits_per_dim_estimate` from K calls per batch instead (adds
    ``kl_var``); None or K >= T: the full bound. Batch b draws its noise from a generator seeded
    with (seed, b) (and the estimate's timesteps from another), so a run is reproducible for a
    given batch size. Returns (N,) float64 tensors ``total``, ``prior``, ``decoder``, ``kl``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {tuple(images.shape)} {images.dtype}")
    from tqdm import tqdm

    n, steps = images.shape[0], denoiser.schedule.num_steps
    k = steps if timesteps is None else min(int(timesteps), steps)
    batches = range(0, n, batch_size)
    bar = tqdm(total=len(batches) * k, desc="bits/dim", unit="step", disable=not progress, leave=False)
    parts = []
    try:
        for b, start in enumerate(batches):
            x0 = images[start : start + batch_size].to(device).float() / 127.5 - 1.0
            y = None if labels is None else labels[start : start + batch_size].to(device)
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + b)
            tick = lambda _: bar.update(1)  # noqa: E731
            if k < steps:
                tg = torch.Generator().manual_seed(int(seed) * 1_000_003 + b + 500_000_000)
                parts.append(bits_per_dim_estimate(denoiser, x0, y, timesteps=k, variance=variance, generator=g,
                                                   t_generator=tg, callback=tick))
            else:
                parts.append(bits_per_dim(denoiser, x0, y, variance=variance, generator=g, callback=tick))
    finally:
        bar.close()
    keys = ("total", "prior", "decoder", "kl") + (("kl_var",) if k < steps else ())
    return {key: torch.cat([p[key] for p in parts]) for key in keys}


__all__ = ["bits_per_dim_estimate", "collapsed_strata_variance", "dataset_bits_per_dim", "strata", "term_weights"]

"""Likelihood numerics against independent references: quadrature, scipy, mpmath and a closed-form NLL."""

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import integrate, stats

from difforge.diffusion.denoiser import Denoiser
from difforge.diffusion.likelihood import (
    bits_per_dim,
    discretized_gaussian_log_likelihood,
    fixed_log_variance_table,
    learned_log_variance,
    normal_kl,
    prior_bits,
)
from difforge.diffusion.schedule import Schedule

LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0


def test_normal_kl_matches_quadrature_and_closed_form():
    rng = np.random.default_rng(0)
    for _ in range(6):
        m1, m2 = rng.normal(size=2)
        s1, s2 = np.exp(rng.normal(scale=0.7, size=2))
        p, q = stats.norm(m1, s1), stats.norm(m2, s2)
        numeric, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -np.inf, np.inf)
        closed = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
        args = [torch.tensor(v, dtype=torch.float64) for v in (m1, 2 * math.log(s1), m2, 2 * math.log(s2))]
        ours = normal_kl(*args).item()
        assert ours == pytest.approx(numeric, rel=1e-6, abs=1e-9)
        assert ours == pytest.approx(closed, rel=1e-9)
    # broadcasting against scalars, and KL(p || p) = 0
    assert normal_kl(torch.zeros(3), torch.zeros(3), 0.0, 0.0).abs().max() == 0


def _scipy_bin_logprob(x, mean, std):
    """log P(bin of x) with plain scipy CDF differences; edge bins are one-sided."""
    d = 1 / 255
    if x < -0.999:
        return stats.norm.logcdf(x + d, mean, std)
    if x > 0.999:
        return stats.norm.logsf(x - d, mean, std)
    if x > mean:  # upper tail: survival functions keep the digits
        return math.log(stats.norm.sf(x - d, mean, std) - stats.norm.sf(x + d, mean, std))
    return math.log(stats.norm.cdf(x + d, mean, std) - stats.norm.cdf(x - d, mean, std))


def test_discretized_gaussian_matches_scipy_including_edge_bins():
    rng = np.random.default_rng(1)
    xs = [-1.0, 1.0, -1 + 2 / 255, 1 - 2 / 255, 0.0039215686, -0.5]
    xs += list(LEVELS[rng.integers(0, 256, 20)].numpy())
    for x in xs:
        for mean, std in ((0.0, 0.5), (float(x) + 0.003, 0.01), (float(x) - 0.05, 0.01), (0.9, 0.2), (-0.95, 0.1)):
            ref = _scipy_bin_logprob(float(x), mean, std)
            ours = discretized_gaussian_log_likelihood(torch.tensor([x]), torch.tensor([mean]), torch.tensor([math.log(std)])).item()
            assert ours == pytest.approx(ref, rel=2e-5, abs=2e-6), (x, mean, std)


def test_discretized_gaussian_is_a_distribution_over_the_levels():
    """The 256 masses sum to 1 for any mean and scale, so the edge bins reach to +-infinity."""
    for mean, std in ((0.0, 1.0), (0.99, 0.003), (-1.3, 0.4), (0.2, 1e-3)):
        lp = discretized_gaussian_log_likelihood(LEVELS.float(), torch.tensor(mean), torch.tensor(math.log(std)))
        assert torch.logsumexp(lp.double(), 0).item() == pytest.approx(0.0, abs=2e-5)


def test_discretized_gaussian_far_tails_are_accurate():
    """Bins 100 standard deviations from the mean: scipy's CDF difference underflows, mpmath does not."""
    mpmath.mp.dps = 60
    for x, mean, std in ((-0.5, 0.5, 0.01), (0.6, -0.4, 0.01), (-1.0, 0.3, 0.02), (1.0, -0.3, 0.02)):
        lo = -mpmath.inf if x < -0.999 else mpmath.mpf(x - 1 / 255)
        hi = mpmath.inf if x > 0.999 else mpmath.mpf(x + 1 / 255)
        if x > mean:  # upper tail: P = sf(lo) - sf(hi), sf(z) = erfc(z / sqrt 2) / 2
            sf = lambda v: mpmath.erfc((v - mean) / std / mpmath.sqrt(2)) / 2  # noqa: E731
            ref = float(mpmath.log(sf(lo) - sf(hi)))
        else:
            cdf = lambda v: mpmath.ncdf((v - mean) / std)  # noqa: E731
            ref = float(mpmath.log(cdf(hi) - cdf(lo)))
        ours = discretized_gaussian_log_likelihood(torch.tensor([x]), torch.tensor([mean]), torch.tensor([math.log(std)])).item()
        assert math.isfinite(ours) and ours == pytest.approx(ref, rel=1e-4)


def test_discretized_gaussian_gradients_are_finite_at_the_edges():
    x = torch.tensor([-1.0, 1.0, 0.0, -1.0, 1.0])
    mean = torch.tensor([0.5, -0.5, 0.9, -1.0, 1.0], requires_grad=True)
    log_scale = torch.tensor([-4.0, -4.0, -5.0, -1.0, -1.0], requires_grad=True)
    discretized_gaussian_log_likelihood(x, mean, log_scale).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


def test_prior_and_variance_tables():
    s = Schedule.named("linear", 100)
    x0 = torch.tensor([[0.5, -1.0]]).view(1, 2, 1, 1)
    ab = s.alphas_cumprod[-1].item()
    kl = [0.5 * (ab * v * v + (1 - ab) - 1 - math.log(1 - ab)) for v in (0.5, -1.0)]
    assert prior_bits(s, x0).item() == pytest.approx(sum(kl) / 2 / math.log(2), rel=1e-6)
    large, small = fixed_log_variance_table(s, "fixed_large"), fixed_log_variance_table(s, "fixed_small")
    assert torch.allclose(large[1:], s.betas[1:].log()) and large[0] == small[0] == s.posterior_variance[1].log()
    t = torch.tensor([0, 5, 99])
    ends = [learned_log_variance(s, torch.full((3, 1, 1, 1), f), t).flatten() for f in (0.0, 1.0)]
    assert torch.allclose(ends[0].double(), small[t], rtol=1e-6) and torch.allclose(ends[1].double(), s.betas[t].log(), rtol=1e-6)


class ExactGaussianPosterior(torch.nn.Module):
    """The optimal learned-sigma network for data x0 ~ N(mu, s^2) in every dimension.

    With a = sqrt(ab_t), sig^2 = 1 - ab_t: E[x0 | x_t] = mu + a s^2 (x_t - a mu) / (a^2 s^2 + sig^2) and
    Var[x0 | x_t] = s^2 sig^2 / (a^2 s^2 + sig^2). The exact reverse kernel q(x_{t-1} | x_t) is Gaussian
    with mean A E[x0|x_t] + B x_t (the posterior mean at the predicted x0) and variance
    beta~_t + A^2 Var[x0|x_t] (A the posterior's x0 coefficient). Output channel 1 returns the
    eps consistent with E[x0|x_t]; channel 2 the v in [-1, 1] that encodes that variance.
    """

    def __init__(self, schedule: Schedule, mu: float, s: float):
        super().__init__()
        self.sched, self.mu, self.s = schedule, mu, s
        self.fracs = []

    def forward(self, x_t, t, y=None):
        sch, mu, s2 = self.sched, self.mu, self.s**2
        ab = sch.alphas_cumprod[t].view(-1, 1, 1, 1)
        ab_prev = sch.alphas_cumprod_prev[t].view(-1, 1, 1, 1)
        beta = sch.betas[t].view(-1, 1, 1, 1)
        a, sig2, x = ab.sqrt(), 1 - ab, x_t.double()
        x0_mean = mu + a * s2 * (x - a * mu) / (ab * s2 + sig2)
        x0_var = s2 * sig2 / (ab * s2 + sig2)
        coef = beta * ab_prev.sqrt() / (1 - ab)
        var = sch.posterior_variance[t].view(-1, 1, 1, 1) + coef**2 * x0_var
        lo, hi = sch.posterior_log_variance_clipped[t].view(-1, 1, 1, 1), beta.log()
        frac = (var.log() - lo) / (hi - lo)
        self.fracs.append(frac.flatten())
        eps = (x - a * x0_mean) / sig2.sqrt()
        return torch.cat([eps, (2 * frac - 1).expand_as(x)], 1).float()


def test_vlb_of_exact_posterior_equals_closed_form_nll():
    """The VLB of the exact reverse process is the NLL of the discretised Gaussian, per image.

    Data: x0 ~ N(mu, s^2), continuous, independent per dimension. A network that returns the exact
    E[eps | x_t] and the exact reverse variance (:class:`ExactGaussianPosterior`) makes every
    p(x_{t-1} | x_t) the true q(x_{t-1} | x_t), and p(x_0 | x_1) the true q(x_0 | x_1) integrated
    over the pixel's bin. The bound's only slack is then the prior: p(x_T) = N(0, 1) instead of
    q(x_T), which adds exactly E_{q(x_T|x0)}[log q(x_T) - log N(x_T; 0, 1)] (computed below),
    plus O((d / sigma)^2) from replacing a density by its bin mass (d = 1/255, sigma >= 0.15 here:
    < 1e-4 nats). So, for a pixel value x0 on the 256 levels,

        VLB(x0) = -log [Phi((x0 + d - mu) / s) - Phi((x0 - d - mu) / s)] + prior slack.

    The schedule starts at beta_0 = 0.05 so the decoder's scale (~0.2) is far wider than a bin.
    Each image is one pixel value repeated over 128 x 128 independent dimensions; the bound's Monte
    Carlo noise (one x_t draw per term, about 1 bit per dimension) averages down to ~0.008 bits.
    A wrong term (a factor in the KL, the decoder's bin edges, a variance off by one step) moves
    the total by far more than the 0.04-bit tolerance (fixed variances instead of the exact
    ones: 0.1-0.5 bits).
    """
    mu, s = 0.1, 0.3
    sched = Schedule(torch.linspace(0.05, 0.6, 20, dtype=torch.float64))
    net = ExactGaussianPosterior(sched, mu, s)
    den = Denoiser(net, sched, target="eps", learn_sigma=True, clip_x0=False)
    values = LEVELS[[70, 115, 140, 165, 200]]  # -0.45 .. 0.57
    x0 = values.float().view(-1, 1, 1, 1).expand(-1, 1, 128, 128).contiguous()
    out = bits_per_dim(den, x0, generator=torch.Generator().manual_seed(0))
    fracs = torch.cat(net.fracs)
    assert fracs.min() >= 0 and fracs.max() <= 1  # the true variance lies in [beta~_t, beta_t]

    d = 1 / 255
    ab_T = sched.alphas_cumprod[-1].item()
    for i, v in enumerate(values.tolist()):
        nll = -math.log(stats.norm.cdf(v + d, mu, s) - stats.norm.cdf(v - d, mu, s))
        m1, v1 = math.sqrt(ab_T) * v, 1 - ab_T  # q(x_T | x0)
        m2, v2 = math.sqrt(ab_T) * mu, ab_T * s * s + 1 - ab_T  # q(x_T)
        expect_log = lambda m, var: -0.5 * math.log(2 * math.pi * var) - ((m1 - m) ** 2 + v1) / (2 * var)  # noqa: E731
        slack = expect_log(m2, v2) - expect_log(0.0, 1.0)
        expected_bits = (nll + slack) / math.log(2)
        assert out["total"][i].item() == pytest.approx(expected_bits, abs=0.04), (v, out["total"][i].item(), expected_bits)
    assert torch.allclose(out["total"], out["prior"] + out["decoder"] + out["kl"])

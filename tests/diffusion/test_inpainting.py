"""Inpainting on Gaussian data with an exact denoiser: RePaint against closed forms.

The data is one 6-D Gaussian N(mu, S) (S_ij = 0.2 * rho^|i-j|) laid out as 1x2x3 images; pixels 2
and 3 are unknown, the other four known. The Gaussian conditional of the unknown given the known
x0 values is closed form (mean mu_u + S_uk S_kk^-1 (x_k - mu_k), covariance S_uu - S_uk S_kk^-1 S_ku).

Every move of RePaint and blend is affine in the state plus fresh Gaussian noise when the
denoiser is exact (E[x0 | x_t] = mu + a S C^-1 (x_t - a mu), C = a^2 S + s^2 I), so the exact mean and
covariance of what they output follow by propagating moments through the same walk
(:func:`propagate`, written here independently of the sampler code). That gives two checks:

- the sampled output matches the propagated moments within a tolerance from the sample count
  (mean: 5 standard errors sqrt(P_ii / N); covariance entry: 5 sqrt((P_ii P_jj + P_ij^2) / N),
  the standard deviation of a Gaussian sample covariance): the implementation is right;
- the propagated moments show how close each method comes to the true conditional: RePaint's
  distance falls with resampling and finer steps, blend's does not. RePaint is *not* exact (the
  network sees the known pixels only through x_t, never x0), so its remaining bias is measured
  and bounded here, not assumed away.
"""

import math

import pytest
import torch

from difforge.diffusion.inpainting import KnownRegion, blend, inpainting_sampler, jump_levels, repaint, repaint_evaluations
from difforge.diffusion.samplers import get_sampler
from difforge.diffusion.schedule import Schedule, alpha_bars
from difforge.diffusion.timesteps import sampling_timesteps

from .gmm import GaussianMixture

SCHEDULE = Schedule.named("linear", 1000)
RHO = 0.85
KEEP = torch.tensor([True, True, False, False, True, True])
X0_KNOWN = torch.tensor([0.6, 0.5, 0.0, 0.0, -0.5, -0.4], dtype=torch.float64)
MU = torch.tensor([0.1, -0.2, 0.0, 0.3, -0.1, 0.2], dtype=torch.float64)
_I = torch.arange(6, dtype=torch.float64)
S = 0.2 * RHO ** (_I[:, None] - _I[None, :]).abs()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is several times faster than two on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def conditional():
    u, k = ~KEEP, KEEP
    suk, skk = S[u][:, k], S[k][:, k]
    mean = MU[u] + suk @ torch.linalg.solve(skk, X0_KNOWN[k] - MU[k])
    return mean, S[u][:, u] - suk @ torch.linalg.solve(skk, suk.T)


def propagate(levels_ab, walk):
    """Exact (mean, cov) of the unknown pixels after RePaint's ``walk`` (DDPM fixed_small steps)."""
    d, u, k = 6, torch.diag((~KEEP).double()), torch.diag(KEEP.double())
    eye = torch.eye(d, dtype=torch.float64)
    m, p = torch.zeros(d, dtype=torch.float64), eye.clone()
    step = {}  # (hi, lo) -> (M, v, Q): the affine map of one down move
    for hi, lo in zip(walk, walk[1:]):
        if lo > hi:  # x <- sqrt(r) x + sqrt(1 - r) z
            r = levels_ab[lo] / levels_ab[hi]
            m, p = math.sqrt(r) * m, r * p + (1 - r) * eye
            continue
        if (hi, lo) not in step:
            step[hi, lo] = _down(levels_ab[hi], levels_ab[lo], lo == 0, u, k, eye)
        M, v, Q = step[hi, lo]
        m, p = M @ m + v, M @ p @ M.T + Q
    return m[~KEEP], p[~KEEP][:, ~KEEP]


def _down(ab, ab_lo, last, u, k, eye):
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    A = a * S @ torch.linalg.inv(a * a * S + s * s * eye)  # E[x0 | x_t] = A x_t + b
    b = MU - A @ (a * MU)
    if last:
        c0, ct, var = 1.0, 0.0, 0.0
    else:  # q(x_lo | x_hi, x0) between kept steps (Ho et al. 2020, eq. 7 with beta = 1 - ab / ab_lo)
        beta = 1 - ab / ab_lo
        c0, ct, var = beta * math.sqrt(ab_lo) / (1 - ab), (1 - ab_lo) * math.sqrt(1 - beta) / (1 - ab), beta * (1 - ab_lo) / (1 - ab)
    # the x_t the network sees: unknown pixels = the state, known = a x0_known + s z (z fresh)
    M = u @ (c0 * A @ u + ct * eye)
    v = u @ (c0 * (A @ (k @ (a * X0_KNOWN)) + b))
    G = u @ (c0 * s * A @ k)
    return M, v, G @ G.T + var * u


def levels(timesteps):
    return [1.0] + alpha_bars(SCHEDULE, timesteps)[::-1]


def w2(m1, c1, m2, c2) -> float:
    from scipy.linalg import sqrtm

    r1 = sqrtm(c1.numpy()).real
    cross = sqrtm(r1 @ c2.numpy() @ r1).real
    return math.sqrt(max(0.0, float(((m1 - m2) ** 2).sum()) + float((c1.numpy() + c2.numpy() - 2 * cross).trace())))


def run(method, n, steps, seed=0, **kw):
    den = GaussianMixture(SCHEDULE, MU[None], S[None], [1.0])
    ts = sampling_timesteps(1000, steps, "uniform", schedule=SCHEDULE)
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, 1, 2, 3, generator=gen)
    known, keep = X0_KNOWN.float().reshape(1, 1, 2, 3), KEEP.reshape(1, 1, 2, 3)
    if method == "repaint":
        out = repaint(den, x_T, SCHEDULE, ts, known=known, keep=keep, generator=gen, **kw)
    else:
        out = blend(get_sampler(method), den, x_T, SCHEDULE, ts, known=known, keep=keep, generator=gen, **kw)
    return out, ts


def moments(out):
    x = out.reshape(out.shape[0], -1)[:, ~KEEP].double()
    return x.mean(0), torch.cov(x.T)


def z_scores(m, c, pm, pc, n):
    """Largest |error| / standard error of the sample mean and of the sample covariance entries."""
    zm = ((m - pm) / (pc.diag() / n).sqrt()).abs().max().item()
    sd = ((pc.diag()[:, None] * pc.diag()[None, :] + pc**2) / n).sqrt()
    return zm, ((c - pc) / sd).abs().max().item()


# ----------------------------------------------------------------------------- the walk


def test_jump_levels_is_repaints_schedule():
    assert jump_levels(4, 1, 1) == [4, 3, 2, 1, 0]
    # n=6, jump 2, two passes: jumps back up at levels 1 and 3 (RePaint's get_schedule_jump)
    assert jump_levels(6, 2, 2) == [6, 5, 4, 3, 4, 5, 4, 3, 2, 1, 2, 3, 2, 1, 0]
    assert repaint_evaluations(6, 2, 2) == 10
    with pytest.raises(ValueError, match="resample"):
        jump_levels(6, 0, 2)


# ----------------------------------------------------------------------------- exact numerics


@pytest.mark.parametrize("steps,resample,jump", [(50, 1, 1), (100, 10, 5)])
def test_repaint_output_has_the_exactly_propagated_moments(steps, resample, jump):
    n = 4000
    out, ts = run("repaint", n, steps, resample=resample, jump=jump)
    pm, pc = propagate(levels(ts), jump_levels(len(ts), resample, jump))
    zm, zc = z_scores(*moments(out), pm, pc, n)
    assert zm < 5 and zc < 5, (zm, zc)


def test_blend_ddpm_is_repaint_without_resampling_and_matches_its_moments():
    n = 4000
    out, ts = run("ddpm", n, 50)
    again, _ = run("repaint", n, 50, resample=1, jump=1)
    assert torch.equal(out, again)  # same moves, same noise
    zm, zc = z_scores(*moments(out), *propagate(levels(ts), jump_levels(len(ts), 1, 1)), n)
    assert zm < 5 and zc < 5, (zm, zc)


def test_repaint_approaches_the_gaussian_conditional_and_blend_does_not():
    cm, cc = conditional()
    dist, found = {}, {}
    for steps, resample, jump in [(50, 1, 1), (1000, 1, 1), (100, 10, 5), (250, 10, 10), (1000, 20, 10)]:
        ts = sampling_timesteps(1000, steps, "uniform", schedule=SCHEDULE)
        found[steps, resample, jump] = propagate(levels(ts), jump_levels(len(ts), resample, jump))
        dist[steps, resample, jump] = w2(*found[steps, resample, jump], cm, cc)
    blend50, blend1000 = dist[50, 1, 1], dist[1000, 1, 1]
    # measured: blend 0.145 (50 steps) and 0.136 (1000): finer steps do not help it
    assert blend50 > 0.12 and blend1000 > 0.12
    # RePaint: 0.061 (100 steps, U=10, J=5), 0.043 (250, 10, 10), 0.0195 (1000, 20, 10)
    assert dist[100, 10, 5] < 0.5 * blend50
    assert dist[1000, 20, 10] < dist[250, 10, 10] < dist[100, 10, 5]
    assert dist[1000, 20, 10] < 0.15 * blend1000
    # what is left at (1000, 20, 10): mean off by < 0.015 (conditional sd 0.21), variances by < 10 %
    m, c = found[1000, 20, 10]
    assert (m - cm).abs().max() < 0.015 and ((c.diag() - cc.diag()).abs() / cc.diag()).max() < 0.1


def test_sampled_repaint_is_measurably_closer_to_the_conditional_than_blend():
    n = 4000
    cm, cc = conditional()
    rp_m, rp_c = moments(run("repaint", n, 100, resample=10, jump=5)[0])
    for sampler in ("ddpm", "ddim"):
        bl_m, bl_c = moments(run(sampler, n, 100)[0])
        assert w2(rp_m, rp_c, cm, cc) < 0.6 * w2(bl_m, bl_c, cm, cc)
        # blend's mean error is far beyond sampling noise (measured: ~40 standard errors)
        assert z_scores(bl_m, bl_c, cm, cc, n)[0] > 15


# ----------------------------------------------------------------------------- known pixels


@pytest.mark.parametrize("method", ["repaint", "ddim", "euler", "dpm++2m"])
def test_known_pixels_are_the_input_bit_for_bit(method):
    kw = {"resample": 3, "jump": 2} if method == "repaint" else {}
    out, _ = run(method, 64, 10, **kw)
    known = X0_KNOWN.float().reshape(1, 1, 2, 3).expand_as(out)
    keep = KEEP.reshape(1, 1, 2, 3).expand_as(out)
    assert torch.equal(out[keep], known[keep])
    assert out[~keep].std() > 0.05  # the unknown pixels were generated


def test_region_sees_noised_known_pixels_and_reports_their_x0_and_eps():
    seen = {}

    def den(x_t, t, y=None):
        seen["x"] = x_t.clone()
        from difforge.diffusion.denoiser import Prediction

        return Prediction(eps=torch.zeros_like(x_t), x0=torch.full_like(x_t, 7.0))

    known, keep = torch.full((1, 1, 2, 2), 0.5), torch.tensor([[[[True, False], [False, True]]]])
    region = KnownRegion(den, known, keep, SCHEDULE, torch.Generator().manual_seed(3))
    x = torch.full((2, 1, 2, 2), -9.0)
    pred = region(x, torch.tensor(999))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    a, s = math.sqrt(SCHEDULE.alphas_cumprod[999]), math.sqrt(1 - SCHEDULE.alphas_cumprod[999])
    k = keep.expand_as(x)
    assert torch.allclose(seen["x"][k], (a * 0.5 + s * z)[k]) and torch.equal(seen["x"][~k], x[~k])
    assert torch.equal(pred.x0[k], torch.full_like(x, 0.5)[k]) and torch.equal(pred.x0[~k], torch.full_like(x, 7.0)[~k])
    assert torch.equal(pred.eps[k], z[k])


def test_inpainting_sampler_has_the_sampler_contract():
    den = GaussianMixture(SCHEDULE, MU[None], S[None], [1.0])
    known, keep = X0_KNOWN.float().reshape(1, 1, 2, 3), KEEP.reshape(1, 1, 2, 3)
    fn = inpainting_sampler("blend", known, keep, get_sampler("ddim"))
    steps = []
    x = fn(den, torch.randn(3, 1, 2, 3), SCHEDULE, [999, 500, 0], generator=[torch.Generator().manual_seed(i) for i in range(3)],
           callback=lambda i, x, x0: steps.append(i), eta=0.5)
    assert steps == [0, 1, 2] and x.shape == (3, 1, 2, 3)
    with pytest.raises(ValueError, match="method"):
        inpainting_sampler("paint", known, keep)

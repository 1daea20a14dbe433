"""Every sampler against an exact denoiser: the data it reproduces, its order, its noise and its contract."""

import contextlib
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from difforge.diffusion.denoiser import Prediction
from difforge.diffusion.samplers import available, get_sampler
from difforge.diffusion.samplers.common import batch_t
from difforge.diffusion.schedule import Schedule, respaced_posterior
from difforge.diffusion.timesteps import alpha_bars, default_spacing, sampling_timesteps, sigmas

try:  # tests/ may or may not be a package
    from .gmm import three_blobs
except ImportError:
    from gmm import three_blobs

ALL = ["ddpm", "ddim", "plms", "dpm++2m", "dpm++2m-sde", "dpm++3m", "euler", "heun", "unipc"]
DETERMINISTIC = ["ddim", "plms", "dpm++2m", "dpm++3m", "euler", "heun", "unipc"]
SCHEDULE = Schedule.named("linear", 1000)
T = SCHEDULE.num_steps


@contextlib.contextmanager
def _single_thread():
    # The mixture's tensors are tiny: on a busy 2-core machine, thread hand-offs would dominate.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def one_thread():
    with _single_thread():
        yield


@pytest.fixture(scope="module")
def gmm():
    return three_blobs(SCHEDULE)


def _x_T(n, seed=0, shape=(2,)):
    return torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _run(name, gmm, x_T, steps, spacing=None, seed=1, **opts):
    ts = sampling_timesteps(T, steps, spacing or default_spacing(name), SCHEDULE)
    return get_sampler(name)(gmm, x_T, SCHEDULE, ts, generator=torch.Generator().manual_seed(seed), **opts)


def test_registry_has_every_sampler():
    assert set(ALL) <= set(available())


def test_every_sampler_declares_its_spacing_and_guidance_mode():
    from difforge.diffusion.guidance import MODES, guidance_mode
    from difforge.diffusion.samplers import SPECS, register, sampler_spec
    from difforge.diffusion.timesteps import SPACINGS

    for name in available():
        spec = sampler_spec(name)
        assert spec.spacing in SPACINGS and spec.guidance in MODES, (name, spec)
        assert (default_spacing(name), guidance_mode(name)) == (spec.spacing, spec.guidance)
    assert sampler_spec("no-such-sampler") is None and guidance_mode("no-such-sampler") == "eps"
    try:  # the callers read the declaration, not a table of names of their own
        register("test-only", spacing="karras", guidance="mean")(lambda *a, **k: None)
        assert (default_spacing("test-only"), guidance_mode("test-only")) == ("karras", "mean")
    finally:
        from difforge.diffusion.samplers import SAMPLERS

        SAMPLERS.pop("test-only", None)
        SPECS.pop("test-only", None)


# -- the data -----------------------------------------------------------------------------------

GENEROUS = {"ddpm": 1000, "ddim": 200, "dpm++2m-sde": 200, "euler": 200}  # others: 100


@pytest.mark.parametrize("name,opts", [(n, {}) for n in ALL] + [("ddim", {"eta": 1.0})], ids=lambda v: str(v or ""))
def test_sampler_reproduces_the_mixture(gmm, name, opts):
    x = _run(name, gmm, _x_T(4000), GENEROUS.get(name, 100), **opts)
    mean, cov = gmm.moments()
    # Tolerances are about 4 standard errors of 4000 samples.
    assert torch.allclose(x.mean(0), mean, atol=0.07), (x.mean(0), mean)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.08), (torch.cov(x.T), cov)
    fracs, truth = gmm.mode_fractions(x), gmm.mode_fractions_truth()
    assert (fracs - truth).abs().max() < 0.03, (fracs, truth)
    # Within each mode, the spread is right too (a sampler that collapses modes fails here).
    label = torch.stack([torch.distributions.MultivariateNormal(m, c).log_prob(x) for m, c in zip(gmm.means, gmm.covs)], 1).argmax(1)
    for k in range(3):
        assert torch.allclose(torch.cov(x[label == k].T), gmm.covs[k], atol=0.025), (k, torch.cov(x[label == k].T))


def test_few_step_samples_are_far_from_the_data(gmm):
    """The checks above can fail: DDIM at 5 steps is visibly off."""
    d = gmm.distance(_run("ddim", gmm, _x_T(4000), 5))
    assert d["frechet"] > 0.05


# -- accuracy of the ODE solvers against an independent reference ------------------------------


@pytest.fixture(scope="module")
def ode_reference(gmm):
    """x_T and the exact probability-flow ODE solution from t=T-1 to t=0, then denoised (scipy DOP853)."""
    n = 200
    x_T = _x_T(n, seed=5)
    smax, smin = sigmas(SCHEDULE, [T - 1, 0])

    def rhs(log_sigma, z):  # dx/dlog(sigma) = x - D(x, sigma) in the variance-exploding view
        x = z.reshape(n, 2)
        return (x - gmm.x0_at_sigma(x, math.exp(log_sigma))).ravel()

    z0 = (x_T.numpy() * math.sqrt(1.0 + smax**2)).ravel()
    with _single_thread():
        sol = solve_ivp(rhs, (math.log(smax), math.log(smin)), z0, method="DOP853", rtol=1e-10, atol=1e-10)
    assert sol.success
    return x_T, torch.from_numpy(gmm.x0_at_sigma(sol.y[:, -1].reshape(n, 2), smin))


def _ode_error(name, gmm, ref, steps, spacing=None):
    x_T, x0 = ref
    return (_run(name, gmm, x_T, steps, spacing) - x0).norm(dim=1).mean().item()


@pytest.mark.parametrize("name", ["plms", "dpm++2m", "dpm++3m", "unipc", "heun"])
def test_multistep_solvers_beat_ddim_at_20_steps(gmm, ode_reference, name):
    ddim = _ode_error("ddim", gmm, ode_reference, 20)
    assert _ode_error(name, gmm, ode_reference, 20) < 0.5 * ddim


@pytest.mark.parametrize("name,order", [("ddim", 1), ("euler", 1), ("heun", 2), ("dpm++2m", 2), ("dpm++3m", 3), ("unipc", 3)])
def test_order_of_convergence(gmm, ode_reference, name, order):
    """Halving the log-SNR step divides the error by about 2^order (UniPC-2 + corrector: 3)."""
    coarse = _ode_error(name, gmm, ode_reference, 100, "logsnr")
    fine = _ode_error(name, gmm, ode_reference, 200, "logsnr")
    assert fine < 0.01
    assert order - 0.2 < math.log2(coarse / fine) < order + 0.4, (coarse, fine)


def test_plms_warm_start_is_second_order(gmm):
    """PLMS's first step (pseudo improved Euler, one extra evaluation) has local error O(h^3), DDIM's O(h^2)."""
    x = _x_T(200, seed=3)

    def first_step_error(name, t1):
        (a0, a1), (s0, s1) = [math.sqrt(ab) for ab in alpha_bars(SCHEDULE, [400, t1])], sigmas(SCHEDULE, [400, t1])

        def rhs(log_sigma, z):
            return (z.reshape(-1, 2) - gmm.x0_at_sigma(z.reshape(-1, 2), math.exp(log_sigma))).ravel()

        sol = solve_ivp(rhs, (math.log(s0), math.log(s1)), (x / a0).numpy().ravel(), method="DOP853", rtol=1e-11, atol=1e-12)
        exact = torch.from_numpy(sol.y[:, -1].reshape(-1, 2)) * a1
        first = []
        get_sampler(name)(gmm, x, SCHEDULE, [400, t1, 0], callback=lambda i, x_t, x0: first.append(x_t))
        return (first[0] - exact).norm(dim=1).mean().item()

    local_order = {n: math.log2(first_step_error(n, 350) / first_step_error(n, 375)) for n in ("ddim", "plms")}
    assert local_order["ddim"] < 2.5 and local_order["plms"] > 2.7, local_order


def test_euler_is_ddim(gmm):
    """DDIM (eta=0) is exactly Euler's method on the variance-exploding ODE in sigma (Karras et al. 2022)."""
    x_T = _x_T(64)
    for spacing in ("uniform", "karras"):
        a, b = (_run(n, gmm, x_T, 12, spacing) for n in ("ddim", "euler"))
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_sde_variant_at_eta_0_is_the_ode_solver(gmm):
    x_T = _x_T(64)
    torch.testing.assert_close(_run("dpm++2m-sde", gmm, x_T, 15, eta=0.0), _run("dpm++2m", gmm, x_T, 15), rtol=0, atol=0)


# -- noise, determinism and per-sample seeds ----------------------------------------------------


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_ode_samplers_are_deterministic(gmm, name):
    x_T = _x_T(32)
    torch.manual_seed(0)
    a = _run(name, gmm, x_T, 10, seed=1)
    torch.manual_seed(1)
    b = _run(name, gmm, x_T, 10, seed=2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name,opts", [("ddpm", {}), ("ddim", {"eta": 1.0}), ("dpm++2m-sde", {}), ("euler", {"s_churn": 10.0})], ids=str)
def test_per_sample_generators_make_images_independent_of_the_batch(gmm, name, opts):
    seeds = [11, 22, 33, 44]
    x_T = torch.cat([_x_T(1, s) for s in seeds])
    ts = sampling_timesteps(T, 12, default_spacing(name), SCHEDULE)
    sampler = get_sampler(name)
    batch = sampler(gmm, x_T, SCHEDULE, ts, generator=[torch.Generator().manual_seed(s) for s in seeds], **opts)
    single = torch.cat([
        sampler(gmm, x_T[i:i + 1], SCHEDULE, ts, generator=[torch.Generator().manual_seed(s)], **opts)
        for i, s in enumerate(seeds)
    ])
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-12)
    other = sampler(gmm, x_T, SCHEDULE, ts, generator=[torch.Generator().manual_seed(s + 1) for s in seeds], **opts)
    assert not torch.allclose(batch, other)  # the sampler does use the noise


# -- DDPM variances and respacing ---------------------------------------------------------------


class _ZeroDenoiser:
    """Predicts eps = x0 = 0, so one ancestral step from x_T = 0 leaves std * noise."""

    def __init__(self, var_frac=None):
        self.var_frac = var_frac

    def __call__(self, x_t, t, y=None):
        v = None if self.var_frac is None else torch.full_like(x_t, self.var_frac)
        return Prediction(eps=torch.zeros_like(x_t), x0=torch.zeros_like(x_t), var_frac=v)


@pytest.mark.parametrize("variance,var_frac", [("fixed_small", None), ("fixed_large", None), ("learned", 0.0), ("learned", 0.3), ("learned", 1.0)])
def test_ddpm_step_std_uses_the_respaced_schedule(variance, var_frac):
    ts = sampling_timesteps(T, 10, "uniform")  # [999, 888, ..., 0]
    strided = SCHEDULE.strided(ts)  # ascending: index 8 is the step 888 -> 777
    beta, post = strided.betas[8].item(), strided.posterior_variance[8].item()
    expect = {"fixed_small": post, "fixed_large": beta}.get(variance) or math.exp(var_frac * math.log(beta) + (1 - var_frac) * math.log(post))
    seen = []
    gens = [torch.Generator().manual_seed(s) for s in range(20000)]
    get_sampler("ddpm")(_ZeroDenoiser(var_frac), torch.zeros(20000, 1), SCHEDULE, ts[1:3], generator=gens,
                        variance=variance, callback=lambda i, x, x0: seen.append(x))
    noise = torch.stack([torch.randn(1, generator=torch.Generator().manual_seed(s), dtype=torch.float32) for s in range(3)])
    torch.testing.assert_close(seen[0][:3], math.sqrt(expect) * noise, rtol=1e-5, atol=1e-7)
    assert abs(seen[0].std().item() ** 2 / expect - 1) < 0.05


def test_ddpm_learned_variance_reproduces_the_mixture_with_a_fake_var_frac(gmm):
    class WithVar:
        def __call__(self, x_t, t, y=None):
            p = gmm(x_t, t, y)
            return Prediction(p.eps, p.x0, var_frac=torch.full_like(x_t, 0.5))

    x = _run("ddpm", WithVar(), _x_T(2000), 250, variance="learned")
    assert gmm.distance(x)["frechet"] < 0.01
    # variance=None picks the learned variance whenever the denoiser gives one
    torch.testing.assert_close(_run("ddpm", WithVar(), _x_T(50), 20), _run("ddpm", WithVar(), _x_T(50), 20, variance="learned"))
    torch.testing.assert_close(_run("ddpm", gmm, _x_T(50), 20), _run("ddpm", gmm, _x_T(50), 20, variance="fixed_small"))
    assert not torch.allclose(_run("ddpm", WithVar(), _x_T(50), 20), _run("ddpm", WithVar(), _x_T(50), 20, variance="fixed_small"))


def test_ddpm_learned_without_var_frac_is_a_clear_error(gmm):
    with pytest.raises(ValueError, match="learned.*var_frac"):
        _run("ddpm", gmm, _x_T(4), 5, variance="learned")
    with pytest.raises(ValueError, match="variance"):
        _run("ddpm", gmm, _x_T(4), 5, variance="big")


def test_respaced_posterior_matches_the_strided_schedule():
    ts = sampling_timesteps(T, 25, "ddim25")[::-1]  # ascending
    strided = SCHEDULE.strided(ts)
    ab = SCHEDULE.alphas_cumprod[ts]
    for i in range(1, len(ts)):
        _, _, beta, post = respaced_posterior(ab[i].item(), ab[i - 1].item())
        assert beta == pytest.approx(strided.betas[i].item(), rel=1e-12)
        assert post == pytest.approx(strided.posterior_variance[i].item(), rel=1e-12)


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_ddim_eta_out_of_range(gmm, eta):
    with pytest.raises(ValueError, match="eta"):
        _run("ddim", gmm, _x_T(4), 5, eta=eta)


def test_bad_timesteps_are_rejected(gmm):
    with pytest.raises(ValueError, match="descending"):
        get_sampler("ddim")(gmm, _x_T(4), SCHEDULE, [0, 500, 999])
    with pytest.raises(ValueError, match="empty"):
        get_sampler("dpm++2m")(gmm, _x_T(4), SCHEDULE, [])


# -- the contract -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_callback_once_per_step_and_any_trailing_shape(gmm, name):
    x_T = _x_T(6, shape=(2, 1, 1))
    ts = sampling_timesteps(T, 7, default_spacing(name), SCHEDULE)
    calls = []
    out = get_sampler(name)(gmm, x_T, SCHEDULE, ts, generator=torch.Generator().manual_seed(0),
                            callback=lambda i, x, x0: calls.append((i, x.shape, x0.shape, x)))
    assert [c[0] for c in calls] == list(range(len(ts)))
    assert all(c[1] == x_T.shape and c[2] == x_T.shape for c in calls)
    assert torch.equal(calls[-1][3], out) and out.shape == x_T.shape
    flat = get_sampler(name)(gmm, x_T.reshape(6, 2), SCHEDULE, ts, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flat, out.reshape(6, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_last_step_returns_the_denoised_prediction(name):
    """With a denoiser whose x0 is a constant, every sampler ends exactly on it (no noise added)."""

    class Const:
        def __call__(self, x_t, t, y=None):
            from difforge.diffusion.denoiser import alpha_bar_at

            ab = alpha_bar_at(SCHEDULE, t).to(x_t.dtype).reshape(-1, *[1] * (x_t.ndim - 1))
            x0 = torch.full_like(x_t, 0.25)
            return Prediction((x_t - ab.sqrt() * x0) / (1 - ab).sqrt(), x0)

    ts = sampling_timesteps(T, 6, default_spacing(name), SCHEDULE)
    out = get_sampler(name)(Const(), _x_T(5), SCHEDULE, ts, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.full_like(out, 0.25), rtol=0, atol=1e-12)


def test_float32_inputs_and_fractional_timesteps(gmm):
    x = _run("dpm++2m", gmm, _x_T(500).float(), 20)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    t = batch_t(12.5, x)
    assert t.dtype == torch.float32 and t.shape == (500,) and t[0] == 12.5
    assert batch_t(12.0, x).dtype == torch.long


def test_numpy_and_tensor_timesteps_are_accepted(gmm):
    x_T = _x_T(16)
    ts = sampling_timesteps(T, 8, "uniform")
    a = get_sampler("ddim")(gmm, x_T, SCHEDULE, ts)
    assert torch.equal(a, get_sampler("ddim")(gmm, x_T, SCHEDULE, torch.tensor(ts)))
    assert torch.equal(a, get_sampler("ddim")(gmm, x_T, SCHEDULE, np.array(ts)))

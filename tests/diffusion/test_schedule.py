import math

import numpy as np
import pytest
import torch

from difforge.diffusion.denoiser import TARGETS, to_eps_x0, training_target
from difforge.diffusion.schedule import Schedule, make_betas, q_posterior, q_sample


def test_linear_schedule_matches_ho_et_al():
    b = make_betas("linear", 1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    # rescaled for other T: same endpoints times 1000/T
    assert make_betas("linear", 250)[-1].item() == pytest.approx(0.08)


def test_cosine_alpha_bar_closed_form():
    T = 1000
    s = Schedule.named("cosine", T)
    f = lambda u: math.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert (s.betas <= 0.999).all()


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_noise_shift_divides_every_snr_by_its_square(name):
    """Simple diffusion's shifted schedule: log-SNR(t) - 2 log(shift) at every step, ab -> 1 at t -> 0 kept."""
    base, shifted = Schedule.named(name, 1000), Schedule.named(name, 1000, 2.0)
    ab = base.alphas_cumprod
    logit = torch.log(ab / (1 - ab)) - 2 * math.log(2.0)  # the reference: shift the logit of alpha_bar
    assert torch.allclose(shifted.alphas_cumprod, torch.sigmoid(logit), rtol=1e-9, atol=1e-15)
    assert (shifted.betas > 0).all() and (shifted.alphas_cumprod < base.alphas_cumprod).all()
    if name == "cosine":  # the closed form of the shifted cosine: SNR(u) = 1 / (4 tan^2(...)), u = (t + 1) / T
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2  # noqa: E731
        for t in (0, 250, 700):
            snr = f((t + 1) / 1000) / (1 - f((t + 1) / 1000)) / 4
            assert shifted.alphas_cumprod[t].item() == pytest.approx(snr / (1 + snr), rel=1e-9)
    assert torch.equal(Schedule.named(name, 1000, 1.0).betas, base.betas)
    assert torch.equal(Schedule.from_settings({"noise_schedule": name, "diffusion_steps": 1000}).betas, base.betas)
    for bad in (0.0, -1.0, 100.0, True):
        with pytest.raises(ValueError, match="noise shift"):
            make_betas(name, 1000, bad)


def test_sqrt_linear_and_sqrt():
    b = make_betas("sqrt_linear", 1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b.sqrt().diff(), torch.full((999,), b.sqrt().diff()[0].item(), dtype=torch.float64))
    s = Schedule.named("sqrt", 1000)
    assert s.alphas_cumprod[499].item() == pytest.approx((1 - math.sqrt(0.5 + 1e-4)) / (1 - math.sqrt(1e-4)), rel=1e-9)


def test_unknown_schedule_names_choices():
    with pytest.raises(ValueError, match="cosine"):
        make_betas("quadratic", 10)


def test_q_sample_moments():
    s = Schedule.named("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7)
    for t in (0, 300, 999):
        tt = torch.full((x0.shape[0],), t)
        xt = q_sample(s, x0, tt, torch.randn(x0.shape, generator=g))
        ab = s.alphas_cumprod[t].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=5e-3)
        assert xt.var().item() == pytest.approx(1 - ab, abs=5e-3 + 0.01 * (1 - ab))


@pytest.mark.parametrize("target", TARGETS)
def test_conversions_round_trip(target):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    ab = torch.rand(8, 1, generator=g) * 0.98 + 0.01
    a, s = ab.sqrt(), (1 - ab).sqrt()
    xt = a * x0 + s * eps
    pred = training_target(target, x0, eps, a, s)
    e2, x2 = to_eps_x0(target, pred, xt, a, s)
    assert torch.allclose(e2, eps, atol=1e-5) and torch.allclose(x2, x0, atol=1e-5)


def test_posterior_matches_formula_and_bayes():
    s = Schedule.named("linear", 1000)
    t = 400
    ab, ab_prev, beta = (s.alphas_cumprod[t].item(), s.alphas_cumprod[t - 1].item(), s.betas[t].item())
    x0, xt = torch.tensor([[0.3]]), torch.tensor([[-0.5]])
    mean, var, _ = q_posterior(s, x0, xt, torch.tensor([t]))
    # Bayes: q(x_{t-1}|x0) = N(sqrt(ab_prev) x0, 1-ab_prev); q(x_t|x_{t-1}) = N(sqrt(1-beta) x_{t-1}, beta)
    prec = 1 / (1 - ab_prev) + (1 - beta) / beta
    exp_mean = (math.sqrt(ab_prev) * 0.3 / (1 - ab_prev) + math.sqrt(1 - beta) * -0.5 / beta) / prec
    assert mean.item() == pytest.approx(exp_mean, rel=1e-5)
    assert var.item() == pytest.approx(1 / prec, rel=1e-5)


def test_strided_schedule_keeps_alphas_cumprod():
    s = Schedule.named("cosine", 1000)
    kept = list(range(0, 1000, 37))
    r = s.strided(kept)
    assert np.allclose(r.alphas_cumprod.numpy(), s.alphas_cumprod[kept].numpy(), rtol=1e-12)


def test_linear_schedule_refuses_too_few_steps():
    with pytest.raises(ValueError, match="at least 21"):
        make_betas("linear", 20)
    assert (make_betas("linear", 21) < 1).all()


def test_vp_and_ve_coefficients_agree_for_floats_and_tensors():
    from difforge.diffusion.schedule import sigma_of, to_ve, to_vp, vp_coefs

    ab = Schedule.named("cosine", 1000).alphas_cumprod[[0, 10, 500, 999]]
    a, s = vp_coefs(ab)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(ab), rtol=0, atol=1e-15)
    torch.testing.assert_close(sigma_of(ab), s / a, rtol=1e-12, atol=0)  # sigma = s / a
    for i, v in enumerate(ab.tolist()):  # Python floats give the same bits as float64 tensors
        assert vp_coefs(v) == (a[i].item(), s[i].item()) and sigma_of(v) == sigma_of(ab)[i].item()
        x = torch.randn(3, dtype=torch.float64)
        torch.testing.assert_close(to_ve(x, sigma_of(v)), x / a[i], rtol=1e-12, atol=0)
        torch.testing.assert_close(to_vp(to_ve(x, sigma_of(v)), sigma_of(v)), x, rtol=1e-14, atol=0)

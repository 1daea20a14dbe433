"""Timestep samplers: unbiased importance weights, the warm-up, state round trip."""

import pytest
import torch

from difforge.diffusion.objective import UniformTimesteps as ReExported
from difforge.diffusion.timestep_samplers import LossSecondMomentTimesteps, UniformTimesteps, make_timestep_sampler

T = 20


def _loss_table():
    """A per-t loss with a spread like L_vlb's: huge at t=0, tiny in the middle, noisy everywhere."""
    t = torch.arange(T, dtype=torch.float64)
    mean = 0.01 + 5.0 * torch.exp(-t) + 0.2 * t / T
    return mean, 0.3 * mean  # mean and std of L_t


def _warmed(seed=0):
    s = LossSecondMomentTimesteps(T)
    mean, std = _loss_table()
    g = torch.Generator().manual_seed(seed)
    while not s.warmed_up():
        t, w = s.sample(16, g)
        assert torch.equal(w, torch.ones(16))  # uniform during the warm-up
        s.update(t, mean[t] + std[t] * torch.randn(16, generator=g, dtype=torch.float64))
    return s


def test_warm_up_is_uniform_until_every_t_has_ten_losses():
    s = LossSecondMomentTimesteps(T)
    assert torch.allclose(s.probabilities(), torch.full((T,), 1 / T, dtype=torch.float64))
    for k in range(10):
        s.update(torch.arange(T - 1), torch.full((T - 1,), float(k + 1)))
    assert not s.warmed_up()  # t = T-1 has no loss yet
    assert torch.allclose(s.probabilities(), torch.full((T,), 1 / T, dtype=torch.float64))
    t, w = s.sample(5000, torch.Generator().manual_seed(0))
    counts = torch.bincount(t, minlength=T).double()
    assert (counts - 250).abs().max() < 5 * 250**0.5  # draws look uniform
    s.update(torch.full((10,), T - 1), torch.ones(10))
    assert s.warmed_up()


def test_probabilities_follow_the_rms_and_history_keeps_the_last_ten():
    s = LossSecondMomentTimesteps(4)
    for k in range(12):  # t=0 sees 1..12; the history keeps 3..12
        s.update(torch.tensor([0, 1, 2, 3]), torch.tensor([k + 1.0, 2.0, 0.0, 4.0]))
    assert torch.equal(s.losses[0], torch.arange(3, 13, dtype=torch.float64))
    rms = torch.tensor([(torch.arange(3, 13, dtype=torch.float64) ** 2).mean().sqrt().item(), 2.0, 0.0, 4.0], dtype=torch.float64)
    expect = 0.999 * rms / rms.sum() + 0.001 / 4
    assert torch.allclose(s.probabilities(), expect)
    assert s.probabilities()[2] > 0  # the uniform share keeps every t reachable


def test_weights_average_to_one_and_the_estimate_is_unbiased():
    s = _warmed()
    p = s.probabilities()
    assert p.sum().item() == pytest.approx(1.0) and not torch.allclose(p, torch.full((T,), 1 / T, dtype=torch.float64))
    assert (p * (1.0 / (T * p))).sum().item() == pytest.approx(1.0, abs=1e-12)  # E_p[w] = 1 exactly
    g = torch.Generator().manual_seed(1)
    mean, std = _loss_table()
    t, w = s.sample(200_000, g)
    assert w.double().mean().item() == pytest.approx(1.0, abs=0.01)  # and by Monte Carlo
    losses = mean[t] + std[t] * torch.randn(len(t), generator=g, dtype=torch.float64)
    estimate = (w.double() * losses).mean().item()
    assert estimate == pytest.approx(mean.mean().item(), rel=0.01)  # the uniform average of L_t
    # importance sampling really lowers the variance of the estimate compared with uniform draws
    tu = torch.randint(0, T, (200_000,), generator=g)
    lu = mean[tu] + std[tu] * torch.randn(len(tu), generator=g, dtype=torch.float64)
    assert (w.double() * losses).var() < 0.5 * lu.var()


def test_state_round_trip_continues_identically():
    a = _warmed(seed=3)
    b = LossSecondMomentTimesteps(T)
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    assert b.warmed_up()
    ta, wa = a.sample(64, torch.Generator().manual_seed(9))
    tb, wb = b.sample(64, torch.Generator().manual_seed(9))
    assert torch.equal(ta, tb) and torch.equal(wa, wb)
    a.update(ta, torch.rand(64, dtype=torch.float64))
    assert not torch.equal(a.losses, b.losses)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.losses, b.losses) and torch.equal(a.counts, b.counts)
    b.load_state_dict({})  # a run that used the uniform sampler so far: keeps (fresh) state
    with pytest.raises(ValueError, match="diffusion_steps"):
        LossSecondMomentTimesteps(T + 1).load_state_dict(a.state_dict())


def test_uniform_and_factory():
    assert ReExported is UniformTimesteps
    u = make_timestep_sampler("uniform", T)
    t, w = u.sample(8, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < T and torch.equal(w, torch.ones(8)) and u.state_dict() == {}
    assert isinstance(make_timestep_sampler("loss-second-moment", T), LossSecondMomentTimesteps)
    with pytest.raises(ValueError, match="loss-second-moment"):
        make_timestep_sampler("lossaware", T)

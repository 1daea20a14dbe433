"""The K-step estimate of the variational bound against the full T-step value on a tiny network."""

import pytest
import torch

from difforge.diffusion.denoiser import Denoiser
from difforge.diffusion.likelihood import bits_per_dim
from difforge.diffusion.likelihood_estimate import (
    bits_per_dim_estimate,
    collapsed_strata_variance,
    dataset_bits_per_dim,
    strata,
    term_weights,
)
from difforge.diffusion.schedule import Schedule

T = 200


class TinyNet(torch.nn.Module):
    def __init__(self, out_mult=1):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 3 * out_mult, 3, padding=1)

    def forward(self, x, t, y=None):
        return 0.1 * self.c2(torch.nn.functional.silu(self.c1(x) + (t.float() / T)[:, None, None, None]))


@pytest.fixture(scope="module")
def setup():
    sched = Schedule.named("linear", T)
    den = Denoiser(TinyNet(), sched, clip_x0=True)
    x0 = torch.randint(0, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(3)).float() / 127.5 - 1
    full = bits_per_dim(den, x0, generator=torch.Generator().manual_seed(1))
    return den, x0, full


def _estimate(den, x0, k, t_seed=2):
    return bits_per_dim_estimate(den, x0, timesteps=k, generator=torch.Generator().manual_seed(1),
                                 t_generator=torch.Generator().manual_seed(t_seed))


def _se(e):
    return e["kl_var"].sum().sqrt().item() / e["kl_var"].numel()


def test_strata_cover_every_kl_step_once():
    w = term_weights(Schedule.named("linear", T))
    assert w[0] == 0 and (w[1:] > 0).all() and w[1] == w[1:].max() and w[1] > 5 * w[T // 4]  # largest near t = 0
    for k in (2, 3, 10, 57, T - 1, T):
        parts = strata(w, k)
        assert len(parts) == k - 1 and parts[0][0] == 1 and parts[-1][1] == T
        assert all(lo < hi for lo, hi in parts) and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert strata(w, T) == [(t, t + 1) for t in range(1, T)]
    for bad in (1, T + 1):
        with pytest.raises(ValueError, match="2 <= K"):
            strata(w, bad)


def test_k_equal_t_is_the_full_value_bit_for_bit(setup):
    den, x0, full = setup
    e = _estimate(den, x0, T)
    for key in ("total", "prior", "decoder", "kl"):
        assert torch.equal(e[key], full[key]), key
    assert (e["kl_var"] == 0).all()


def test_estimate_converges_to_the_full_value(setup):
    den, x0, full = setup
    ref = full["total"].mean().item()
    ses = []
    for k in (5, 10, 20, 50, 100):
        e = _estimate(den, x0, k)
        se = _se(e)
        ses.append(se)
        assert abs(e["total"].mean().item() - ref) <= 3 * se + 1e-9, (k, e["total"].mean().item(), ref, se)
        assert torch.equal(e["prior"], full["prior"]) and torch.equal(e["decoder"], full["decoder"])  # exact parts
    assert all(b < a for a, b in zip(ses, ses[1:])), ses  # the error bar shrinks as K grows
    assert ses[-1] < ses[0] / 10


def test_unbiased_and_the_error_bar_is_not_too_small(setup):
    """Over many timestep draws the mean is the full value and the spread is within the error bar."""
    den, x0, full = setup
    ref = full["total"].mean().item()
    runs = [_estimate(den, x0, 10, t_seed=s) for s in range(40)]
    means = torch.tensor([r["total"].mean().item() for r in runs], dtype=torch.float64)
    se = sum(_se(r) for r in runs) / len(runs)
    assert abs(means.mean().item() - ref) <= 3 * means.std().item() / len(runs) ** 0.5
    assert means.std().item() <= 1.5 * se  # collapsed strata err on the large side


def test_collapsed_strata_variance_closed_form():
    values = torch.tensor([[1.0, 3.0, 10.0, 10.0, 4.0]], dtype=torch.float64)
    masses, exact = [1.0, 1.0, 2.0, 2.0, 2.0], [True, False, False, False, False]
    # inexact strata 1..4 -> pairs (1, 2), (3, 4): per-mass values (3, 5) with M = 3, and (5, 2) with M = 4
    expect = 3.0**2 / 2 * ((3 - 4) ** 2 + (5 - 4) ** 2) + 4.0**2 / 2 * ((5 - 3.5) ** 2 + (2 - 3.5) ** 2)
    assert collapsed_strata_variance(values, masses, exact).item() == pytest.approx(expect)


def test_dataset_estimate_and_full_choice(setup):
    den, _, _ = setup
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    full = dataset_bits_per_dim(den, images, batch_size=3)
    same = dataset_bits_per_dim(den, images, batch_size=3, timesteps=T)
    est = dataset_bits_per_dim(den, images, batch_size=3, timesteps=20)
    assert "kl_var" not in full and "kl_var" in est and torch.equal(full["total"], same["total"])
    se = est["kl_var"].sum().sqrt().item() / 5
    assert abs(est["total"].mean().item() - full["total"].mean().item()) <= 3 * se


def test_bf16_network_calls_agree_with_fp32(setup):
    """bf16 autocast of an eps network moves the bound by far less than the estimate's error bar."""
    den, x0, _ = setup
    bf = den.with_options(autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    a, b = _estimate(den, x0, 20), _estimate(bf, x0, 20)
    assert abs(a["total"].mean().item() - b["total"].mean().item()) < 0.01


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_weights_are_defensive(name):
    """Every t keeps at least half a uniform share (bounded importance ratios), even where cosine clips beta_t to 0.999."""
    w = term_weights(Schedule.named(name, 1000))
    assert w[0] == 0 and w.sum().item() == pytest.approx(1.0)
    assert (w[1:] >= 0.5 / 999 - 1e-15).all()
    assert w[-1] < 2 / 999 and w[1] > 20 * w[-1]  # the clipped last betas do not grab the samples; t = 1 does

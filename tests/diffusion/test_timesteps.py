"""Respacing strings, step spacings and the sigma <-> t conversion."""

import math

import pytest
import torch

from difforge.diffusion.denoiser import alpha_bar_at
from difforge.diffusion.samplers import available
from difforge.diffusion.schedule import Schedule
from difforge.diffusion.timesteps import (
    SPACINGS,
    alpha_bars,
    default_spacing,
    sampling_timesteps,
    sigma_to_t,
    sigmas,
    space_timesteps,
)

LINEAR = Schedule.named("linear", 1000)


# -- improved-diffusion respacing ---------------------------------------------------------------


def test_ddim_respacing_finds_the_integer_stride():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim1000") == list(range(1000))
    assert space_timesteps(1000, "ddim1") == [0]


def test_section_counts_hand_computed():
    ts = space_timesteps(300, "10,15,20")
    assert len(ts) == 45
    # [0, 100): 10 steps, stride 99/9 = 11.
    assert ts[:10] == list(range(0, 100, 11))
    # [100, 200): 15 steps, stride 99/14 = 7.07 -> 100, 107, 114, 121, ... 199.
    assert ts[10:14] == [100, 107, 114, 121] and ts[24] == 199
    # [200, 300): 20 steps, stride 99/19 = 5.21 -> 200, 205, 210, 216, 221, ... 299.
    assert ts[25:30] == [200, 205, 210, 216, 221] and ts[-1] == 299


def test_uneven_sections_give_the_first_ones_an_extra_step():
    # T = 10 in 3 sections: sizes 4, 3, 3.
    assert space_timesteps(10, "2,2,2") == [0, 3, 4, 6, 7, 9]


def test_single_count_is_evenly_strided():
    assert space_timesteps(1000, "10") == list(range(0, 1000, 111))
    assert space_timesteps(1000, 10) == list(range(0, 1000, 111))
    ts = space_timesteps(1000, "250")
    assert len(ts) == 250 and ts[0] == 0 and ts[-1] == 999 and ts[1] == 4


@pytest.mark.parametrize(
    "spec,match",
    [
        ("ddim7", "no integer stride"),  # T=10: strides give 10, 5, 4, 3, 2, 1 steps
        ("abc", "bad respacing"),
        ("", "bad respacing"),
        ("10,,5", "bad respacing"),
        ("-5", "bad respacing"),
        ("ddim", "bad respacing"),
        ("ddim0", "positive"),
        ("11", "cannot take 11"),
        ("0,0", "keeps no timestep"),
        ("2.5", "bad respacing"),
    ],
)
def test_bad_respacing_strings(spec, match):
    with pytest.raises(ValueError, match=match):
        space_timesteps(10, spec)


def test_strided_betas_reproduce_alphas_cumprod_at_kept_steps():
    for name in ("linear", "cosine"):
        sched = Schedule.named(name, 1000)
        for spec in ("ddim50", "10,15,20", "7"):
            kept = space_timesteps(1000, spec)
            strided = sched.strided(kept)
            torch.testing.assert_close(strided.alphas_cumprod, sched.alphas_cumprod[kept], rtol=1e-8, atol=0)


# -- spacings -------------------------------------------------------------------------------------


def test_uniform_spacing_includes_both_ends():
    assert sampling_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert sampling_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert sampling_timesteps(1000, 2) == [999, 0]
    assert sampling_timesteps(1000, 1) == [999]
    ts = sampling_timesteps(1000, 37)
    assert len(set(ts)) == 37 and all(isinstance(t, int) for t in ts)


def test_respacing_strings_pass_through():
    assert sampling_timesteps(1000, "ddim50") == list(range(980, -1, -20))
    assert sampling_timesteps(1000, None, "ddim50") == list(range(980, -1, -20))
    assert sampling_timesteps(1000, 50, "ddim50") == list(range(980, -1, -20))
    assert sampling_timesteps(1000, "25") == sampling_timesteps(1000, 25)
    assert sampling_timesteps(1000, "ddim50", "logsnr", LINEAR) == list(range(980, -1, -20))  # steps string wins
    with pytest.raises(ValueError, match="keeps 50 steps"):
        sampling_timesteps(1000, 20, "ddim50")


def test_logsnr_spacing_is_uniform_in_log_snr():
    ts = sampling_timesteps(1000, 12, "logsnr", LINEAR)
    assert ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    log_snr = [-2 * math.log(s) for s in sigmas(LINEAR, ts)]
    steps = [b - a for a, b in zip(log_snr, log_snr[1:])]
    assert max(steps) - min(steps) < 1e-5 * abs(steps[0])
    assert any(t != int(t) for t in ts)  # fractional


def test_karras_spacing_is_uniform_in_sigma_to_the_one_over_rho():
    ts = sampling_timesteps(1000, 10, "karras", LINEAR)
    assert ts[0] == 999 and ts[-1] == 0
    roots = [s ** (1 / 7) for s in sigmas(LINEAR, ts)]
    steps = [b - a for a, b in zip(roots, roots[1:])]
    assert max(steps) - min(steps) < 1e-5 * abs(steps[0])


@pytest.mark.parametrize(
    "args,match",
    [
        ((1000, 0), r"steps must be in \[1, 1000\]"),
        ((1000, 1001), r"steps must be in \[1, 1000\]"),
        ((1000, 10, "karras"), "needs the schedule"),
        ((1000, 10, "logsnr"), "needs the schedule"),
        ((1000, 10, "quadratic"), "bad respacing"),
        ((1000, None), "needs a number of steps"),
    ],
)
def test_bad_sampling_timesteps(args, match):
    with pytest.raises(ValueError, match=match):
        sampling_timesteps(*args)


def test_every_sampler_has_a_valid_default_spacing():
    for name in available():
        assert default_spacing(name) in SPACINGS
    assert default_spacing("no-such-sampler") == "uniform"


# -- sigma <-> t ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_sigma_to_t_inverts_alpha_bar_at(name):
    sched = Schedule.named(name, 1000)
    t = torch.cat([torch.rand(200, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 999,
                   torch.tensor([0.0, 1.0, 500.0, 998.5, 999.0], dtype=torch.float64)])
    ab = alpha_bar_at(sched, t)
    back = sigma_to_t(sched, ((1 - ab) / ab).sqrt())
    torch.testing.assert_close(back, t, rtol=0, atol=1e-8)


def test_sigma_to_t_clamps_outside_the_table():
    smax, smin = sigmas(LINEAR, [999, 0])
    assert sigma_to_t(LINEAR, torch.tensor([smax * 10, smin / 10])).tolist() == [999.0, 0.0]


def test_alpha_bars_validates_the_sampler_timesteps():
    assert alpha_bars(LINEAR, [999, 0]) == pytest.approx([LINEAR.alphas_cumprod[999].item(), LINEAR.alphas_cumprod[0].item()], rel=1e-12)
    with pytest.raises(ValueError, match="descending"):
        alpha_bars(LINEAR, [0, 10])
    with pytest.raises(ValueError, match="descending"):
        alpha_bars(LINEAR, [10, 10, 0])
    with pytest.raises(ValueError, match=r"lie in \[0, 999\]"):
        alpha_bars(LINEAR, [1000, 0])
    with pytest.raises(ValueError, match="empty"):
        alpha_bars(LINEAR, [])

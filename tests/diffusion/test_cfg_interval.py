"""Classifier-free guidance in a limited interval of noise levels (Kynkaenniemi et al. 2024).

Full range = plain CFG bit for bit; outside the interval one forward of batch B and the
conditional prediction (cfg = 1); mixed batches split; samplers see fewer network rows.
"""

import math
import json

import pytest
import torch

from difforge.diffusion.denoiser import Denoiser, in_cfg_interval
from difforge.diffusion.guidance import TwoModelCFG
from difforge.diffusion.samplers import get_sampler
from difforge.diffusion.schedule import Schedule, alpha_bar_at, sigma_of
from difforge.diffusion.timesteps import default_spacing, sampling_timesteps
from difforge.errors import UserError
from difforge.pipeline.config import (CFG_INTERVAL, TEXT_CFG_INTERVAL, SampleConfig, default_cfg_interval, interval_from_json,
                                      interval_json)

SCHEDULE = Schedule.named("linear", 1000)
FULL = (0.0, math.inf)


class CountingNet(torch.nn.Module):
    """A small conv net conditioned on t and y that records the batch size of every call."""

    def __init__(self, num_classes=3, out_mult=1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(2, 2 * out_mult, 3, padding=1)
        self.emb = torch.nn.Embedding(num_classes + 1, 2 * out_mult)
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append(x.shape[0])
        e = self.emb(y) if y is not None else 0.0 * self.emb.weight[:1]
        return torch.tanh(self.conv(x) + e[:, :, None, None] + 1e-3 * t.float()[:, None, None, None])


def _inputs(t):
    g = torch.Generator().manual_seed(0)
    return torch.randn(len(t), 2, 6, 6, generator=g), torch.tensor(t), torch.tensor([0, 1, 2, 1][: len(t)])


def _sigma(t):
    """sigma at t as the denoiser computes it (through alpha_bar_at, as for fractional t)."""
    return float(sigma_of(alpha_bar_at(SCHEDULE, torch.tensor([float(t)]))))


def _same(a, b):
    assert torch.equal(a.eps, b.eps) and torch.equal(a.x0, b.x0)
    assert (a.var_frac is None and b.var_frac is None) or torch.equal(a.var_frac, b.var_frac)


@pytest.mark.parametrize("target,learn_sigma,rescale", [("eps", False, 0.0), ("v", True, 0.7), ("x0", False, 0.5)])
def test_full_interval_is_plain_cfg_bit_for_bit(target, learn_sigma, rescale):
    net = CountingNet(out_mult=2 if learn_sigma else 1)
    x, t, y = _inputs([10, 200, 500, 900])
    kw = dict(target=target, learn_sigma=learn_sigma, num_classes=3, cfg_scale=3.0, cfg_rescale=rescale)
    plain = Denoiser(net, SCHEDULE, **kw)(x, t, y)
    net.calls.clear()
    full = Denoiser(net, SCHEDULE, cfg_interval=FULL, **kw)(x, t, y)
    assert net.calls == [8]  # still one batched forward of cond + uncond
    _same(full, plain)


def test_outside_the_interval_one_forward_of_batch_b_equal_to_cfg_one():
    net = CountingNet()
    x, t, y = _inputs([10, 20, 30, 40])  # sigma(40) ~ 0.13
    interval = (1.0, 10.0)
    assert not in_cfg_interval(SCHEDULE, t, interval).any()
    cond = Denoiser(net, SCHEDULE, num_classes=3, cfg_scale=1.0)(x, t, y)
    net.calls.clear()
    out = Denoiser(net, SCHEDULE, num_classes=3, cfg_scale=4.0, cfg_interval=interval)(x, t, y)
    assert net.calls == [4]
    _same(out, cond)


def test_interval_is_half_open_in_sigma():
    t = torch.tensor([100, 400, 700])
    lo, hi = _sigma(100), _sigma(700)
    assert in_cfg_interval(SCHEDULE, t, (lo, hi)).tolist() == [False, True, True]
    assert in_cfg_interval(SCHEDULE, t, None).all()
    assert in_cfg_interval(SCHEDULE, torch.tensor([400.5]), (_sigma(400), _sigma(401))).all()  # fractional t


def test_mixed_batch_guides_only_the_samples_inside():
    net = CountingNet(out_mult=2)
    x, t, y = _inputs([10, 200, 500, 900])
    interval = (_sigma(100), _sigma(600))  # 200 and 500 inside
    kw = dict(learn_sigma=True, num_classes=3, cfg_rescale=0.5)
    out = Denoiser(net, SCHEDULE, cfg_scale=3.0, cfg_interval=interval, **kw)(x, t, y)
    assert sorted(net.calls) == [2, 4]  # 2 samples x (cond + uncond), 2 samples cond only
    guided = Denoiser(net, SCHEDULE, cfg_scale=3.0, **kw)(x, t, y)
    plain = Denoiser(net, SCHEDULE, cfg_scale=1.0, **kw)(x, t, y)
    inside = torch.tensor([False, True, True, False])
    for field in ("eps", "x0", "var_frac"):
        got, g, p = getattr(out, field), getattr(guided, field), getattr(plain, field)
        torch.testing.assert_close(got[inside], g[inside], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[~inside], p[~inside], rtol=1e-5, atol=1e-6)


def test_two_model_cfg_interval():
    net_c, net_u = CountingNet(seed=0), CountingNet(num_classes=0, seed=1)
    cond = Denoiser(net_c, SCHEDULE, num_classes=3, cfg_scale=1.0)
    uncond = Denoiser(net_u, SCHEDULE)
    x, t, y = _inputs([10, 200, 500, 900])
    _same(TwoModelCFG(cond, uncond, 2.0, cfg_interval=FULL)(x, t, y), TwoModelCFG(cond, uncond, 2.0)(x, t, y))
    # the interval is taken from the conditional denoiser when not given
    assert TwoModelCFG(cond.with_options(cfg_interval=(0.5, 2.0)), uncond, 2.0).cfg_interval == (0.5, 2.0)
    net_u.calls.clear()
    xs, ts, ys = _inputs([10, 20, 30])
    out = TwoModelCFG(cond, uncond, 2.0, cfg_interval=(1.0, 10.0))(xs, ts, ys)
    assert net_u.calls == []  # no unconditional call outside
    _same(out, TwoModelCFG(cond, uncond, 0.0)(xs, ts, ys))
    interval = (_sigma(100), _sigma(600))
    mixed = TwoModelCFG(cond, uncond, 2.0, cfg_interval=interval)(x, t, y)
    assert net_u.calls == [2]
    full, plain = TwoModelCFG(cond, uncond, 2.0)(x, t, y), cond(x, t, y)
    inside = torch.tensor([False, True, True, False])
    torch.testing.assert_close(mixed.eps[inside], full.eps[inside], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed.eps[~inside], plain.eps[~inside], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m"])
def test_sampler_calls_per_step(sampler):
    """A whole sampling run: batch 2B at the steps inside the interval, B outside; full range = plain."""
    net = CountingNet()
    b, steps = 3, 12
    ts = sampling_timesteps(SCHEDULE.num_steps, steps, default_spacing(sampler), SCHEDULE)
    x_T = torch.randn(b, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])
    interval = (0.5, 5.0)
    run = lambda den: get_sampler(sampler)(den, x_T, SCHEDULE, ts, y=y, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        plain = run(Denoiser(net, SCHEDULE, num_classes=3, cfg_scale=3.0))
        net.calls.clear()
        full = run(Denoiser(net, SCHEDULE, num_classes=3, cfg_scale=3.0, cfg_interval=FULL))
        assert torch.equal(full, plain)
        net.calls.clear()
        limited = run(Denoiser(net, SCHEDULE, num_classes=3, cfg_scale=3.0, cfg_interval=interval))
    inside = in_cfg_interval(SCHEDULE, torch.as_tensor([float(v) for v in ts]), interval)
    assert 0 < int(inside.sum()) < len(ts)
    assert sorted(net.calls) == sorted([2 * b if i else b for i in inside.tolist()])
    assert not torch.equal(limited, plain)


def test_sample_config_and_cli_flag():
    assert SampleConfig().cfg_interval == "auto"  # the model's measured one (pipeline/config.py)
    assert CFG_INTERVAL == (0.1, 3.0) and TEXT_CFG_INTERVAL == (0.1, math.inf)
    assert default_cfg_interval() == CFG_INTERVAL and default_cfg_interval(text=True) == TEXT_CFG_INTERVAL
    SampleConfig().check()
    SampleConfig(cfg_interval=None).check()  # every step
    SampleConfig(cfg_interval=(0.28, 5.42)).check()
    SampleConfig(cfg_interval=(0.0, math.inf)).check()
    for bad in ((2.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0), (1.0,), "sometimes"):
        with pytest.raises(UserError, match="cfg_interval"):
            SampleConfig(cfg_interval=bad).check()
    import argparse

    from difforge.cli.sample import add_sampling_flags, sample_config

    p = argparse.ArgumentParser()
    add_sampling_flags(p)
    assert sample_config(p.parse_args([])).cfg_interval == "auto"
    assert sample_config(p.parse_args(["--cfg-interval", "AUTO"])).cfg_interval == "auto"
    assert sample_config(p.parse_args(["--cfg-interval", "all"])).cfg_interval is None
    assert sample_config(p.parse_args(["--cfg-interval", "0.28,inf"])).cfg_interval == (0.28, math.inf)
    with pytest.raises(SystemExit):
        p.parse_args(["--cfg-interval", "0.28"])


def test_pipeline_denoiser_takes_the_interval_from_sample_config():
    from difforge.models import registry
    from difforge.pipeline import Pipeline

    net = registry.build("unet-tiny", image_size=16, in_channels=3, num_classes=2)
    meta = {"network": {"name": "unet-tiny", "config": net.config},
            "diffusion": {"noise_schedule": "linear", "diffusion_steps": 100, "target": "eps"},
            "data": {"image_size": 16, "channels": 3, "class_names": ["a", "b"]}}
    pipe = Pipeline(net, meta, torch.device("cpu"), "fp32")
    assert pipe.denoiser(SampleConfig()).cfg_interval == CFG_INTERVAL  # "auto" on a class model
    assert pipe.describe()["default_cfg_interval"] == [0.1, 3.0]
    assert pipe.denoiser(SampleConfig(cfg_interval=None)).cfg_interval is None
    assert pipe.denoiser(SampleConfig(cfg_interval=(0.5, 2.0))).cfg_interval == (0.5, 2.0)


def test_interval_json_round_trip():
    for iv in (None, (0.1, 3.0), (0.28, math.inf), (0.0, 1e9)):
        text = json.dumps(interval_json(iv), allow_nan=False)  # strict JSON: no Infinity
        assert interval_from_json(json.loads(text)) == iv


def test_default_sampling_guides_only_inside_the_default_interval(tiny_model):
    """A default request runs the unconditional half only at the steps whose sigma is in CFG_INTERVAL."""
    from difforge.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(tiny_model)
    rows = []
    hook = pipe.net.register_forward_pre_hook(lambda _m, a: rows.append(a[0].shape[0]))
    try:
        default = pipe.generate(num=2, class_label=0, seed=3, steps=10, cfg=3.0)
        n_default, rows[:] = list(rows), []
        every = pipe.generate(num=2, class_label=0, seed=3, steps=10, cfg=3.0, cfg_interval=None)
        n_every = list(rows)
    finally:
        hook.remove()
    ts = pipe.timesteps(SampleConfig(steps=10))
    inside = in_cfg_interval(pipe.schedule, torch.as_tensor([float(t) for t in ts]), CFG_INTERVAL)
    assert 0 < int(inside.sum()) < len(ts)
    assert n_every == [4] * len(ts) and sorted(n_default) == sorted(4 if i else 2 for i in inside.tolist())
    assert not torch.equal(default.images, every.images)

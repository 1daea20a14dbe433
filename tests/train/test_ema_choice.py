"""Several EMA lengths tracked at once equal lone EMAs bit for bit; power-function EMAs follow
EDM2's t^gamma profile; the held-out loss chooses."""

import math

import pytest
import torch

from difforge.data.source import TrainingImages
from difforge.modelfile import load_model_file
from difforge.train.ema import EMA, PowerEMA, power_gamma
from difforge.train.trainer import Trainer
from difforge.train.validation import hold_out, hold_out_count

from ..conftest import tiny_overrides


def test_multi_ema_equals_independent_emas():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    multi = EMA(net, 0.995, extra=[0.999, 0.9999], power=[0.05, 0.2])
    alone = {**{repr(d): EMA(net, d) for d in (0.995, 0.999, 0.9999)}, **{f"p{s!r}": PowerEMA(net, s) for s in (0.05, 0.2)}}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(25):
        net(torch.randn(16, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        multi.update(net)
        for e in alone.values():
            e.update(net)
    for d, shadow in multi.all().items():
        for a, b in zip(shadow.state_dict().values(), alone[d].shadow.state_dict().values()):
            assert torch.equal(a, b)
    # through the training state's extra tensors and back
    assert set(multi.all()) == set(alone)
    again = EMA(net, 0.995, extra=[0.999, 0.9999], power=[0.05, 0.2])
    again.load_state_dict(multi.state_dict(), multi.updates, multi.extra_tensors())
    for d, shadow in again.all().items():
        for a, b in zip(shadow.state_dict().values(), alone[d].shadow.state_dict().values()):
            assert torch.equal(a, b)


def test_power_gamma_matches_edm2():
    # EDM2 (Karras et al. 2024) quotes gamma 16.97 for sigma_rel 0.05 and 6.94 for 0.10
    assert power_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert power_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    with pytest.raises(ValueError):
        power_gamma(0.3)


class _Weights(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))


@pytest.mark.parametrize("sigma_rel", [0.05, 0.2])
def test_power_ema_averages_the_history_with_a_t_gamma_profile(sigma_rel):
    """Feed weights that are the unit vector e_tau at step tau: the EMA is then the averaging
    profile itself, compared with the normalised tau^gamma and its relative width sigma_rel."""
    t = 400
    net = _Weights(t)
    ema = PowerEMA(net, sigma_rel)
    for tau in range(t):
        with torch.no_grad():
            net.w.zero_()
            net.w[tau] = 1.0
        ema.update(net)
    profile = ema.shadow.w.detach()
    tau = torch.arange(1, t + 1, dtype=torch.float64)
    ref = tau ** ema.gamma
    ref /= ref.sum()
    assert float(profile.sum()) == pytest.approx(1.0, abs=1e-9)  # an average
    assert float((profile - ref).abs().sum()) < 0.02  # total variation from the exact profile
    mean = float((profile * tau).sum())
    std = math.sqrt(float((profile * (tau - mean) ** 2).sum()))
    assert std / t == pytest.approx(sigma_rel, rel=0.03)


def test_fixed_decays_collapse_under_warmup_but_power_emas_stay_apart():
    """Why power EMAs are the default candidates: 0.995 and 0.999 with warm-up are the same EMA
    for the first ~1,800 updates; EMAs of different sigma_rel are not."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 3)
    ema = EMA(net, 0.995, extra=[0.999], power=[0.05, 0.2])
    for _ in range(300):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        ema.update(net)
    w = {k: m.weight for k, m in ema.all().items()}
    assert torch.equal(w["0.995"], w["0.999"])
    assert (w["p0.05"] - w["p0.2"]).abs().max() > 1.0
    assert (w["p0.05"] - w["0.995"]).abs().max() > 0.1


def test_hold_out_sizes_and_classes():
    assert [hold_out_count(n) for n in (20, 79, 80, 200, 600, 5000)] == [0, 0, 8, 10, 30, 64]
    labels = torch.tensor([0] * 3 + [1] * 97)
    data = TrainingImages(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), labels, ["a", "b"], "x")
    train, val = hold_out(data, seed=0)
    assert len(val.images) == 8 and len(train.images) == 92
    assert (train.labels == 0).sum() >= 2  # a small class keeps its images
    assert not set(val.images.flatten().tolist()) & set(train.images.flatten().tolist())
    assert torch.equal(hold_out(data, seed=0)[1].images, val.images)  # the same split every time (resume)


def _tensors(path):
    return load_model_file(path)[0]


def test_run_chooses_the_lowest_held_out_loss_and_tracks_like_a_lone_ema(tmp_path):
    over = dict(builtin_per_class=20, max_steps=6, ema_warmup=False)  # 80 images: 8 held out
    r = Trainer(progress=False, **tiny_overrides(tmp_path, run="multi", ema_decay=0.5, ema_extra=[0.9, 0.99], ema_power=[0.1],
                                                 keep_all_ema=True, **over)).fit()
    cdir = r.run_dir / "checkpoints"
    meta = load_model_file(cdir / "ema.safetensors")[1]
    losses = meta["train"]["held_out_loss"]
    assert set(losses) == {"0.5", "0.9", "0.99", "p0.1"}
    assert len(set(losses.values())) == 4  # four different EMAs
    best = min(losses, key=losses.get)
    assert meta["train"]["ema"] == best
    assert meta["train"].get("ema_decay", meta["train"].get("ema_sigma_rel")) == float(best.lstrip("p"))
    chosen = _tensors(cdir / "ema.safetensors")
    assert all(torch.equal(v, _tensors(cdir / f"ema_{best}.safetensors")[k]) for k, v in chosen.items())
    assert "EMA chosen on 8 held-out images" in (r.run_dir / "log.txt").read_text()
    assert "8 more held out to choose the EMA" in (r.run_dir / "log.txt").read_text()
    # the extra 0.9 EMA equals the EMA of a run whose only decay is 0.9
    lone = Trainer(progress=False, **tiny_overrides(tmp_path, run="lone", ema_decay=0.9, ema_extra=[], ema_power=[],
                                                    keep_all_ema=True, **over)).fit()
    a, b = _tensors(cdir / "ema_0.9.safetensors"), _tensors(lone.run_dir / "checkpoints" / "ema_0.9.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

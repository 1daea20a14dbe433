"""Several EMA lengths tracked at once equal lone EMAs bit for bit; the held-out loss chooses."""

import torch

from difforge.data.source import TrainingImages
from difforge.modelfile import load_model_file
from difforge.train.ema import EMA
from difforge.train.trainer import Trainer
from difforge.train.validation import hold_out, hold_out_count

from ..conftest import tiny_overrides


def test_multi_ema_equals_independent_emas():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    multi = EMA(net, 0.995, extra=[0.999, 0.9999])
    alone = {d: EMA(net, d) for d in (0.995, 0.999, 0.9999)}
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
    again = EMA(net, 0.995, extra=[0.999, 0.9999])
    again.load_state_dict(multi.state_dict(), multi.updates, multi.extra_tensors())
    for d, shadow in again.all().items():
        for a, b in zip(shadow.state_dict().values(), alone[d].shadow.state_dict().values()):
            assert torch.equal(a, b)


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
    r = Trainer(progress=False, **tiny_overrides(tmp_path, run="multi", ema_decay=0.5, ema_extra=[0.9, 0.99],
                                                 keep_all_ema=True, **over)).fit()
    cdir = r.run_dir / "checkpoints"
    meta = load_model_file(cdir / "ema.safetensors")[1]
    losses = {float(k): v for k, v in meta["train"]["held_out_loss"].items()}
    assert set(losses) == {0.5, 0.9, 0.99}
    best = min(losses, key=losses.get)
    assert meta["train"]["ema_decay"] == best
    chosen = _tensors(cdir / "ema.safetensors")
    assert all(torch.equal(v, _tensors(cdir / f"ema_{best:g}.safetensors")[k]) for k, v in chosen.items())
    assert "EMA chosen on 8 held-out images" in (r.run_dir / "log.txt").read_text()
    assert "8 more held out to choose the EMA" in (r.run_dir / "log.txt").read_text()
    # the extra 0.9 EMA equals the EMA of a run whose only decay is 0.9
    lone = Trainer(progress=False, **tiny_overrides(tmp_path, run="lone", ema_decay=0.9, ema_extra=[], keep_all_ema=True, **over)).fit()
    a, b = _tensors(cdir / "ema_0.9.safetensors"), _tensors(lone.run_dir / "checkpoints" / "ema_0.9.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

import os

import pytest
import torch

from difforge.atomic import atomic_write, write_text
from difforge.errors import UserError
from difforge.modelfile import load_model_file, load_weights_into
from difforge.train import checkpoint as ckpt
from difforge.train.ema import EMA
from difforge.train.optim import build_optimizer, lr_factor


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_training_state_round_trip_restores_optimizer_exactly(tmp_path):
    net = _net()
    opt = build_optimizer(net.parameters(), "adamw", 1e-2, 0.01, torch.device("cpu"))
    ema = EMA(net, 0.9)
    for _ in range(3):
        net(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update(net)
    path = ckpt.save_training_state(
        tmp_path / "state.safetensors", model=net.state_dict(), ema=ema.state_dict(), optimizer=opt.state_dict(),
        extra_tensors={"hist": torch.arange(3)}, model_meta={"network": {}}, loop={"step": 3, "ema_updates": 3},
    )
    st = ckpt.load_training_state(path)
    net2 = _net()
    load_weights_into(net2, st["model"], path)
    opt2 = build_optimizer(net2.parameters(), "adamw", 1e-2, 0.01, torch.device("cpu"))
    opt2.load_state_dict(st["optimizer"])
    x = torch.randn(5, 3)
    for n, o in ((net, opt), (net2, opt2)):
        n(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(st["extra"]["hist"], torch.arange(3)) and st["loop"]["step"] == 3
    # a state file also serves as a model file (its EMA weights)
    tensors, meta = load_model_file(path)
    assert torch.equal(tensors["0.weight"], ema.state_dict()["0.weight"])


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    p = tmp_path / "a.txt"
    write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert p.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_atomic_write_disk_full_is_a_user_error(tmp_path, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UserError, match="disk full"):
        write_text(tmp_path / "x.txt", "data")
    assert list(tmp_path.iterdir()) == []


def test_lr_schedules():
    assert lr_factor(0, 100, "constant") == 1.0
    assert lr_factor(50, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(0, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(0, 100, "warmup_cosine", warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, "warmup_cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(55, 100, "warmup_cosine", warmup_steps=10) == pytest.approx(0.5)


def test_ema_update_formula():
    net = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(net, decay=0.9, warmup=False)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    assert torch.allclose(ema.shadow.weight, 0.9 * start + 0.1 * (start + 1.0))
    warm = EMA(net, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)

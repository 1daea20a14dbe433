import json
import os

import pytest
import torch

from difforge.atomic import atomic_write, write_text
from difforge.errors import CheckpointError, UserError
from difforge.train import checkpoint as ckpt
from difforge.train.ema import EMA
from difforge.train.optim import build_optimizer, lr_factor


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_model_file_round_trip_and_metadata(tmp_path):
    net = _net()
    meta = {"network": {"name": "x", "config": {"a": [1, 2]}}, "data": {"class_names": ["a", "b"]}}
    path = ckpt.save_model_file(tmp_path / "m.safetensors", net.state_dict(), meta)
    tensors, back = ckpt.load_model_file(path)
    assert back["network"] == meta["network"] and back["format"] == ckpt.MODEL_FORMAT
    for k, v in net.state_dict().items():
        assert torch.equal(tensors[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_pickle_and_missing_files_are_refused_with_messages(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_model_file(tmp_path / "nope.safetensors")
    pt = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, pt)
    with pytest.raises(CheckpointError, match="pickle"):
        ckpt.load_model_file(pt)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ckpt.load_model_file(junk)
    with pytest.raises(CheckpointError, match="folder"):
        ckpt.load_model_file(tmp_path)


def test_truncated_model_file_is_detected(tmp_path):
    path = ckpt.save_model_file(tmp_path / "m.safetensors", _net().state_dict(), {"network": {}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(CheckpointError):
        ckpt.load_model_file(path)


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
    ckpt.load_weights_into(net2, st["model"], path)
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
    tensors, meta = ckpt.load_model_file(path)
    assert torch.equal(tensors["0.weight"], ema.state_dict()["0.weight"])


def test_mismatched_weights_name_the_layers(tmp_path):
    small = torch.nn.Linear(3, 4)
    big = torch.nn.Linear(3, 5)
    with pytest.raises(CheckpointError, match=r"weight \(5, 3\) vs \(4, 3\)"):
        ckpt.load_weights_into(small, big.state_dict(), "f")


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

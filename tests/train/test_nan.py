"""A diverging run stops with one line naming the step, and keeps its last good checkpoint."""

import pytest
import torch
from safetensors.torch import load_file

from difforge.errors import CheckpointError
from difforge.modelfile import read_metadata, save_model_file
from difforge.train.guards import TrainingDiverged
from difforge.train.trainer import Trainer
from tests.conftest import tiny_overrides


def _first_param(trainer):
    return next(trainer.net.parameters())


def _poison_weights(at):
    def cb(trainer, step, loss):
        if step == at:
            with torch.no_grad():
                _first_param(trainer).fill_(float("nan"))
    return cb


def _poison_grads(at):
    def cb(trainer, step, loss):
        if step == at:  # the loss stays finite; the next backward gives NaN gradients
            _first_param(trainer).register_hook(lambda g: g * float("nan"))
    return cb


def _assert_kept(run_dir, step):
    cdir = run_dir / "checkpoints"
    assert read_metadata(cdir / "state.safetensors")["loop"]["step"] == step
    for name in ("ema.safetensors", "last.safetensors", "state.safetensors"):
        for k, v in load_file(str(cdir / name)).items():
            assert torch.isfinite(v).all(), (name, k)


@pytest.mark.parametrize("poison, what", [(_poison_weights, "loss became nan at step 8"),
                                          (_poison_grads, "a gradient became nan at step 8")])
def test_nan_loss_or_gradient_stops_and_keeps_the_last_checkpoint(tmp_path, poison, what):
    trainer = Trainer(progress=False, callbacks=[poison(7)], **tiny_overrides(tmp_path, max_steps=20, checkpoint_every=5))
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert what in msg and "\n" not in msg and "step 5" in msg and "kept" in msg, msg
    assert isinstance(e.value, FloatingPointError)  # the CLI's exit status 3
    _assert_kept(trainer.run_dir, 5)


def test_nan_weights_are_never_saved(tmp_path):
    # poisoned right before the step-10 checkpoint: the loss has not seen it yet, the save guard has
    trainer = Trainer(progress=False, callbacks=[_poison_weights(10)], **tiny_overrides(tmp_path, max_steps=20, checkpoint_every=5))
    with pytest.raises(TrainingDiverged, match="became NaN/Inf by step 10"):
        trainer.fit()
    _assert_kept(trainer.run_dir, 5)


def test_save_model_file_refuses_nan(tmp_path):
    good = tmp_path / "m.safetensors"
    save_model_file(good, {"w": torch.ones(3)}, {"kind": "diffusion"})
    before = good.read_bytes()
    with pytest.raises(CheckpointError, match=r"not writing .*m\.safetensors: NaN/Inf weights in 1 of 2 tensors \(w\).*kept"):
        save_model_file(good, {"w": torch.tensor([1.0, float("inf"), 0.0]), "b": torch.zeros(1)}, {"kind": "diffusion"})
    assert good.read_bytes() == before


def test_cli_exit_status_and_one_line(tmp_path, monkeypatch, capsys):
    from difforge.cli import main as cli_main

    def fit(self):
        raise TrainingDiverged("training stopped: the loss became nan at step 3; lower --lr")

    monkeypatch.setattr(Trainer, "fit", fit)
    assert cli_main.main(["train", "--runs-dir", str(tmp_path), "--max-steps", "2"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("difforge train: error: training stopped: the loss became nan at step 3") and "\n" not in err

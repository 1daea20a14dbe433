"""TensorBoard: the event files hold the metrics.csv columns as scalars, previews as images, the config as text."""

import sys

import numpy as np
import pytest

from difforge.errors import ConfigError
from difforge.train.tensorboard import TensorBoardWriter, replay

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(log_dir):
    ea = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_live_writer_scalars_image_text(tmp_path):
    with TensorBoardWriter(tmp_path, config_text="train:\n  lr: 0.001\n") as tb:
        for step in (1, 2, 3):
            tb.log_metrics(step, {"step": step, "epoch": step / 3, "loss": 1.0 / step, "mse": 0.5 / step, "lr": 1e-3,
                                  "images_per_s": 100.0 + step, "elapsed_s": step * 0.5}, time_fraction=step / 10)
        tb.log_metrics(3, {"step": 3, "fid": 55.5, "kid": ""})  # an evaluation row; empty cells are skipped
        tb.add_image(np.full((10, 12, 3), 200, np.uint8), step=3)
    ea = read_events(tmp_path / "tb")
    tags = ea.Tags()
    assert {"loss", "mse", "lr", "images_per_s", "epoch", "elapsed_s", "time_budget_fraction", "fid"} <= set(tags["scalars"])
    assert "kid" not in tags["scalars"] and "step" not in tags["scalars"]
    assert [e.value for e in ea.Scalars("loss")] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [e.step for e in ea.Scalars("time_budget_fraction")] == [1, 2, 3]
    assert tags["images"] == ["previews"]
    img = ea.Images("previews")[0]
    assert (img.step, img.width, img.height) == (3, 12, 10)
    assert any(t.startswith("config") for t in tags["tensors"])


def test_replay_of_a_run(tmp_path):
    from tests.export.runkit import train_tiny_run

    run = train_tiny_run(tmp_path)
    replay(run)
    replay(run)  # a second replay replaces the first instead of doubling every point
    ea = read_events(run / "tb")
    assert {"loss", "lr", "images_per_s"} <= set(ea.Tags()["scalars"])
    assert [e.step for e in ea.Scalars("loss")] == list(range(1, 13))
    assert [e.step for e in ea.Images("previews")] == [4, 8, 12]


def test_missing_package_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'difforge\[tb\]'") as e:
        TensorBoardWriter(tmp_path)
    assert "\n" not in str(e.value)


def test_training_with_tensorboard_writes_events_and_the_report(tmp_path):
    """`train --tensorboard`: scalars of every metrics.csv term and the preview images during the run;
    report.html at the end of every finished run."""
    from difforge.train.trainer import Trainer
    from tests.conftest import tiny_overrides

    result = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=4, preview_every=2, tensorboard=True)).fit()
    ea = read_events(result.run_dir / "tb")
    assert {"loss", "mse", "lr", "images_per_s"} <= set(ea.Tags()["scalars"])
    assert [e.step for e in ea.Images("previews")] == [2, 4]
    assert (result.run_dir / "report.html").stat().st_size > 1000
    assert "report: " in (result.run_dir / "log.txt").read_text()

"""The Task seam on its own: a toy regression task, with no diffusion code, trained by the same Trainer."""

import csv
import math

import pytest
import torch

from difforge import config as config_module
from difforge.errors import ConfigError
from difforge.train.batches import Batch
from difforge.train.rng import StepRNG
from difforge.train.tasks import TASK_MODULES, Task, register_task
from difforge.train.trainer import Trainer
from tests.conftest import tiny_overrides


class LineTask(Task):
    """Fit y = 2x + 1 with one nn.Linear; x ~ N(0, 1) drawn per sample from the step's random object."""

    name = "line"

    def build(self, data, device):
        self.meta = {"kind": "line", "network": {"name": "linear", "config": {"in_features": 1, "out_features": 1}}}
        return torch.nn.Linear(1, 1).to(device)

    def loss(self, net, batch: Batch, rng: StepRNG):
        x = rng.randn((1,), batch.x.device)
        pred = net(x).squeeze(1).float()
        err = pred - (2 * x.squeeze(1) + 1)
        return {"loss": err.pow(2), "abs_err": err.abs().detach(), "pred": pred.detach()}


@pytest.fixture
def line_task(monkeypatch):
    monkeypatch.setattr(config_module, "TASKS", config_module.TASKS)  # restored after the test
    monkeypatch.setitem(TASK_MODULES, "line", None)
    register_task("line", LineTask)
    yield LineTask


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_a_registered_toy_task_trains_and_logs_every_term(tmp_path, line_task):
    kw = dict(task="line", max_steps=60, lr=0.05, builtin_per_class=2, precision="fp32")
    result = Trainer(progress=False, **tiny_overrides(tmp_path, **kw)).fit()
    rows = _rows(result.run_dir)
    assert len(rows) == 60
    terms = ("loss", "abs_err", "pred")
    assert set(terms) <= set(rows[0])
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in terms), row
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-10:]) / 10 < 0.1 * sum(losses[:5]) / 5
    # the mean of a term over the batch, not the last sample: y = 2x + 1 has mean ~1 over x ~ N(0, 1)
    assert abs(float(rows[-1]["pred"]) - 1.0) < 1.0
    assert "abs_err" in (result.run_dir / "log.txt").read_text()
    assert not list((result.run_dir / "samples").iterdir())  # no preview: the base task has none


def test_step_rng_draws_the_global_batch_and_keeps_this_ranks_rows():
    whole = StepRNG(torch.Generator().manual_seed(3), 8, slice(0, 8))
    part = StepRNG(torch.Generator().manual_seed(3), 8, slice(4, 8))
    a, b = whole.randn((2,)), part.randn((2,))
    assert b.shape == (4, 2) and torch.equal(a[4:], b)
    assert torch.equal(whole.randint(0, 5)[4:], part.randint(0, 5))
    assert torch.equal(whole.rand()[4:], part.rand())


def test_unregistered_tasks_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="task='line'"):
        Trainer(progress=False, **tiny_overrides(tmp_path, task="line"))

import csv

import pytest
import torch
from safetensors.torch import load_file

from difforge.errors import CheckpointError, ConfigError
from difforge.train.batches import BatchPlan
from difforge.train.trainer import Trainer
from tests.conftest import tiny_overrides


def _losses(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_loss_falls_and_run_folder_is_complete(tmp_path):
    result = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=40)).fit()
    rd = result.run_dir
    losses = _losses(rd)
    assert len(losses) == 40
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5
    for name in ("config.yaml", "metrics.csv", "log.txt", "checkpoints/ema.safetensors",
                 "checkpoints/last.safetensors", "checkpoints/state.safetensors"):
        assert (rd / name).is_file(), name
    previews = list((rd / "samples").glob("step_*.png"))
    assert len(previews) == 1
    assert result.steps == 40 and not result.interrupted


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    full = Trainer(progress=False, **tiny_overrides(tmp_path, run="full", max_steps=12, lr_schedule="cosine")).fit()

    def stop_at_5(trainer, step, loss):
        if step == 5:
            trainer.request_stop()

    part = Trainer(progress=False, callbacks=[stop_at_5], **tiny_overrides(tmp_path, run="part", max_steps=12, lr_schedule="cosine")).fit()
    assert part.interrupted and part.steps == 5
    resumed = Trainer(resume=str(part.run_dir), progress=False).fit()
    assert resumed.steps == 12
    assert _losses(full.run_dir) == _losses(part.run_dir)
    a = load_file(str(full.run_dir / "checkpoints/state.safetensors"))
    b = load_file(str(part.run_dir / "checkpoints/state.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_existing_run_needs_resume(tmp_path):
    Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=2)).fit()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=2)).fit()
    with pytest.raises(CheckpointError, match="resume"):
        Trainer(resume=str(tmp_path / "nothing"), progress=False)


def test_pretrain_loads_weights_and_rejects_mismatch(tmp_path):
    first = Trainer(progress=False, **tiny_overrides(tmp_path, run="a", max_steps=2)).fit()
    tuned = Trainer(pretrain=str(first.model_file), progress=False, **tiny_overrides(tmp_path, run="b", max_steps=1)).fit()
    assert tuned.steps == 1
    opts = tiny_overrides(tmp_path, run="c", max_steps=1)
    opts["network_options"] = dict(opts["network_options"], base_channels=32)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        Trainer(pretrain=str(first.model_file), progress=False, **opts).fit()


def test_batch_plan_covers_every_image_each_epoch():
    plan = BatchPlan(20, 5, 3)
    seen = torch.cat([plan.indices(m) for m in range(4)])
    assert sorted(seen.tolist()) == list(range(20))
    assert not torch.equal(plan.indices(0), plan.indices(4))  # a new order next epoch


def test_unconditional_and_x0_v_targets_train(tmp_path):
    for i, (target, loss) in enumerate((("x0", "l1"), ("v", "huber"))):
        r = Trainer(progress=False, **tiny_overrides(tmp_path, run=f"u{i}", conditional=False, target=target, loss=loss, max_steps=3)).fit()
        assert r.steps == 3


def test_time_budget_shortens_the_run_and_anneals_the_lr(tmp_path):
    r = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=100_000, max_minutes=0.25, lr_schedule="cosine")).fit()
    assert r.steps < 100_000 and not r.interrupted
    with open(r.run_dir / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    if r.steps > 20:  # the budget is re-planned after 20 steps; a very loaded machine may not get there
        assert float(last["lr"]) < 0.2 * 2e-3  # the cosine reached (near) its end inside the budget


def test_eval_every_records_fid_and_kid_in_metrics_csv(tmp_path):
    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    extractor = tmp_path / "feat.pt"
    torch.jit.script(Pool()).save(str(extractor))
    r = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=4, eval_every=2, eval_num=16, eval_features=str(extractor))).fit()
    with open(r.run_dir / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("fid")]
    assert [int(row["step"]) for row in rows] == [2, 4]
    assert all(float(row["fid"]) > 0 and row["kid"] != "" for row in rows)


def test_every_config_task_has_a_task_module():
    from difforge.config import TASKS
    from difforge.train.tasks import TASK_MODULES

    assert set(TASKS) == set(TASK_MODULES)
    with pytest.raises(ConfigError, match="task='gan'"):
        Trainer(task="gan")

"""The time budget is a budget: pacing by the fraction of the budget used, driven by a fake clock."""

import csv

import pytest

from difforge.train.budget import Pacer
from difforge.train.checkpoint import load_training_state
from difforge.train.optim import lr_factor_at
from difforge.train.trainer import Trainer

from ..conftest import tiny_overrides


class FakeClock:
    """Advances by the current step time at every reading (the pacer reads it once per step)."""

    def __init__(self, step_time=1.0):
        self.t, self.step_time = 1000.0, step_time

    def __call__(self):
        self.t += self.step_time
        return self.t


def run_pacer(pacer, clock, step_times, max_steps=100_000):
    """Drive a pacer as the trainer does; step_times(step) -> seconds of that step."""
    clock.step_time = 0.0
    pacer.start()
    step, lrs = 0, []
    while step < max_steps:
        lrs.append(pacer.lr(step))
        clock.step_time = step_times(step)
        step += 1
        if pacer.after_step(step, pacer.elapsed()):
            break
    return step, lrs


@pytest.mark.parametrize("schedule", ["cosine", "linear", "warmup_cosine"])
def test_schedule_ends_at_the_budget(schedule):
    clock = FakeClock()
    pacer = Pacer(total=None, minutes=1.0, schedule=schedule, min_ratio=0.1, clock=clock)
    steps, lrs = run_pacer(pacer, clock, lambda s: 1.0)
    assert steps == 60 and pacer.used == pytest.approx(60.0)
    assert lrs[-1] == pytest.approx(0.1)  # the schedule's end value on the last step
    assert lrs[-2] > 0.1
    assert "time budget of 1 min reached at step 60" in pacer.reason
    assert pacer.row() == {"time_frac": 1.0}


def test_a_slowdown_mid_run_neither_stops_early_nor_overruns():
    clock = FakeClock()
    pacer = Pacer(total=None, minutes=2.0, schedule="cosine", clock=clock)
    steps, lrs = run_pacer(pacer, clock, lambda s: 0.5 if s < 40 else 2.0)  # 4x slower after 20 s
    assert 120 - 2.0 < pacer.used <= 120.0
    assert steps == 40 + 50
    assert lrs[-1] == pytest.approx(0.0)
    assert pacer.first_estimate == 240  # what the first 20 steps predicted; the run did not stop there


def test_slow_start_does_not_stop_early():
    """The old rule fixed the step count after 20 slow steps; a machine that speeds up uses its time."""
    clock = FakeClock()
    pacer = Pacer(total=None, minutes=1.0, schedule="cosine", clock=clock)
    steps, lrs = run_pacer(pacer, clock, lambda s: 2.0 if s < 20 else 0.5)
    assert 60 - 0.5 <= pacer.used <= 60  # within one (fast) step of the budget
    assert steps in (20 + 39, 20 + 40)
    assert lrs[-1] == pytest.approx(0.0)


def test_a_slow_first_step_counts_against_the_budget_but_not_the_warm_up():
    """A compiled run spends its first step compiling (here 60 s of a 10-minute budget, 10%, twice
    the 5% warm-up): the run still ends at the budget, but the warm-up happens over the steps after
    it instead of being skipped, and the schedule still ends on the last step."""
    clock = FakeClock()
    pacer = Pacer(total=None, minutes=10.0, schedule="warmup_cosine", clock=clock)
    steps, lrs = run_pacer(pacer, clock, lambda s: 60.0 if s == 0 else 1.0)
    assert 600 - 1.0 < pacer.used <= 600 and steps == 1 + 540
    assert pacer.setup == pytest.approx(59.0)
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[1] < 0.1 and lrs[10] < 0.5  # still warming up: progress counts from the end of the set-up
    assert max(lrs) == pytest.approx(1.0, abs=1e-3) and lrs[-1] == pytest.approx(0.0)
    warmed = next(i for i, v in enumerate(lrs) if v > 0.999)
    assert 20 <= warmed <= 30  # 5% of the 541 s left after the set-up: ~27 one-second steps
    # the rule it replaced: the 60 s counted as progress, so the second step ran at the peak LR
    assert lr_factor_at(61 / 600, "warmup_cosine") > 0.99


def test_a_first_step_of_over_a_third_of_the_budget_does_not_end_the_run():
    """The stop rule guesses the next step's time from the last one; after a 70 s compile in a 2-minute
    budget that guess (70 s more) would have ended the run after one step."""
    clock = FakeClock()
    pacer = Pacer(total=None, minutes=2.0, schedule="cosine", clock=clock)
    steps, lrs = run_pacer(pacer, clock, lambda s: 70.0 if s == 0 else 1.0)
    assert steps == 1 + 50 and 120 - 1.0 < pacer.used <= 120
    assert lrs[1] == pytest.approx(1.0, abs=0.01) and lrs[-1] == pytest.approx(0.0)


def test_set_up_noted_in_a_later_step_counts_against_the_budget_but_not_as_progress_or_step_time():
    """--compile compiles in the step that first checks its gradients (step 2 of a fresh run): the
    trainer notes that step's set-up, which then neither advances the schedule nor enters the step time."""
    clock = FakeClock()
    pacer = Pacer(total=None, minutes=10.0, schedule="cosine", clock=clock)
    clock.step_time = 0.0
    pacer.start()
    lrs = []
    for step in range(3):
        lrs.append(pacer.lr(step))
        clock.step_time = 61.0 if step == 2 else 1.0
        if step == 2:
            pacer.note_setup(60.0)
        pacer.after_step(step + 1, pacer.elapsed())
    assert pacer.used == pytest.approx(63.0) and pacer.later_setup == pytest.approx(60.0)
    assert pacer.step_time == pytest.approx(1.0, abs=0.01)  # the compile is not a step's cost
    assert pacer.lr(3) > 0.99  # progress (3 s of 540) ignores the 60 s; counting them would give cos(pi * 64/600)
    assert lr_factor_at(64 / 600, "cosine") < 0.98
    step, clock.step_time = 3, 1.0
    while not pacer.after_step(step + 1, pacer.elapsed()):
        step += 1
    assert 600 - 1.0 < pacer.used <= 600 and step + 1 == 600 - 60  # the set-up still came off the budget


def test_step_limit_and_budget_together_follow_whichever_is_further():
    clock = FakeClock()
    pacer = Pacer(total=30, minutes=1.0, schedule="cosine", clock=clock)
    steps, lrs = run_pacer(pacer, clock, lambda s: 1.0)
    assert steps == 30 and pacer.reason == "max steps 30 reached"
    assert lrs[-1] == pytest.approx(0.0)
    clock = FakeClock()
    pacer = Pacer(total=1000, minutes=1.0, schedule="cosine", clock=clock)
    steps, lrs = run_pacer(pacer, clock, lambda s: 1.0)
    assert steps == 60 and "planned 1000: the budget cut the run" in pacer.reason
    assert lrs[-1] == pytest.approx(0.0)


def test_without_a_budget_the_schedule_is_step_based():
    from difforge.train.optim import lr_factor

    pacer = Pacer(total=50, minutes=None, schedule="warmup_cosine", warmup_steps=5, min_ratio=0.1)
    assert [pacer.lr(s) for s in range(50)] == [lr_factor(s, 50, "warmup_cosine", 5, 0.1) for s in range(50)]
    assert pacer.row() == {}


def test_lr_factor_at_ends_and_warms_up():
    assert lr_factor_at(1.0, "cosine", min_ratio=0.2) == pytest.approx(0.2)
    assert lr_factor_at(0.025, "warmup_cosine") == pytest.approx(0.5)
    assert lr_factor_at(0.05, "warmup_cosine") == pytest.approx(1.0)
    assert lr_factor_at(0.5, "linear") == pytest.approx(0.5)
    assert lr_factor_at(0.7, "constant") == 1.0


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_trainer_paces_by_the_clock_and_resume_uses_the_remaining_time(tmp_path):
    # one fake second per step, a 30 s budget: 30 steps, the LR at its end on the last one
    over = tiny_overrides(tmp_path, max_steps=None, max_minutes=0.5, lr_schedule="cosine", lr=1e-3)
    r = Trainer(progress=False, clock=FakeClock(1.0), **over).fit()
    assert r.steps == 30 and not r.interrupted
    rows = _rows(r.run_dir)
    assert float(rows[-1]["time_frac"]) == 1.0 and float(rows[-1]["lr"]) == pytest.approx(0.0)
    assert float(rows[14]["time_frac"]) == pytest.approx(15 / 30)
    log = (r.run_dir / "log.txt").read_text()
    assert "time budget of 0.5 min reached at step 30 (planned ~30)" in log

    # stopped after 12 s, resumed: the remaining 18 s give 18 more steps
    over = tiny_overrides(tmp_path, run="r", max_steps=None, max_minutes=0.5, lr_schedule="cosine", lr=1e-3)
    stop = lambda tr, step, loss: tr.request_stop() if step == 12 else None  # noqa: E731
    first = Trainer(progress=False, clock=FakeClock(1.0), callbacks=[stop], **over).fit()
    assert first.interrupted and first.steps == 12
    state = load_training_state(first.run_dir / "checkpoints" / "state.safetensors")
    assert state["loop"]["elapsed_s"] == pytest.approx(12.0)
    second = Trainer(resume=str(first.run_dir), progress=False, clock=FakeClock(1.0)).fit()
    assert second.steps == 30
    assert float(_rows(second.run_dir)[-1]["lr"]) == pytest.approx(0.0)

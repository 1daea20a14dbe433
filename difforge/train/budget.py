"""How far a run is and when it ends: a step count, a wall-time budget, or both (:class:`Pacer`).

With ``max_minutes`` the budget is the clock, not a step count guessed once: after every step
the time used so far (agreed across DDP ranks) and a running estimate of the step time give the
*fraction of the budget* the next step will end at, and the LR schedule follows that fraction
(:func:`~difforge.train.optim.lr_factor_at`), so the LR reaches its end value on the last step
whatever the machine's load. The run stops before a step that would end past the budget. With
``max_steps`` / ``epochs`` as well, the schedule follows whichever limit is further along and the
run ends at the first one reached. Without a budget the schedule is the step-based
:func:`~difforge.train.optim.lr_factor` (bit-exact resume).

A run's first step carries one-off set-up. That time counts against the budget, but not as
progress of the schedule: the set-up (the first step's time beyond the second's) is taken off both
the time used and the budget when the schedule's fraction is computed, so it cannot eat the LR
warm-up. Set-up inside a later step (``--compile`` compiles in the step whose gradients it first
checks, step 2-4 of a fresh run) is reported by the trainer (:meth:`Pacer.note_setup`) and
treated alike: off the schedule's progress and off the step-time estimate.

The EMA warm-up ramp (:mod:`difforge.train.ema`) depends on the number of updates done only,
never on a planned total, so no guess of the step rate reaches it either.

The time used is kept in the training state (``elapsed_s``), so a resumed budgeted run gets the
remaining time. The clock is injected (default :func:`time.perf_counter`) so tests drive it.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, Optional

from .optim import lr_factor, lr_factor_at

STEP_TIME_SMOOTHING = 0.2  # weight of the newest step in the running step-time estimate


class Pacer:
    """The stopping rule and LR progress of one run.

    ``total``: the step limit (None: the budget alone decides); ``minutes``: the time budget
    (None: steps alone); ``elapsed_before``: seconds already used by the run before a resume.
    Call :meth:`start` when the loop starts, :meth:`lr` before each step and :meth:`after_step`
    after it with the elapsed seconds agreed across ranks (:meth:`elapsed` of every rank, averaged).
    """

    def __init__(self, *, total: Optional[int], minutes: Optional[float], schedule: str, warmup_steps: int = 0,
                 min_ratio: float = 0.0, start_step: int = 0, elapsed_before: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.total, self.minutes = total, minutes
        self.schedule, self.warmup_steps, self.min_ratio = schedule, warmup_steps, min_ratio
        self.start_step, self.elapsed_before, self.clock = start_step, float(elapsed_before), clock
        self.seconds = minutes * 60.0 if minutes else None
        self.used = float(elapsed_before)  # agreed elapsed seconds after the last step
        self.step_time: Optional[float] = None
        self.first_estimate: Optional[int] = None
        self.setup = 0.0  # this process's one-off set-up seconds (the first step's time beyond the second's)
        self.later_setup = 0.0  # set-up seconds noted in later steps (note_setup)
        self._noted = 0.0
        self._first_dt = 0.0
        self._steps_done = 0
        self.reason = ""
        self._t0 = None

    # -- time ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._t0 = self.clock()

    def elapsed(self) -> float:
        """Seconds of training so far on this rank (including the time before a resume)."""
        return self.elapsed_before + (self.clock() - self._t0)

    @property
    def timed(self) -> bool:
        return self.seconds is not None

    def time_fraction(self) -> float:
        """Fraction of the budget used after the last step (0 without a budget)."""
        return min(1.0, self.used / self.seconds) if self.timed else 0.0

    def _next_end_fraction(self) -> float:
        """The fraction of the budget at which the next step is expected to end; 1 when it is the
        last one (no room for another after it), so the schedule ends on the last step."""
        ahead = self._ahead()
        if ahead and self.used + 2 * ahead > self.seconds:
            return 1.0
        setup = min(self.setup + self.later_setup, 0.99 * self.seconds)
        return min(1.0, max(0.0, self.used + ahead - setup) / (self.seconds - setup))

    def _ahead(self) -> float:
        """The expected time of the next step; 0 until a second step shows what a step costs (the
        first one is all set-up: a slow compile says nothing of the steps after it)."""
        return (self.step_time or 0.0) if self._steps_done >= 2 else 0.0

    def planned_steps(self, step: int) -> Optional[int]:
        """Steps the run is expected to make in all: the step limit, or what fits in the budget at
        the current pace, whichever is fewer."""
        fit = None
        if self.timed and self.step_time:
            fit = step + max(0, int((self.seconds - self.used) / self.step_time))
        if self.total is None:
            return fit
        return self.total if fit is None else min(fit, self.total)

    # -- the schedule -------------------------------------------------------------------------
    def progress(self, step: int) -> float:
        """Fraction of the run done when optimizer step ``step`` (0-based) ends: the further along
        of the step limit and the time budget."""
        p = (step + 1) / self.total if self.total else 0.0
        if self.timed:
            p = max(p, self._next_end_fraction())
        return min(1.0, p)

    def lr(self, step: int) -> float:
        """Multiplier of the base LR for step ``step``."""
        if not self.timed:
            return lr_factor(step, self.total, self.schedule, self.warmup_steps, self.min_ratio)
        warm = 0.0 if self.warmup_steps else 0.05
        factor = lr_factor_at(self.progress(step), self.schedule, warm, self.min_ratio)
        if self.warmup_steps:  # an explicit warm-up stays in steps, on top of the budget's schedule
            factor *= min(1.0, (step + 1) / self.warmup_steps)
        return factor

    def note_setup(self, seconds: float) -> None:
        """``seconds`` of the step under way were one-off set-up, not training (a compile)."""
        self._noted += max(0.0, seconds)

    # -- after a step -------------------------------------------------------------------------
    def after_step(self, step: int, agreed_elapsed: float) -> bool:
        """Record the time after step ``step`` (1-based count of steps done); True when the run
        must stop (the step limit is reached, or the next step would end past the budget)."""
        if self.timed:
            dt = max(0.0, agreed_elapsed - self.used)
            self.used = agreed_elapsed
            self._steps_done = step - self.start_step
            if self._steps_done > 1:  # (the first step's set-up is found from the second step's time)
                extra = min(self._noted, dt)
                self.later_setup += extra
                dt -= extra
            self._noted = 0.0
            if self._steps_done == 1:
                self._first_dt = dt
            if self._steps_done <= 2:  # the 1st step's time, then its excess over the 2nd
                self.setup = min(dt if self._steps_done == 1 else max(0.0, self._first_dt - dt), 0.99 * self.seconds)
            if self._steps_done <= 2 or self.step_time is None:  # the 1st step's one-off set-up is replaced by the 2nd
                self.step_time = dt
            else:
                self.step_time += STEP_TIME_SMOOTHING * (dt - self.step_time)
            if self.first_estimate is None and step >= self.start_step + 20:
                self.first_estimate = self.planned_steps(step)
        if self.total is not None and step >= self.total:
            self.reason = f"max steps {self.total} reached"
            return True
        if self.timed and self.used + self._ahead() > self.seconds:
            planned = self.first_estimate or self.planned_steps(step)
            cut = f" (planned {self.total}: the budget cut the run)" if self.total else f" (planned ~{planned})"
            self.reason = f"time budget of {self.minutes:g} min reached at step {step}{cut}"
            return True
        return False

    def row(self) -> Dict[str, float]:
        """Extra metrics.csv columns: the fraction of the budget used."""
        return {"time_frac": round(self.time_fraction(), 4)} if self.timed else {}


def total_steps(tc, per_epoch: int) -> Optional[int]:
    """The step limit of a run with train settings ``tc``; None when the time budget alone decides."""
    if tc.max_steps:
        return tc.max_steps
    if tc.epochs:
        return math.ceil(tc.epochs * per_epoch / tc.grad_accum)
    if tc.max_minutes:
        return None
    return math.ceil(100 * per_epoch / tc.grad_accum)  # IDDM's default of 100 epochs


__all__ = ["total_steps", "Pacer"]

"""When a run ends early: Ctrl-C / SIGTERM (finish the step, save, return) and the time budget."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

import torch

from .distributed import DistInfo, all_reduce_mean
from .logging import get_logger


@contextlib.contextmanager
def stop_on_signals(is_stopping: Callable[[], bool], request_stop: Callable[[], None]) -> Iterator[None]:
    """While inside: SIGINT / SIGTERM call ``request_stop`` (the loop saves and returns); a second
    one while ``is_stopping()`` stops at once. The previous handlers come back on exit. Only the
    main thread can own signal handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if is_stopping():  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        get_logger().info(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint...")
        request_stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def fit_to_time_budget(step: int, start_step: int, total: int, elapsed: float, max_minutes: float, dist: DistInfo) -> int:
    """The step count that fits in ``max_minutes``, so the LR schedule still anneals (or ``total``).

    Estimated from the steps so far (averaged over ranks, so every rank agrees).
    """
    per_step = all_reduce_mean(torch.tensor([elapsed / (step - start_step)]), dist).item()
    remaining = max_minutes * 60 - elapsed
    fit = step + max(0, int(remaining / per_step * 0.97))  # leave room for the final save and preview
    if fit < total:
        get_logger().info(f"time budget {max_minutes} min: about {fit} steps fit ({per_step:.2f} s/step)")
        return fit
    return total


__all__ = ["stop_on_signals", "fit_to_time_budget"]

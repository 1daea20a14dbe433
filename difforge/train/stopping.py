"""When a run ends early: Ctrl-C / SIGTERM (finish the step, save, return). The time budget is :mod:`difforge.train.budget`."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

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


__all__ = ["stop_on_signals"]

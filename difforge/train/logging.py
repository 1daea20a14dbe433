"""One place for what a run tells the user: console + log.txt, metrics.csv, the progress bar."""

from __future__ import annotations

import collections
import contextlib
import csv
import logging
import sys
from pathlib import Path
from typing import Dict, Optional

from tqdm import tqdm

LOGGER_NAME = "difforge"


class _TqdmHandler(logging.Handler):
    """Console output that does not tear the progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _Recent(logging.Handler):
    """The last records, so that log.txt also gets what a run decided before its folder existed
    (the network, memory layout and compile choices: train/settle.py)."""

    def __init__(self):
        super().__init__()
        self.records = collections.deque(maxlen=200)

    def emit(self, record):
        self.records.append(record)


def get_logger() -> logging.Logger:
    log = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _TqdmHandler) for h in log.handlers):
        h = _TqdmHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
        log.addHandler(_Recent())
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class _RunLogHandler(logging.FileHandler):
    """log.txt: when it cannot be written (disk full, read-only, ...), one warning on the console and
    the run goes on logging there; checkpoints are separate files, with their own clear error."""

    def handleError(self, record):
        from ..atomic import write_error

        error = sys.exc_info()[1]
        clear = write_error(self.baseFilename, error, kept="the lines written so far are kept") if error is not None else None
        if clear is None:
            return super().handleError(record)
        get_logger().removeHandler(self)
        with contextlib.suppress(OSError, ValueError):
            self.close()
        tqdm.write(f"warning: {clear}; logging to the console only from here", file=sys.stderr)


def attach_run_log(run_dir: Path, since: Optional[float] = None) -> logging.Handler:
    """Also write everything logged to ``run_dir/log.txt`` (appending across resumes), starting
    with what was logged from ``since`` (a ``time.time()``) until now."""
    from ..atomic import write_error

    try:
        handler = _RunLogHandler(run_dir / "log.txt", encoding="utf-8")
    except OSError as e:
        raise write_error(run_dir / "log.txt", e, kept="nothing of this run was written yet") or e
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log = get_logger()
    earlier = [r for h in log.handlers if isinstance(h, _Recent) for r in h.records if since is not None and r.created >= since]
    log.addHandler(handler)
    for record in earlier:
        if handler not in log.handlers:  # log.txt could not be written: warned once, the run logs to the console
            break
        handler.handle(record)
    return handler


def detach(handler: Optional[logging.Handler]) -> None:
    if handler is not None:
        get_logger().removeHandler(handler)
        with contextlib.suppress(OSError, ValueError):  # a full disk was reported when it happened
            handler.close()


@contextlib.contextmanager
def _writing(path: Path, kept: str):
    """A failed write of ``path`` as one UserError naming it (disk full, read-only, ...)."""
    from ..atomic import write_error

    try:
        yield
    except OSError as e:
        raise write_error(path, e, kept) or e


class MetricsCSV:
    """Appends rows to metrics.csv; new columns later in a run extend the header.

    Appending a row is one small write; rewriting the file (new columns, resume) is atomic, so a
    full disk never loses rows already logged. Write errors are one UserError naming the file.
    """

    KEPT = "the rows logged before are kept, and so are the checkpoints"

    def __init__(self, path: Path):
        self.path = path
        self.columns = None
        if path.exists():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resume continues from the last checkpoint)."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(float(r.get("step", 0))) <= step]
        if len(keep) != len(rows):
            self._rewrite(keep, self.columns or [])

    def _rewrite(self, rows, columns) -> None:
        from ..atomic import atomic_write

        with atomic_write(self.path, kept=self.KEPT) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                w.writerows(rows)
        self.columns = list(columns)

    def log(self, row: Dict[str, object]) -> None:
        if self.path.exists():  # another writer (the evaluation's) may have added columns or rows
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f), None)
        if self.columns is None:
            self._rewrite([], list(row))
        elif set(row) - set(self.columns):
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self._rewrite(rows, self.columns + [k for k in row if k not in self.columns])
        with _writing(self.path, self.KEPT), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, restval="").writerow(row)


class _TrainBar(tqdm):
    """The training bar. The loop reports ``loss`` as a moving average (0.95 EMA of the batch
    losses: one batch's loss jumps with its timesteps); the bar names it ``loss~`` so nobody reads
    it as the last batch's. metrics.csv and log.txt keep the unsmoothed per-step values."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        if "loss" in kwargs:
            kwargs = {"loss~": kwargs.pop("loss"), **kwargs}
        super().set_postfix(ordered_dict, refresh, **kwargs)


def progress_bar(total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
    return _TrainBar(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True, unit="step", file=sys.stderr)


def announce(trainer, data, total: int) -> None:
    """The run's opening lines: data (with the loader's warnings and every skipped file), model, training plan."""
    import torch

    from ..data.scan import printable

    c, log = trainer.config, trainer.log
    n_params = sum(p.numel() for p in trainer.net.parameters())
    classes = f"{data.num_classes} classes ({', '.join(data.class_names)})" if data.num_classes else "unconditional"
    skipped = f", {data.skipped} bad files skipped" if data.skipped else ""
    log.info(f"data: {len(data.images)} images from {data.source}{skipped}; {classes}; {data.images.shape[-1]}px x {c.data.channels} channel(s)")  # the images' own size
    for w in data.warnings:
        log.warning(f"warning: {w}")
    if len(data.bad) > 10:  # the warning names the first 10; the log keeps every one
        log.info("all skipped images: " + "; ".join(f"{printable(p)} ({r})" for p, r in data.bad))
    log.info(f"model: {c.model.network} {n_params / 1e6:.2f}M params; {trainer.task.describe()}")
    world = trainer.dist.world_size
    log.info(
        f"train: {total} steps, batch {c.train.batch_size} x accum {c.train.grad_accum} x {world} process(es) "
        f"= global batch {c.train.batch_size * c.train.grad_accum * world}, lr {c.train.lr} "
        f"({c.train.lr_schedule}), {trainer.precision} on {trainer.device}, {torch.get_num_threads()} threads -> {trainer.run_dir}"
    )

"""The runs in a runs folder, one summary each: ``difforge runs [RUNS_DIR]``.

A run's state is read from its files, never from a process table (the run may train on another
machine sharing the folder):

- **finished**: log.txt's last session ends with the trainer's ``model file:`` line and the model
  file and training state are readable;
- **interrupted**: that session ended with ``stopped at step N`` (Ctrl-C, SIGTERM): resumable;
- **running**: no end line yet and metrics.csv or log.txt changed in the last
  ``RUNNING_WINDOW_S`` seconds;
- **stopped**: no end line and nothing written for longer (killed, crashed, machine lost), but a
  training state to resume from;
- **broken**: a file the run needs is missing or unreadable (the note says which).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import UserError
from ..export.runinfo import MODEL_FILE, STATE_FILE, RunMetrics, model_description, read_config, read_log, read_metrics

RUNNING_WINDOW_S = 300.0
STATES = ("finished", "interrupted", "running", "stopped", "broken")


@dataclass
class RunSummary:
    name: str
    path: Path
    state: str
    steps: int = 0
    total_steps: Optional[int] = None
    last_loss: Optional[float] = None
    elapsed_s: Optional[float] = None
    best: Optional[Tuple[str, float, int]] = None
    model_file: Optional[Path] = None
    note: str = ""
    metrics: RunMetrics = field(default_factory=RunMetrics, repr=False)


def is_run(path: Path) -> bool:
    """A folder the trainer made: it has config.yaml, metrics.csv, log.txt or checkpoints/."""
    return path.is_dir() and any((path / n).exists() for n in ("config.yaml", "metrics.csv", "log.txt", "checkpoints"))


def _last_write(run: Path) -> float:
    times = [p.stat().st_mtime for p in (run / "metrics.csv", run / "log.txt", run / STATE_FILE) if p.exists()]
    return max(times, default=0.0)


def summarize(run_dir, now: Optional[float] = None) -> RunSummary:
    """Read one run folder into a :class:`RunSummary` (never raises for a broken run)."""
    run = Path(run_dir)
    now = time.time() if now is None else now
    s = RunSummary(run.name, run, "broken")
    problems: List[str] = []
    config = {}
    try:
        config = read_config(run)
        if not config:
            problems.append("config.yaml missing")
    except UserError as e:
        problems.append(str(e))
    try:
        s.metrics = read_metrics(run / "metrics.csv")
        if not (run / "metrics.csv").exists():
            problems.append("metrics.csv missing")
        elif not s.metrics.rows:
            problems.append("metrics.csv has no rows")
    except UserError as e:
        problems.append(str(e))
    m = s.metrics
    s.steps, s.last_loss, s.elapsed_s, s.best = m.last_step, m.last("loss"), m.elapsed_s(), m.best()
    train_cfg = config.get("train")
    s.total_steps = train_cfg.get("max_steps") if isinstance(train_cfg, dict) else None
    model = run / MODEL_FILE
    if model.exists():
        try:
            meta = model_description(model)
            s.model_file = model
            s.steps = max(s.steps, int(meta.get("train", {}).get("step", 0) or 0))
        except UserError as e:
            problems.append(f"model file unreadable ({e})")
    log = read_log(run)
    recent = now - _last_write(run) < RUNNING_WINDOW_S
    has_state = (run / STATE_FILE).exists()
    if log.ended is None and recent and config:
        s.state = "running"  # a young run has no model file yet, and may not have a metrics row
        problems = [p for p in problems if not p.startswith("metrics.csv")]
    elif problems:
        s.state = "broken"
    elif log.ended == "finished":
        s.state = "finished" if has_state and s.model_file else "broken"
        if s.state == "broken":
            problems.append(f"{STATE_FILE if not has_state else MODEL_FILE} missing")
    elif log.ended == "interrupted":
        s.state = "interrupted" if has_state else "broken"
    else:
        s.state = "stopped" if has_state else "broken"
        if not has_state:
            problems.append("no end line in log.txt and no checkpoint to resume from")
    s.note = "; ".join(problems) if s.state == "broken" else ("resume with: difforge train --resume " + str(run)
                                                             if s.state in ("interrupted", "stopped") else "")
    return s


def list_runs(runs_dir="runs") -> List[RunSummary]:
    """Every run folder directly under ``runs_dir``, by name."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"runs folder {root} does not exist (runs are written to runs/NAME by `difforge train`)")
    return [summarize(p) for p in sorted(root.iterdir(), key=lambda p: p.name) if is_run(p)]


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _cells(r: RunSummary) -> List[str]:
    steps = f"{r.steps}" + (f"/{r.total_steps}" if r.total_steps and r.state in ("running", "stopped", "interrupted") else "")
    best = f"{r.best[0]} {r.best[1]:.4g} @{r.best[2]}" if r.best else "-"
    model = str(r.model_file.relative_to(r.path)) if r.model_file else "-"
    loss = f"{r.last_loss:.4g}" if r.last_loss is not None else "-"
    return [r.name, r.state, steps, loss, format_duration(r.elapsed_s), best, model]


def format_table(runs: List[RunSummary], notes: bool = True) -> str:
    """A plain-text table (one run a line); broken and resumable runs get a note line below."""
    head = ["name", "state", "steps", "last loss", "time", "best metric", "model file"]
    rows = [_cells(r) for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    right = {2, 3, 4}
    fmt_row = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    lines = [fmt_row(head), fmt_row(["-" * w for w in widths])]
    for r, row in zip(runs, rows):
        lines.append(fmt_row(row))
        if notes and r.note:
            lines.append(f"    {r.note}")
    return "\n".join(lines)


__all__ = ["RunSummary", "STATES", "RUNNING_WINDOW_S", "format_duration", "format_table", "is_run", "list_runs", "summarize"]

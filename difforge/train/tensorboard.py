"""TensorBoard logging of a run into ``runs/NAME/tb/`` (optional extra ``[tb]``).

Tags are metrics.csv's column names (``loss`` and every other loss term, ``lr``,
``images_per_s``, ``epoch``, ``elapsed_s``, evaluation numbers such as ``fid``), plus
``time_budget_fraction`` (elapsed / ``--max-minutes``) when a time budget is set; preview grids
are the image tag ``previews``; the config is the text tag ``config``. Open it with
``tensorboard --logdir runs`` (every run is one TensorBoard run).

Live, from the trainer::

    tb = TensorBoardWriter(run_dir, config_text=config.to_yaml())
    tb.log_metrics(step, row, time_fraction=elapsed_s / (60 * max_minutes))
    tb.add_image_file(preview_path, step)
    tb.close()

After the fact, from the run's files: :func:`replay` (``difforge report RUN --tensorboard``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..errors import ConfigError

TB_DIR = "tb"
EXTRA = "pip install 'difforge[tb]'"
REPLAY_SUFFIX = ".replay"


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``, or one line naming the extra that provides it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"TensorBoard logging needs the tensorboard package: {EXTRA}") from None
    return SummaryWriter


class TensorBoardWriter:
    """A SummaryWriter on ``run_dir/tb`` that speaks in metrics.csv rows and preview files."""

    def __init__(self, run_dir, config_text: Optional[str] = None, filename_suffix: str = ""):
        SummaryWriter = summary_writer_class()
        self.log_dir = Path(run_dir) / TB_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), filename_suffix=filename_suffix)
        if config_text:
            self.add_text("config", config_text)

    def log_metrics(self, step: int, row: Dict[str, Any], time_fraction: Optional[float] = None) -> None:
        """One metrics.csv row: every numeric column but ``step`` becomes a scalar at ``step``."""
        for key, value in row.items():
            if key == "step":
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v):
                self.writer.add_scalar(key, v, int(step))
        if time_fraction is not None and math.isfinite(time_fraction):
            self.writer.add_scalar("time_budget_fraction", float(time_fraction), int(step))

    def add_image(self, image, step: int, tag: str = "previews") -> None:
        """A uint8 (H, W, C) or (H, W) array."""
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        self.writer.add_image(tag, arr, int(step), dataformats="HW" if arr.ndim == 2 else "HWC")

    def add_image_file(self, path, step: int, tag: str = "previews") -> None:
        """An image file (a preview grid) as an image at ``step``."""
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("L" if im.mode in ("L", "I", "I;16") else "RGB"))
        self.add_image(arr, step, tag)

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        """Text shown as Markdown; a config is indented so it shows as a code block."""
        self.writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()), int(step))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def replay(run_dir) -> Path:
    """Write a run's files (metrics.csv, previews, config.yaml) to ``run_dir/tb`` after the fact.

    The replay's event file replaces an earlier replay's (suffix ``.replay``); event files a live
    run wrote are left alone.
    """
    import csv

    from ..errors import UserError
    from .report import previews

    run = Path(run_dir)
    if not (run / "metrics.csv").exists() and not (run / "config.yaml").exists():
        raise UserError(f"{run} is not a run folder (no metrics.csv or config.yaml)")
    for old in (run / TB_DIR).glob(f"events.out.tfevents.*{REPLAY_SUFFIX}"):
        old.unlink()
    cfg = run / "config.yaml"
    with TensorBoardWriter(run, cfg.read_text(encoding="utf-8") if cfg.exists() else None, REPLAY_SUFFIX) as tb:
        budget = _max_minutes(run)
        if (run / "metrics.csv").exists():
            with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    step = _int(row.get("step"))
                    if step is None:
                        continue
                    elapsed = _float(row.get("elapsed_s"))
                    tb.log_metrics(step, {k: v for k, v in row.items() if v not in ("", None)},
                                   elapsed / (60 * budget) if budget and elapsed is not None else None)
        for step, path in previews(run):
            tb.add_image_file(path, step)
    return run / TB_DIR


def _max_minutes(run: Path) -> Optional[float]:
    from ..export.runinfo import read_config

    try:
        train = read_config(run).get("train") or {}
    except Exception:  # a broken config only loses the time fraction
        return None
    return _float(train.get("max_minutes")) if isinstance(train, dict) else None


def _float(v) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v) -> Optional[int]:
    f = _float(v)
    return int(f) if f is not None and math.isfinite(f) else None


__all__ = ["TensorBoardWriter", "replay", "summary_writer_class", "TB_DIR", "EXTRA"]

"""Read what a training run left in its folder: config.yaml, metrics.csv, log.txt, the model file.

Only reading, never writing: the run report, ``difforge runs`` and the model card all describe a
run from these files, so a run can be described after the fact, while it trains, or half-broken.

metrics.csv holds two kinds of rows (see :class:`difforge.train.logging.MetricsCSV`): training
rows (every ``log_every`` steps: the loss terms, ``lr``, ``images_per_s``, ``elapsed_s``) and
evaluation rows (``step`` plus FID/KID/PSNR/accuracy numbers). A row that has an ``lr`` is a
training row; any other row is an evaluation row.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..errors import CheckpointError

from ..diffusion.schedule import schedule_name
from ..modelfile import read_metadata

MODEL_FILE = Path("checkpoints") / "ema.safetensors"
STATE_FILE = Path("checkpoints") / "state.safetensors"
# columns of a training row that are bookkeeping, not loss terms
BOOKKEEPING = ("step", "epoch", "lr", "images_per_s", "elapsed_s")
# evaluation numbers where smaller is better; every other evaluation number: larger is better
LOWER_IS_BETTER = re.compile(r"^(s?fid|kid|val_mse|mse|nll|bpd|bits_per_dim)(_|$)")
# the metric shown as "best" when several were evaluated, in this order of preference
PREFERRED = ("fid", "kid", "sfid", "val_psnr", "acc", "is", "precision")

Series = List[Tuple[int, float]]


@dataclass
class RunMetrics:
    """metrics.csv as series of (step, value): ``train`` per column of training rows, ``eval`` per
    evaluation column. ``rows`` is the number of data rows read."""

    train: Dict[str, Series] = field(default_factory=dict)
    eval: Dict[str, Series] = field(default_factory=dict)
    rows: int = 0

    @property
    def loss_terms(self) -> List[str]:
        """Loss columns (``loss`` first, then every other logged term, in file order)."""
        terms = [k for k in self.train if k not in BOOKKEEPING and not k.endswith("_std")]
        return sorted(terms, key=lambda k: k != "loss")

    def last(self, column: str) -> Optional[float]:
        s = self.train.get(column) or self.eval.get(column)
        return s[-1][1] if s else None

    def elapsed_s(self) -> Optional[float]:
        """Training time over every session: ``elapsed_s`` restarts at 0 when a run is resumed."""
        series = self.train.get("elapsed_s")
        if not series:
            return None
        total, prev = 0.0, 0.0
        for _, v in series:
            if v < prev:
                total += prev
            prev = v
        return total + prev

    @property
    def last_step(self) -> int:
        steps = [s[-1][0] for s in list(self.train.values()) + list(self.eval.values()) if s]
        return max(steps, default=0)

    def best(self) -> Optional[Tuple[str, float, int]]:
        """(metric, best value, its step) of the preferred evaluation metric, or None."""
        names = [k for k in self.eval if not k.endswith("_std") and self.eval[k]]
        if not names:
            return None
        name = next((p for p in PREFERRED if p in names), None)
        if name is None:
            name = next((n for n in names if any(n.startswith(p) for p in PREFERRED)), names[0])
        pick = min if LOWER_IS_BETTER.match(name) else max
        step, value = pick(self.eval[name], key=lambda sv: sv[1])
        return name, value, step


def _number(text: Any) -> Optional[float]:
    if text is None or text == "":
        return None
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_metrics(path) -> RunMetrics:
    """Parse metrics.csv; a missing file gives empty metrics, an unreadable one a CheckpointError."""
    path = Path(path)
    out = RunMetrics()
    if not path.exists():
        return out
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CheckpointError(f"{path} could not be read ({e})") from None
    for row in rows:
        step = _number(row.get("step"))
        if step is None:
            continue
        out.rows += 1
        target = out.train if _number(row.get("lr")) is not None else out.eval
        for key, text in row.items():
            if key in (None, "step") or (target is out.eval and key == "epoch"):
                continue
            v = _number(text)
            if v is not None:
                target.setdefault(key, []).append((int(step), v))
    return out


def read_config(run_dir) -> Dict[str, Any]:
    """The run's config.yaml as a dict ({} when missing); an unreadable file -> CheckpointError."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path} could not be read ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a difforge config (expected a mapping of sections)")
    return data


@dataclass
class LogState:
    """What log.txt says about the last training session of a run."""

    ended: Optional[str] = None  # "finished", "interrupted" or None (no end line yet)
    started: Optional[str] = None  # time stamp of the last "train:" line
    last_time: Optional[str] = None  # time stamp of the last line
    lines: List[str] = field(default_factory=list)  # the last session's lines


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


def read_log(run_dir) -> LogState:
    """Find the last session in log.txt (sessions append: a resume adds one) and how it ended.

    The trainer's last line of a completed session is ``model file: PATH``; an interrupted one
    also logs ``stopped at step N; resume with ...`` before it.
    """
    path = Path(run_dir) / "log.txt"
    st = LogState()
    if not path.exists():
        return st
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = max((i for i, ln in enumerate(lines) if " train: " in ln or ln.startswith("train: ")), default=0)
    while start > 0 and any(k in lines[start - 1] for k in (" data: ", " model: ", "resuming ")):
        start -= 1  # the session's announcement lines logged just before "train:"
    st.lines = lines[start:]
    stamps = [m.group(1) for m in map(_STAMP.match, st.lines) if m]
    st.started = stamps[0] if stamps else None
    st.last_time = stamps[-1] if stamps else None
    if any(" model file: " in ln for ln in st.lines):
        st.ended = "interrupted" if any(" stopped at step " in ln for ln in st.lines) else "finished"
    return st


def model_description(path) -> Dict[str, Any]:
    """The model file's metadata (see :mod:`difforge.modelfile`)."""
    return read_metadata(path)


def summarize_meta(meta: Dict[str, Any]) -> List[Tuple[str, str]]:
    """A model file's description as (label, text) rows for a table or a card."""
    net = meta.get("network", {})
    cfg = net.get("config", {})
    d, data, tr = meta.get("diffusion", {}), meta.get("data", {}), meta.get("train", {})
    classes = data.get("class_names") or []
    rows = [
        ("kind", str(meta.get("kind", "diffusion"))),
        ("network", f"{net.get('name', '?')} ({', '.join(f'{k}={v}' for k, v in cfg.items() if k not in ('image_size', 'in_channels'))})"),
        ("image", f"{data.get('image_size', '?')}px x {data.get('channels', '?')} channel(s)"),
        ("classes", f"{len(classes)}: {', '.join(classes)}" if classes else "none (unconditional)"),
    ]
    if d:
        rows.append(("diffusion", f"{schedule_name(d)}, T={d.get('diffusion_steps')}, target {d.get('target')}, "
                                  f"loss {d.get('loss')}{', learned variance' if d.get('learn_sigma') else ''}"))
    if meta.get("latent"):
        lat = meta["latent"]
        rows.append(("latent", f"{lat.get('latent_channels', '?')}x{lat.get('latent_size', '?')}x{lat.get('latent_size', '?')} latents of the VAE "
                               f"{lat.get('vae_relpath') or lat.get('vae_path', '?')} (scale factor {lat.get('scale_factor', '?')})"))
    if tr:
        rows.append(("trained", f"step {tr.get('step', '?')}, epoch {tr.get('epoch', '?')}, run {tr.get('run', '?')}; {meta.get('weights', '?')} weights"))
    return rows


__all__ = ["RunMetrics", "LogState", "read_metrics", "read_config", "read_log", "model_description", "summarize_meta",
           "MODEL_FILE", "STATE_FILE", "LOWER_IS_BETTER"]

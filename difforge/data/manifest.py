"""The manifest of a folder of generated (or real) images: one JSON object per line, ``manifest.jsonl``.

Written by ``difforge synth`` and ``difforge sample``, read by export and by :func:`regenerate`
(``difforge.pipeline.synth``), so it is the one place that says which keys a line has and what they
mean. Every line describes one image; paths are relative to the manifest's folder, so a folder can be
moved or zipped whole.

Keys (all present in every line; extra keys are allowed and kept):

=============  =====================================================================================
image          path of the image, relative to the manifest's folder
mask           path of its binary mask (same size), relative, or null
source         ``"synthetic"`` or ``"real"``
class          class name or null
seed           int: the generator seed that makes this one image again
model          model file name (no folder) or null for real images
model_sha256   hex sha256 of the model file (``difforge.modelfile.file_sha256``) or null
method         one of :data:`METHODS`
sampler        sampler name (``ddim``, ...) or null
steps          int sampling steps (0 for real images)
cfg            float guidance scale (0 when none)
background     path of the good image the defect was painted onto, or null
placement      dict saying where/how the mask was placed (``difforge.pipeline.synth``) or null
size           [H, W] of the image
time           ISO 8601 UTC time the line was written
seconds        float seconds spent generating the image
=============  =====================================================================================

Lines are appended one at a time and flushed, so an interrupted run leaves every finished line intact;
a cut-off last line (the process died mid-write) is skipped on reading, which is what resuming needs.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from ..atomic import write_bytes, write_error
from ..errors import DataError

MANIFEST_NAME = "manifest.jsonl"
SOURCES = ("synthetic", "real")
METHODS = ("mask-conditioned", "repaint", "blend", "joint", "sample", "real")
KEYS = ("image", "mask", "source", "class", "seed", "model", "model_sha256", "method", "sampler", "steps", "cfg",
        "background", "placement", "size", "time", "seconds")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z`` (``2026-12-04T15:12:03.123Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_line(image: str, *, size, seed: int, method: str, source: str = "synthetic", mask: Optional[str] = None,
              class_name: Optional[str] = None, model: Optional[str] = None, model_sha256: Optional[str] = None,
              sampler: Optional[str] = None, steps: int = 0, cfg: float = 0.0, background: Optional[str] = None,
              placement: Optional[Dict[str, Any]] = None, seconds: float = 0.0, time: Optional[str] = None,
              **extra: Any) -> Dict[str, Any]:
    """One validated manifest line (``class_name`` becomes the key ``class``; ``extra`` keys are kept)."""
    line = {"image": str(image), "mask": None if mask is None else str(mask), "source": source, "class": class_name,
            "seed": int(seed), "model": model, "model_sha256": model_sha256, "method": method, "sampler": sampler,
            "steps": int(steps), "cfg": float(cfg), "background": None if background is None else str(background),
            "placement": placement, "size": [int(size[0]), int(size[1])], "time": time or utc_now(),
            "seconds": round(float(seconds), 6)}
    line.update(extra)
    return validate_line(line)


def _fail(where: str, key: str, why: str) -> DataError:
    return DataError(f"{where}: manifest key {key!r} {why}")


def _opt_str(line, key, where):
    v = line[key]
    if v is not None and (not isinstance(v, str) or not v):
        raise _fail(where, key, f"must be a non-empty string or null, got {v!r}")


def validate_line(line: Any, where: str = "manifest line") -> Dict[str, Any]:
    """Check one parsed line has every key of :data:`KEYS` with the right type; return it.

    ``where`` names the file and line in the one-line :class:`DataError`.
    """
    if not isinstance(line, dict):
        raise DataError(f"{where}: a manifest line must be a JSON object, got {type(line).__name__}")
    missing = [k for k in KEYS if k not in line]
    if missing:
        raise DataError(f"{where}: manifest line lacks key(s) {', '.join(missing)}")
    if not isinstance(line["image"], str) or not line["image"]:
        raise _fail(where, "image", "must be a non-empty relative path")
    for key in ("image", "mask"):
        v = line[key]
        if isinstance(v, str) and (os.path.isabs(v) or ".." in Path(v).parts):
            raise _fail(where, key, f"must be a path inside the manifest's folder, got {v!r}")
    for key in ("mask", "class", "model", "model_sha256", "sampler", "background"):
        _opt_str(line, key, where)
    if line["source"] not in SOURCES:
        raise _fail(where, "source", f"must be one of {', '.join(SOURCES)}, got {line['source']!r}")
    if line["method"] not in METHODS:
        raise _fail(where, "method", f"must be one of {', '.join(METHODS)}, got {line['method']!r}")
    for key in ("seed", "steps"):
        if not isinstance(line[key], int) or isinstance(line[key], bool) or line[key] < 0:
            raise _fail(where, key, f"must be a non-negative integer, got {line[key]!r}")
    for key in ("cfg", "seconds"):
        v = line[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise _fail(where, key, f"must be a finite number, got {v!r}")
    size = line["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise _fail(where, "size", f"must be [H, W] of positive integers, got {size!r}")
    if line["placement"] is not None and not isinstance(line["placement"], dict):
        raise _fail(where, "placement", "must be an object or null")
    if not isinstance(line["time"], str):
        raise _fail(where, "time", "must be an ISO 8601 string")
    return line


def manifest_path(folder) -> Path:
    """``folder/manifest.jsonl``."""
    return Path(folder) / MANIFEST_NAME


def iter_manifest(path) -> Iterator[Dict[str, Any]]:
    """Validated lines of ``path`` (a manifest file or a folder holding one); a cut-off last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = manifest_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no manifest at {path}; generate with 'difforge synth' or 'difforge sample'") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read manifest {path}: {e}") from None
    rows = text.split("\n")
    complete = text.endswith("\n")
    for i, raw in enumerate(rows, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as e:
            if i == len(rows) and not complete:
                return  # the process died while writing this line
            raise DataError(f"{path}:{i}: not a JSON object ({e.msg})") from None
        yield validate_line(line, f"{path}:{i}")


def read_manifest(path) -> List[Dict[str, Any]]:
    """Every line of a manifest (see :func:`iter_manifest`)."""
    return list(iter_manifest(path))


class ManifestWriter:
    """Append lines to ``folder/manifest.jsonl``, one flushed and fsynced write per line.

    ``done`` holds the ``image`` paths already listed (so a resumed run skips them and never lists an
    image twice). A cut-off last line from an interrupted run is dropped first.
    """

    def __init__(self, folder):
        self.path = manifest_path(folder)
        self.done: Dict[str, Dict[str, Any]] = {}
        if self.path.exists():
            lines = read_manifest(self.path)
            self.done = {ln["image"]: ln for ln in lines}
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):  # drop the cut-off line so the next one starts clean
                keep = raw[: raw.rfind(b"\n") + 1]
                write_bytes(self.path, keep)

    def add(self, line: Dict[str, Any]) -> None:
        validate_line(line, str(self.path))
        if line["image"] in self.done:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(line, sort_keys=False, separators=(", ", ": ")) + "\n").encode("utf-8")
        try:
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_error(self.path, e, "the lines written before are intact") or e
        self.done[line["image"]] = line


__all__ = ["KEYS", "MANIFEST_NAME", "METHODS", "ManifestWriter", "SOURCES", "iter_manifest", "make_line",
           "manifest_path", "read_manifest", "utc_now", "validate_line"]

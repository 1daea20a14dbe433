"""Which models a server offers, and under which names.

Clients choose a model by NAME only, from the set the server was started with, never by a path:
a name is the file's stem (``ema``), made unique from its folders when stems collide
(``runs/a/checkpoints/ema.safetensors`` -> ``a-ema``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import UserError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def is_model_name(name: str) -> bool:
    """True for a plain name: letters, digits, ``_ . -``; no separators, no ``..``."""
    return bool(NAME_RE.match(name)) and ".." not in name


def _clean(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._-")
    return text.replace("..", ".") or "model"


def model_names(paths: Sequence[Path]) -> List[str]:
    """One unique name per path: the stem, or folders + stem (``checkpoints`` left out) when stems collide."""
    paths = [Path(p).resolve() for p in paths]
    distinct = list(dict.fromkeys(paths))
    depth = 0
    while True:
        named = {}
        for p in distinct:
            parts = [q for q in p.parent.parts[1:] if q != "checkpoints"]
            parts = parts[len(parts) - depth :] if depth else []
            named[p] = _clean("-".join([*parts, p.stem]))
        if len(set(named.values())) == len(named) or depth > max(len(p.parts) for p in distinct):
            break
        depth += 1
    seen: Dict[str, int] = {}
    unique = []
    for p in paths:  # the same file given twice, or names equal after cleaning
        n = named[p]
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return unique


def find_model_files(files: Iterable[str] = (), models_dir: Optional[str] = None) -> List[Path]:
    """The files given plus every ``*.safetensors`` under ``models_dir`` (training-state files left out)."""
    return [p for p, _ in _candidates(files, models_dir)]


def _candidates(files: Iterable[str] = (), models_dir: Optional[str] = None) -> List[Tuple[Path, bool]]:
    """(path, given by name) of every file to serve; a file found in ``models_dir`` may be skipped."""
    out: List[Tuple[Path, bool]] = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise UserError(f"model file {p} does not exist" + (" (it is a folder; use --models-dir)" if p.is_dir() else ""))
        out.append((p, True))
    if models_dir:
        d = Path(models_dir)
        if not d.is_dir():
            raise UserError(f"--models-dir {d} is not a folder")
        found = sorted(q for q in d.rglob("*.safetensors") if q.is_file() and not _is_state_file(q))
        if not found:
            raise UserError(f"--models-dir {d} holds no .safetensors model files")
        out.extend((q, False) for q in found)
    if not out:
        raise UserError("give at least one model file (e.g. runs/default/checkpoints/ema.safetensors) or --models-dir DIR")
    unique: Dict[Path, Tuple[Path, bool]] = {}
    for p, named in out:  # the same file twice: kept once, as given by name if it was
        first, was_named = unique.get(p.resolve(), (p, False))
        unique[p.resolve()] = (first, was_named or named)
    return list(unique.values())


def _is_state_file(path: Path) -> bool:
    """A training-state file (it sits beside the model files of a run; not served): reads the header only."""
    from ..modelfile import STATE_FORMAT, read_metadata

    try:
        return read_metadata(path).get("format") == STATE_FORMAT
    except UserError:
        return False  # unreadable: loading it says why


def load_models(files: Iterable[str] = (), models_dir: Optional[str] = None, device: str = "auto", precision: str = "auto",
                warn: Optional[Callable[[str], None]] = None) -> Dict[str, "object"]:
    """Load every model once: ``{name: Pipeline}`` in the order given.

    A file named on the command line must load; a file found under ``models_dir`` that cannot be
    served (malformed, NaN weights, a VAE or classifier, another tool's file) is skipped with a
    warning (``warn``, default: the log), and the rest are served. No servable file is an error.
    """
    from .upscale import load_servable

    if warn is None:
        from ..train.logging import get_logger

        warn = get_logger().warning
    candidates = _candidates(files, models_dir)
    names = model_names([p for p, _ in candidates])
    models: Dict[str, object] = {}
    skipped = []
    for name, (path, named) in zip(names, candidates):
        try:
            models[name] = load_servable(path, device=device, precision=precision)  # an SR upscaler too (serve/upscale.py)
        except UserError as e:
            if named:
                raise
            skipped.append(path)
            warn(f"warning: skipping {path}: {e}")
    if not models:
        raise UserError(f"--models-dir {models_dir}: none of its {len(skipped)} .safetensors files can be served (see the warnings above)")
    return models

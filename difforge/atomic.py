"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Everything difforge writes (model files, training state, images, metrics) goes through
:func:`atomic_write`, so Ctrl-C, a crash or a full disk never leaves a truncated file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from .errors import UserError

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. A full disk
    becomes a :class:`UserError` that names the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise UserError(f"disk full while writing {path}; free some space (earlier files are intact)") from e
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))

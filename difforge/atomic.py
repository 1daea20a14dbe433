"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Everything difforge writes (model files, training state, images, metrics) goes through
:func:`atomic_write`, so Ctrl-C, a crash or a full disk never leaves a truncated file behind.
A write that fails for a reason the user can fix (disk full, quota, read-only file system, no
permission) becomes one :class:`UserError` from :func:`write_error` naming the file and what was kept.
New files get the usual mode (0666 less the umask), as ``open()`` would give them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import UserError

PathLike = Union[str, os.PathLike]

# errno -> what the user reads; every other OSError is a bug or an unexpected state and keeps its traceback
_SPACE, _PLACE = "free some space and rerun", "write to a folder you can write to, or fix its permissions"
WRITE_ERRORS = {
    errno.ENOSPC: ("disk full", _SPACE),
    errno.EDQUOT: ("disk quota exceeded", _SPACE),
    errno.EFBIG: ("file too large for this file system", _SPACE),
    errno.EROFS: ("read-only file system", _PLACE),
    errno.EACCES: ("permission denied", _PLACE),
    errno.EPERM: ("permission denied", _PLACE),
}


def write_error(path: PathLike, error: BaseException, kept: Optional[str] = None) -> Optional[UserError]:
    """The one-line UserError for a failed write of ``path``, or None when ``error`` is not one a user can fix.

    ``kept`` says what survived (default: the previous ``path`` if there was one). Use as
    ``raise write_error(path, e) or e`` - hence returning rather than raising.
    """
    code = _errno_of(error)
    if code not in WRITE_ERRORS:
        return None
    if kept is None:
        kept = f"the previous {Path(path).name} is unchanged" if Path(path).exists() else "no partial file was left"
    what, fix = WRITE_ERRORS[code]
    return UserError(f"cannot write {path}: {what}; {kept}; {fix}")


def _errno_of(error: BaseException) -> Optional[int]:
    """An OSError's errno; also from writers that wrap it in their own error (safetensors: "... (os error 28) ...")."""
    if isinstance(error, OSError):
        return error.errno
    m = re.search(r"\(os error (\d+)\)", str(error))
    return int(m.group(1)) if m else None


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask must set it to read it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: PathLike, kept: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. A full disk,
    a quota, a read-only file system or a missing permission becomes a :class:`UserError` that
    names the file and says what was kept (``kept``, or the default of :func:`write_error`).
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes 0600 (so do writers that replace tmp_path with their own temp file, like
        # safetensors); a run's files are as shareable as any other file the user creates
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException as e:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink(missing_ok=True)
        clear = write_error(path, e, kept) if isinstance(e, Exception) else None
        if clear is not None:
            raise clear from e
        raise


def write_bytes(path: PathLike, data: bytes, kept: Optional[str] = None) -> Path:
    with atomic_write(path, kept) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str, kept: Optional[str] = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), kept)

"""Atomic file writes: nothing the user had is lost when a write fails half-way.

``atomic_write(path, write)`` calls ``write(file)`` on a temporary file in the same directory,
flushes it to disk, gives it the usual permissions, and only then renames it over ``path``
(``os.replace`` is atomic on POSIX and Windows). A crash or a full disk leaves the previous file
intact and no temporary file behind.
"""
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, mode="wb", encoding=None):
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; use what open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

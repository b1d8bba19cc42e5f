"""Atomic output writing: outputs are never half-written.

Every writer goes through a temporary file in the output's own folder, renamed over the output only when
the write succeeded. A full disk, a read-only folder or a missing permission is a
:class:`~genossm.errors.GenossmError` naming the output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from genossm.errors import GenossmError

# errors of the output's file system (not of the data being written): they name the output, not a traceback
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(path: Path, suffix: str) -> tuple[int, str]:
    """A temporary file in ``path``'s folder with the permissions a plain ``open(path, "w")`` would give
    (``mkstemp`` makes it 0600 whatever the umask, which would hide results from the user's group)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path.parent, *path.parent.parents] if p.exists() and not p.is_dir()), path.parent)
        raise GenossmError(f"{path}: cannot write there: {blocker} is a file, not a folder") from None
    except OSError as err:
        raise GenossmError(f"{path}: cannot write there: {err.strerror or err}") from None
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def _disk_error(path: Path, err: OSError) -> GenossmError:
    return GenossmError(f"{path}: cannot write the output: {err.strerror or err}; nothing was written there")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    A crash or an exception part-way leaves any earlier file at ``path`` untouched and no half-written
    output behind. The file gets the permissions the umask gives any new file. A full disk, a read-only
    folder or a missing permission is a :class:`GenossmError` naming ``path``.
    """
    path = Path(path)
    fd, tmp = _temp_beside(path, ".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
            raise _disk_error(path, err) from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for writers that need a file name (pysam, pandas, matplotlib).

    The temporary file is renamed over ``path`` when the block succeeds and removed when it fails.
    ``suffix`` keeps an extension some writers look at (``.vcf.gz``, ``.png``, ``.parquet``).
    """
    path = Path(path)
    fd, tmp = _temp_beside(path, f".tmp{suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
            raise _disk_error(path, err) from None
        raise


def check_writable(path: str | os.PathLike, label: str | None = None) -> None:
    """Fail now, naming the output, when a file cannot be written at ``path`` (a read-only or missing-permission
    folder, a file where a folder should be): before the work whose result it would hold, not after. Creates
    the missing folders, as the writers would."""
    path = Path(path)
    try:
        fd, tmp = _temp_beside(path, ".check")
    except GenossmError as err:
        raise GenossmError(f"{label}: {err}" if label else str(err)) from None
    os.close(fd)
    os.unlink(tmp)

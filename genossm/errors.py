"""User-facing errors and atomic output writing.

Every problem caused by a user's input (a broken FASTA, a bad config value, a VCF line that cannot be
read) is raised as :class:`GenossmError` with a message naming the file and the record or line. The
command line prints such errors as one clean message instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


class GenossmError(Exception):
    """An error in the user's input or configuration, with a message meant for the user."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    A crash or an exception part-way leaves any earlier file at ``path`` untouched and no half-written
    output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for writers that need a file name (pysam, pandas, matplotlib).

    The temporary file is renamed over ``path`` when the block succeeds and removed when it fails.
    ``suffix`` keeps an extension some writers look at (``.vcf.gz``, ``.png``, ``.parquet``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise

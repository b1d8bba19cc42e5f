"""Where genossm keeps what it derives from a FASTA, and how it tells that the FASTA changed.

One folder per FASTA (:func:`cache_folder`) holds the decompressed copy of a plain-gzip file, the index when
the FASTA's own folder is read-only (:class:`genossm.data.genome.Genome`) and the token cache
(:mod:`genossm.data.token_cache`); each is rebuilt when the file's :func:`fingerprint` (size and
modification time) differs from the one recorded when it was built.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_FOLDER = ".genossm-cache"


def writable_folder(folder: Path) -> bool:
    # the mode bits too: as root os.access says yes even for a folder marked read-only
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK) and bool(folder.stat().st_mode & 0o222)


# where a wheel installs the bundled data (data/ of the repository): caches of those files go to the user
# cache folder rather than into site-packages
INSTALLED_DATA = Path(__file__).resolve().parent.parent / "_data"


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genossm"


def cache_folder(fasta: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding everything genossm derives from one FASTA (decompressed copy, index, token cache).

    ``cache_dir`` if given; otherwise ``.genossm-cache/`` beside the FASTA when that folder is writable
    (and is not the bundled data inside an installed package), else the user cache folder (``$XDG_CACHE_HOME/genossm`` or ``~/.cache/genossm``). Inside it, one
    sub-folder per FASTA, named after the file and a hash of its absolute path.
    """
    fasta = Path(fasta).resolve()
    if cache_dir is not None:
        root = Path(cache_dir)
    elif fasta.is_relative_to(INSTALLED_DATA):
        root = user_cache_dir()
    elif writable_folder(fasta.parent) or writable_folder(fasta.parent / CACHE_FOLDER):
        root = fasta.parent / CACHE_FOLDER
    else:
        root = user_cache_dir()
    digest = hashlib.sha1(str(fasta).encode()).hexdigest()[:10]
    folder = root / f"{fasta.name}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fingerprint(path: str | os.PathLike) -> dict:
    """What tells us a file is unchanged: its size and modification time (nanoseconds)."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

"""Plain, gzip and bgzip (BGZF) input files: telling them apart by their first bytes, and reading them decompressed.

Genomes, variants and regions all come plain, gzip or bgzip, whatever their names end with, so every reader
looks at the bytes rather than the suffix. bgzip is gzip (any gzip reader decompresses it) whose blocks carry
a ``BC`` extra field, which is what makes it indexable.
"""

from __future__ import annotations

import gzip
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
# the empty BGZF block every bgzip file ends with (SAM/BAM spec 4.1.2)
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
HEAD_BYTES = 18  # a BGZF block header: gzip's 10 bytes, the extra field's length, the 'BC' subfield


def read_head(path: str | Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of ``path`` (fewer for a shorter file, empty for an empty one)."""
    with open(path, "rb") as handle:
        return handle.read(size)


def sniff_compression(head: bytes) -> str:
    """``"none"``, ``"gzip"`` or ``"bgzf"``, from a file's first bytes (:func:`read_head`)."""
    if head[:2] != GZIP_MAGIC:
        return "none"
    # FEXTRA flag set and the first extra subfield is BGZF's 'BC'
    return "bgzf" if len(head) >= 16 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


def has_bgzf_eof(path: str | Path) -> bool:
    """Whether ``path`` ends with the BGZF end-of-file block (a bgzip file without it was cut short)."""
    path = Path(path)
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - len(BGZF_EOF)))
        return handle.read() == BGZF_EOF


def open_decompressed(path: str | Path, compressed: bool | None = None, text: bool = False):
    """``path`` opened for reading, through gzip when it is compressed (``None``: read from its first bytes);
    binary, or text with the default encoding when ``text``."""
    if compressed is None:
        compressed = sniff_compression(read_head(path)) != "none"
    mode = "rt" if text else "rb"
    return gzip.open(path, mode) if compressed else open(path, mode)

"""Reference genomes from FASTA files: plain text, plain gzip or bgzip, through pyfaidx.

* plain and bgzip files are indexed by pyfaidx (``.fai``, plus ``.gzi`` for bgzip) beside the FASTA, or in
  the cache folder when the FASTA's folder is read-only;
* a plain-gzip file (not seekable) is decompressed once into the cache folder and reused while the
  ``.gz`` is unchanged (same size and modification time);
* contigs are selected by a list of names (aliases accepted) or by a regular expression;
* contig names match through an alias table: ``chr20`` <-> ``20``, ``chrX`` <-> ``X``, ``chrM`` <-> ``MT``;
* soft-masked (lowercase) bases are kept: :meth:`Genome.fetch` returns the original case and
  :meth:`Genome.fetch_tokens` returns the soft-mask beside the token ids; IUPAC codes read as N.

Every problem with the input file is a :class:`~genossm.errors.GenossmError` naming the file and the
record or line: empty file, not FASTA, duplicate contig names, truncated gzip/bgzip, a ``.fai`` that
disagrees with the file. When indexing fails, :func:`diagnose_layout` finds the real cause (blank lines
inside a record, spaces, ragged or CR-only lines, binary bytes) with its line number and the one command
that rewrites the file. Characters that are not letters (digits, ``*``, ``.``) read as N with one warning
per file.
"""

from __future__ import annotations

import bisect
import contextlib
import gzip
import json
import logging
import os
import re
import shutil
import warnings
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyfaidx

from genossm.atomic import atomic_write
from genossm.data import tokenizer
from genossm.data.cache_folder import cache_folder, fingerprint, writable_folder
from genossm.data.compressed import has_bgzf_eof, open_decompressed, read_head, sniff_compression
from genossm.errors import GenossmError

log = logging.getLogger(__name__)

# str.translate table that deletes every letter: what is left of a sequence are its non-base characters
_DROP_LETTERS = {c: None for c in range(0x41, 0x7B) if chr(c).isalpha()}


# --------------------------------------------------------------------------------------------------
# contig names


def canonical_contig(name: str) -> str:
    """Alias key of a contig name: ``chr20``/``Chr20``/``20`` -> ``20``; ``chrM``/``chrMT``/``M``/``MT`` -> ``MT``."""
    base = name[3:] if name[:3].lower() == "chr" and len(name) > 3 else name
    if base.upper() in ("M", "MT"):
        return "MT"
    if base.upper() in ("X", "Y"):
        return base.upper()
    return base


def select_contigs(names: Sequence[str], contigs, source: str) -> list[str]:
    """The file's contig names picked by ``contigs``, in file order.

    ``contigs`` is None (all), a list of names (aliases accepted), or a string: a regular expression that
    must match a whole contig name (``"chr[0-9]+"``), or failing that a single contig name or alias.
    """
    if contigs is None:
        return list(names)
    if isinstance(contigs, str):
        try:
            pattern = re.compile(contigs)
        except re.error:
            pattern = None
        if pattern is not None:
            picked = [n for n in names if pattern.fullmatch(n)]
            if picked:
                return picked
        contigs = [contigs]
    contigs = list(contigs)
    wanted = {resolve_contig(names, c, source) for c in contigs}
    return [n for n in names if n in wanted]


def resolve_contig(names: Sequence[str], name: str, source: str) -> str:
    """The contig of ``names`` that ``name`` refers to (exact match first, then the alias table)."""
    name = str(name)
    if name in names:
        return name
    key = canonical_contig(name)
    hits = [n for n in names if canonical_contig(n) == key]
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(list(names)[:10]) + (", ..." if len(names) > 10 else "")
    if hits:
        raise GenossmError(f"{source}: contig {name!r} is ambiguous, it could be any of {hits}")
    raise GenossmError(f"{source}: no contig named {name!r} (nor an alias of it); the file has: {shown}")


def fasta_paths(fasta, must_exist: bool = True) -> list[Path]:
    """The FASTA files of a genome given as one path or a list of paths (``fasta=[a.fa,b.fa.gz]`` on the
    command line); the contigs of all files together form the genome. Each file must exist (``must_exist``)."""
    if fasta is None:
        raise GenossmError("no genome given: set fasta=PATH (a plain, gzip or bgzip FASTA) or fasta=[PATH,PATH,...]")
    if isinstance(fasta, (str, os.PathLike)):
        items = [fasta]
    else:
        try:
            items = list(fasta)  # a list, tuple or OmegaConf ListConfig
        except TypeError:
            raise GenossmError(f"fasta={fasta!r}: expected a path or a list of paths") from None
    if not items:
        raise GenossmError("fasta=[] names no file: give a FASTA path or a list of them")
    paths = []
    for n, item in enumerate(items, 1):
        if item is None or not isinstance(item, (str, os.PathLike)):
            raise GenossmError(f"fasta={items}: {item!r} is not a path")
        if not str(item).strip():
            raise GenossmError(f"fasta={[str(i) for i in items]}: entry {n} is empty (a stray comma?)")
        path = Path(item)
        if must_exist and not path.exists():
            raise GenossmError(f"{path}: FASTA file not found" + (f" (in fasta={[str(i) for i in items]})" if len(items) > 1 else ""))
        if path.absolute() in [p.absolute() for p in paths]:
            raise GenossmError(f"{path}: listed twice in fasta={[str(i) for i in items]}")
        paths.append(path)
    return paths


def one_fasta(fasta, workflow: str):
    """The one FASTA file of a workflow that reads a single genome file: a path, or a list of one path; a list
    of several is one message (it ended in a TypeError)."""
    if fasta is not None and not isinstance(fasta, (str, os.PathLike)):
        paths = fasta_paths(fasta)
        if len(paths) != 1:
            raise GenossmError(f"fasta={[str(p) for p in paths]}: {workflow} reads one FASTA file, not a list; "
                               "give the one holding the contigs you need (or join the files into one)")
        return str(paths[0])
    return fasta


# --------------------------------------------------------------------------------------------------
# format checks


def sniff_format(path: Path) -> str:
    """``"plain"``, ``"gzip"`` or ``"bgzip"``; GenossmError for an empty or truncated file."""
    head = read_head(path)
    if not head:
        raise GenossmError(f"{path}: the file is empty (expected a FASTA genome)")
    kind = sniff_compression(head)
    if kind != "bgzf":
        return "plain" if kind == "none" else "gzip"
    if not has_bgzf_eof(path):
        raise GenossmError(
            f"{path}: truncated bgzip file (it lacks the BGZF end-of-file block); the download or copy "
            "was probably cut short"
        )
    return "bgzip"


def _open_text(path: Path, fmt: str):
    return open_decompressed(path, fmt in ("gzip", "bgzip"))


def check_fasta_start(path: Path, fmt: str) -> None:
    """The first line that is not blank (nor a ``;`` comment) must be a ``>`` header."""
    try:
        with _open_text(path, fmt) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip() or line.startswith(b";"):
                    if lineno > 10_000:
                        break
                    continue
                if line.startswith(b">"):
                    return
                shown = line[:40].decode("ascii", errors="replace").rstrip()
                raise GenossmError(
                    f"{path}: not a FASTA file: line {lineno} should be a '>' header but starts with {shown!r}"
                )
    except (EOFError, OSError, zlib.error) as err:
        raise GenossmError(f"{path}: cannot read the compressed file ({err}); it may be truncated or corrupt") from None
    raise GenossmError(f"{path}: the file is empty (no FASTA record found)")


def find_duplicate_header(path: Path, fmt: str, name: str) -> str:
    """Line numbers of the headers named ``name`` (for the duplicate-contig error; reads the file)."""
    lines = []
    with _open_text(path, fmt) as handle:
        for lineno, line in enumerate(handle, start=1):
            if line.startswith(b">") and line[1:].split(maxsplit=1)[:1] == [name.encode()]:
                lines.append(lineno)
    return " and ".join(map(str, lines)) if lines else "?"


def fixed_name(path: Path) -> str:
    """``genome.fa.gz`` -> ``genome.fixed.fa``: where the advised clean-up command writes."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    for suffix in (".fasta", ".fna", ".fa"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}.fixed.fa"


def rewrite_command(path: Path) -> str:
    """The one command that rewrites a FASTA pyfaidx cannot index (blank lines, stray whitespace, ragged lines)
    into a clean one with 60-base lines, keeping case (Biopython is installed with genossm)."""
    source = f"gzip.open('{path}', 'rt')" if path.name.endswith(".gz") else f"'{path}'"
    return (f"python -c \"import gzip; from Bio import SeqIO; SeqIO.write(SeqIO.parse({source}, 'fasta'), "
            f"'{fixed_name(path)}', 'fasta')\"")


_SEQUENCE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz*-.0123456789")


def _shown_byte(value: int) -> str:
    return repr(chr(value)) if 0x20 <= value < 0x7F else f"byte 0x{value:02x}"


def diagnose_layout(path: Path, fmt: str, shown: Path | None = None) -> str | None:
    """Why pyfaidx cannot index (or mis-indexes) a FASTA text: the first layout problem with its line number,
    or None when the layout is fine. Run only after indexing failed, so a clean file is never read twice.

    Finds CR-only line endings, non-text bytes, blank lines inside a record, spaces or tabs inside or after
    sequence lines, and lines of unequal length within a record (pyfaidx needs every line of a record but
    the last to have the same length).
    """
    shown = shown or path
    fix = rewrite_command(shown)
    with _open_text(path, fmt) as handle:
        head = handle.read(1 << 16)
    if b"\r" in head and b"\n" not in head:
        return (f"{shown}: the file uses CR-only line endings (old Mac style), which FASTA indexers cannot read; "
                f"convert them with: {'gzip -dc' if shown.name.endswith('.gz') else 'cat'} {shown} | tr '\\r' '\\n' > {fixed_name(shown)}")
    record, line_len, short, blank = None, None, None, None
    with _open_text(path, fmt) as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n").rstrip(b"\r")
            if line.startswith(b">"):
                junk = next((b for b in line if b < 0x20 and b != 0x09 or b == 0x7F or b >= 0x80), None)
                if junk is not None:
                    return (f"{shown}: line {lineno}: the header holds a non-text {_shown_byte(junk)}; "
                            "the file is corrupt or not FASTA text")
                name = line[1:].split(maxsplit=1)
                record = name[0].decode("ascii", errors="replace") if name else ""
                line_len, short, blank = None, None, None
                continue
            if record is None:
                continue  # before the first header: check_fasta_start's job
            if not line.strip():
                blank = blank or lineno
                continue
            where = f"{shown}: line {lineno} (record {record!r})"
            if blank is not None:
                return (f"{shown}: line {blank} is blank inside record {record!r} (sequence follows on line {lineno}); "
                        f"FASTA indexers cannot skip it. Remove blank lines, e.g. with: {fix}")
            odd = next(((col, b) for col, b in enumerate(line, start=1) if b not in _SEQUENCE_BYTES), None)
            if odd is not None:
                col, value = odd
                if value in b" \t":
                    kind = "trailing whitespace" if not line[col - 1:].strip() else f"a {'space' if value == 32 else 'tab'} at column {col}"
                    return f"{where} has {kind}; sequence lines must hold bases only. Rewrite the file with: {fix}"
                if value == 0x0D:
                    return f"{where} has a carriage return at column {col} inside the line; rewrite the file with: {fix}"
                return (f"{where}: column {col} holds a non-text {_shown_byte(value)}; the file is corrupt or "
                        "not FASTA text")
            if line_len is None:
                line_len = len(line)
            elif short is not None or len(line) > line_len:
                at, length = short or (lineno, len(line))
                return (f"{shown}: line {at} (record {record!r}) is {length} bases long but the record's lines are "
                        f"{line_len}; only a record's last line may be shorter. Re-wrap the file with: {fix}")
            elif len(line) < line_len:
                short = (lineno, len(line))
    return None


def decompress_gzip(source: Path, folder: Path) -> Path:
    """Decompress a plain-gzip FASTA into ``folder`` once; reuse it while ``source`` is unchanged."""
    target = folder / (source.name[: -len(".gz")] if source.name.endswith(".gz") else source.name + ".fa")
    stamp = folder / "decompressed.json"
    want = {"source": str(source.resolve()), **fingerprint(source)}
    if target.exists() and stamp.exists():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(stamp.read_text()) == want:
                return target
    log.info("%s is plain gzip (not bgzip): decompressing it once into %s", source, target)
    try:
        with gzip.open(source, "rb") as src, atomic_write(target) as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
    except EOFError:
        raise GenossmError(
            f"{source}: truncated gzip file (it ends before the end-of-stream marker); the download or copy "
            "was probably cut short"
        ) from None
    except (OSError, zlib.error) as err:
        raise GenossmError(f"{source}: corrupt gzip file ({err})") from None
    for stale in (target.with_name(target.name + ".fai"),):
        stale.unlink(missing_ok=True)
    with atomic_write(stamp, "w") as handle:
        json.dump(want, handle)
    return target


# --------------------------------------------------------------------------------------------------
# the genome


class Genome:
    """A FASTA genome: contig names and lengths, and 0-based half-open sequence fetches.

    ``contigs`` restricts :attr:`contig_names` (a list of names or aliases, or a regular expression);
    :meth:`resolve` and :meth:`fetch` still reach every contig of the file.
    """

    def __init__(self, path: str | os.PathLike, contigs=None, cache_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise GenossmError(f"{self.path}: FASTA file not found")
        if self.path.is_dir():
            raise GenossmError(f"{self.path}: is a folder, expected a FASTA file")
        self.cache_dir = cache_dir
        self.non_base_count = 0  # characters read so far that are not letters (each read as N)
        self._warned_non_bases = False
        self.format = sniff_format(self.path)
        self.fasta_path = self.path
        if self.format == "gzip":
            self.fasta_path = decompress_gzip(self.path, cache_folder(self.path, cache_dir))
        self._text_format = "plain" if self.format == "gzip" else self.format
        check_fasta_start(self.fasta_path, self._text_format)
        self._faidx = self._open_index()
        self._check_index()
        names = list(self._faidx.index)
        self.all_lengths: dict[str, int] = {n: int(self._faidx.index[n].rlen) for n in names}
        self.contig_names: list[str] = select_contigs(names, contigs, str(self.path))
        if not self.contig_names:
            raise GenossmError(f"{self.path}: no contig matches {contigs!r}")
        self.lengths: dict[str, int] = {n: self.all_lengths[n] for n in self.contig_names}

    # -- index ------------------------------------------------------------------------------------

    def _open_index(self) -> pyfaidx.Faidx:
        fasta = self.fasta_path
        fai = Path(str(fasta) + ".fai")
        gzi = Path(str(fasta) + ".gzi")
        needed = [fai, gzi] if self.format == "bgzip" else [fai]
        # a missing index goes to the cache folder when the user named one (nothing is written beside their
        # FASTA then) or when the FASTA's folder is read-only; an existing index beside the FASTA is used
        in_cache = not all(p.exists() for p in needed) and (self.cache_dir is not None or not writable_folder(fasta.parent))
        if self.format == "gzip":
            in_cache = True  # the decompressed copy lives in our cache folder anyway
        kwargs = {}
        if in_cache and self.format != "gzip":
            folder = cache_folder(self.path, self.cache_dir)
            fai = folder / (fasta.name + ".fai")
            kwargs["indexname"] = str(fai)
            if self.format == "bgzip":
                gzi = folder / (fasta.name + ".gzi")
                kwargs["gzi_indexname"] = str(gzi)
        self._built_index = in_cache or not fai.exists()
        if not fai.exists():
            log.info("indexing %s (writing %s)", fasta, fai)
        try:
            with warnings.catch_warnings():
                # an index older than its FASTA (git checkouts set arbitrary times) is checked by content
                warnings.simplefilter("ignore", RuntimeWarning)
                return pyfaidx.Faidx(
                    str(fasta),
                    as_raw=True,
                    sequence_always_upper=False,
                    duplicate_action="stop",
                    rebuild=in_cache,  # ours to rebuild; a user's own .fai is checked, never overwritten
                    read_ahead=None,
                    **kwargs,
                )
        except (pyfaidx.FastaIndexingError, RuntimeError, UnicodeDecodeError) as err:
            # pyfaidx names a symptom (inconsistent line length, an unhandled case, a decode error); find the cause
            self._remove_index_we_built(fai)
            cause = diagnose_layout(fasta, self._text_format, self.path)
            if cause:
                raise GenossmError(cause) from None
            if isinstance(err, UnicodeDecodeError):
                raise GenossmError(f"{self.path}: not a FASTA text file (non-text byte at offset {err.start})") from None
            raise GenossmError(f"{self.path}: not a valid FASTA file: {err}") from None
        except ValueError as err:
            match = re.match(r'Duplicate key "(.*)"', str(err))
            if match:
                name = match.group(1)
                lines = find_duplicate_header(fasta, self._text_format, name)
                raise GenossmError(
                    f"{self.path}: duplicate contig name {name!r} (headers on lines {lines}); contig names must be unique"
                ) from None
            raise GenossmError(f"{self.path}: cannot index the FASTA file or read its index {fai}: {err}") from None
        except (OSError, EOFError, zlib.error, pyfaidx.IndexNotFoundError) as err:
            raise GenossmError(f"{self.path}: cannot read the file or its index {fai}: {err}") from None

    def _remove_index_we_built(self, fai: Path) -> None:
        """A half-written or wrong index genossm wrote itself would be blamed as stale next time: remove it."""
        if self._built_index:
            Path(fai).unlink(missing_ok=True)

    def _raw(self, offset: int, size: int) -> bytes:
        """Bytes of the (uncompressed) FASTA text at ``offset``; fewer at the end of the file."""
        fa = self._faidx
        if offset < 0:
            return b""
        with fa.lock:
            if fa._bgzf:
                from Bio import bgzf

                ustarts = self._ustarts
                i = max(bisect.bisect_right(ustarts, offset) - 1, 0)
                block = fa.gzi_index[i]
                try:
                    fa.file.seek(bgzf.make_virtual_offset(block.cstart, offset - block.ustart))
                    return fa.file.read(size)
                except (ValueError, OSError, EOFError):
                    return b""
            fa.file.seek(offset)
            return fa.file.read(size)

    def _check_index(self) -> None:
        """Check every .fai record against the file itself: header before it, line ends, next record after."""
        fa = self._faidx
        if fa._bgzf:
            self._ustarts = [b.ustart for b in fa.gzi_index]
        fai = fa.indexname
        for lineno, (name, rec) in enumerate(fa.index.items(), start=1):
            problem = None
            newline = rec.lenb - rec.lenc
            if rec.rlen < 0 or rec.offset <= 0 or (rec.rlen > 0 and (rec.lenc <= 0 or not 1 <= newline <= 2)):
                problem = "its fields are impossible"
            else:
                before = self._raw(max(0, rec.offset - 65536), min(rec.offset, 65536))
                header = before[:-1].rsplit(b"\n", 1)[-1].rstrip(b"\r")
                if not before.endswith(b"\n") or header.split(maxsplit=1)[:1] != [b">" + name.encode()]:
                    problem = f"the text before offset {rec.offset} is not the header '>{name}'"
                elif rec.rlen > 0:
                    last_line_len = (rec.rlen - 1) % rec.lenc + 1
                    seq_end = rec.offset + (rec.rlen - last_line_len) // rec.lenc * rec.lenb + last_line_len
                    tail = self._raw(seq_end - 1, 1 + newline + 1)
                    first_line = self._raw(rec.offset + rec.lenc - 1, 1 + newline) if rec.rlen > rec.lenc else None
                    if not tail[:1].isalpha() and tail[:1] not in (b"*", b"-"):
                        problem = f"the sequence of {rec.rlen} bases does not end where the index says"
                    elif tail[1:] and tail[1:2] not in (b"\n", b"\r"):
                        problem = f"the sequence is longer than the {rec.rlen} bases the index says"
                    elif len(tail) == 1 + newline + 1 and tail[-1:] not in (b">", b"\n", b"\r", b";"):
                        problem = "the next record does not start where the index says"
                    elif first_line is not None and (
                        not first_line[:1].isalpha() or first_line[1:] not in (b"\n", b"\r\n", b"\r")
                    ):
                        problem = f"lines are not {rec.lenc} bases long as the index says"
            if problem and self._built_index:
                # the index was written just now from this very file, so it is not stale: the layout is the cause
                self._remove_index_we_built(Path(fai))
                cause = diagnose_layout(self.fasta_path, self._text_format, self.path)
                raise GenossmError(cause or (
                    f"{self.path}: the index just built from the file disagrees with it at record {name!r} ({problem}); "
                    f"the file's layout is not one FASTA indexers can read. Rewrite it with: "
                    + rewrite_command(self.path)
                ))
            if problem:
                raise GenossmError(
                    f"{fai}: the index disagrees with {self.fasta_path} at record {name!r} (line {lineno} of the "
                    f".fai): {problem}. The index is stale or belongs to another file: delete it (and any .gzi) "
                    "so it is rebuilt"
                )

    # -- names ------------------------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        """The file's own name of a contig, through the alias table (``chr20`` finds ``20``)."""
        return resolve_contig(list(self.all_lengths), name, str(self.path))

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except GenossmError:
            return False
        return True

    def __repr__(self) -> str:
        return f"Genome({str(self.path)!r}, {len(self.contig_names)} contigs, {sum(self.lengths.values()):,} bp)"

    # -- sequence ---------------------------------------------------------------------------------

    def fetch(self, contig: str, start: int, end: int) -> str:
        """Bases ``[start, end)`` (0-based, half-open) of ``contig`` in their original case."""
        name = self.resolve(contig)
        length = self.all_lengths[name]
        start, end = int(start), int(end)
        if not 0 <= start <= end <= length:
            raise GenossmError(
                f"{self.path}: region {name}:{start}-{end} is outside the contig (0-based half-open, length {length})"
            )
        if start == end:
            return ""
        try:
            seq = self._faidx.from_file(name, start + 1, end)
        except (OSError, EOFError, zlib.error, ValueError) as err:
            raise GenossmError(f"{self.path}: cannot read {name}:{start}-{end}: {err}") from None
        if len(seq) != end - start:
            raise GenossmError(
                f"{self.path}: read {len(seq)} bases for {name}:{start}-{end} instead of {end - start}; "
                "the file is truncated or its index is stale"
            )
        self._count_non_bases(seq, name, start)
        return seq

    def _count_non_bases(self, seq: str, contig: str, start: int) -> None:
        """Count characters that are not letters (digits, ``*``, ``.``, ``-``): they read as N like IUPAC codes,
        but unlike them they are no nucleotide code at all, so the first sighting in a file is worth a warning."""
        odd = len(seq.translate(_DROP_LETTERS))
        if not odd:
            return
        self.non_base_count += odd
        if not self._warned_non_bases:
            self._warned_non_bases = True
            at = next(i for i, ch in enumerate(seq) if not ch.isalpha())
            log.warning(
                "%s: %d non-base character(s) in %s:%d-%d (the first, %r, at %s:%d, 1-based) are read as N; "
                "this warning is shown once per file (Genome.non_base_count keeps the total)",
                self.path, odd, contig, start + 1, start + len(seq), seq[at], contig, start + at + 1,
            )

    def fetch_tokens(self, contig: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """``(uint8 token ids, bool soft-mask)`` of bases ``[start, end)``."""
        return tokenizer.encode_with_softmask(self.fetch(contig, start, end).encode("ascii", errors="replace"))

    def iter_blocks(self, contig: str, block_len: int = 1 << 23) -> Iterator[tuple[int, str]]:
        """``(start, bases)`` of a whole contig in blocks of ``block_len`` bases (for building caches)."""
        name = self.resolve(contig)
        length = self.all_lengths[name]
        for start in range(0, length, block_len):
            yield start, self.fetch(name, start, min(start + block_len, length))

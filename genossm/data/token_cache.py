"""The token cache: a FASTA encoded once into uint8 memory-mapped files, and reused.

:class:`TokenCache` holds one file per contig, one byte per base: token id in the low bits, soft-mask in
bit 7 (see :func:`genossm.data.tokenizer.pack`). It lives in the FASTA's cache folder
(:func:`genossm.data.cache_folder.cache_folder`) and is reused while the FASTA is unchanged (same size and
modification time) and rebuilt when it changed. :func:`open_tokens` opens a genome given as one FASTA or a
list of them; :func:`fasta_value` and :func:`fasta_label` spell such a ``fasta=`` value for files and
messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from genossm.atomic import atomic_write
from genossm.data import tokenizer
from genossm.data.cache_folder import cache_folder, fingerprint
from genossm.data.genome import Genome, canonical_contig, fasta_paths, resolve_contig, select_contigs
from genossm.errors import GenossmError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
BUILD_BLOCK = 1 << 23  # bases per pyfaidx read while building the cache




@contextlib.contextmanager
def _cache_lock(fasta: Path, cache_dir) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder of ``fasta`` while its index and token cache are checked or
    built: DDP ranks started together (SLURM) open the same genome at once, and one of them builds while the
    others wait, then reuse it. (An advisory ``flock``; where the file system has none, no lock.)"""
    try:
        import fcntl
    except ImportError:  # not on a POSIX system
        yield
        return
    if not fasta.exists():
        yield  # the caller reports the missing file
        return
    path = cache_folder(fasta, cache_dir) / ".lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


class TokenCache:
    """Packed tokens of a FASTA's contigs in memory-mapped files, built once and reused.

    Open with :meth:`TokenCache.open`. Only the contigs asked for are encoded (all by default); asking for
    more later encodes just those.
    """

    def __init__(self, fasta: Path, folder: Path, manifest: dict, contig_names: list[str]):
        self.fasta = fasta
        self.paths = [fasta]  # the FASTA files of the genome (see MultiTokenCache)
        self.folder = folder
        self._manifest = manifest
        self.contig_names = contig_names
        self.all_lengths: dict[str, int] = {n: int(c["length"]) for n, c in manifest["contigs"].items()}
        self.lengths: dict[str, int] = {n: self.all_lengths[n] for n in contig_names}
        self._maps: dict[str, np.ndarray] = {}

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        fasta: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        contigs=None,
    ) -> "TokenCache":
        """The token cache of ``fasta`` (plain, gzip or bgzip), building the missing parts.

        ``cache_dir``: where caches go (default: ``.genossm-cache/`` beside the FASTA, or the user cache
        folder when that is read-only). ``contigs``: names, aliases or a regular expression (default all).
        For a genome spread over several files use :func:`open_tokens`.
        """
        fasta = Path(fasta)
        with _cache_lock(fasta, cache_dir):
            folder, manifest, genome = cls._manifest(fasta, cache_dir)
            names = select_contigs(list(manifest["contigs"]), contigs, str(fasta))
            if not names:
                raise GenossmError(f"{fasta}: no contig matches {contigs!r}")
            return cls._build(fasta, cache_dir, folder, manifest, names, genome)

    @staticmethod
    def _manifest(fasta: Path, cache_dir) -> tuple[Path, dict, Genome | None]:
        """The cache folder and manifest of ``fasta`` (contig names and lengths; what is built), reset when
        the file changed since; the :class:`Genome` when it had to be opened for that."""
        if not fasta.exists():
            raise GenossmError(f"{fasta}: FASTA file not found")
        folder = cache_folder(fasta, cache_dir) / "tokens"
        folder.mkdir(parents=True, exist_ok=True)
        manifest_path = folder / "manifest.json"
        source = {"path": str(fasta.resolve()), **fingerprint(fasta), "version": CACHE_VERSION}
        manifest = None
        if manifest_path.exists():
            with contextlib.suppress(ValueError, OSError):
                manifest = json.loads(manifest_path.read_text())
            if manifest is not None and manifest.get("source") != source:
                log.info("%s changed since its token cache was built: rebuilding %s", fasta, folder)
                manifest = None
                for child in folder.iterdir():
                    if child.name != manifest_path.name:
                        child.unlink()
        genome = None
        if manifest is None:
            genome = Genome(fasta, cache_dir=cache_dir)
            manifest = {
                "source": source,
                "contigs": {
                    name: {"length": genome.all_lengths[name], "file": f"contig{i:06d}.u8", "built": False}
                    for i, name in enumerate(genome.all_lengths)
                },
            }
        return folder, manifest, genome

    @classmethod
    def _build(cls, fasta: Path, cache_dir, folder: Path, manifest: dict, names: list[str],
               genome: Genome | None = None) -> "TokenCache":
        """Encode the contigs ``names`` that are not in the cache yet; the cache over ``names``."""
        manifest_path = folder / "manifest.json"
        todo = [n for n in names if not manifest["contigs"][n]["built"] or not (folder / manifest["contigs"][n]["file"]).exists()]
        if todo:
            genome = genome or Genome(fasta, cache_dir=cache_dir)
            started = time.perf_counter()
            total = sum(manifest["contigs"][n]["length"] for n in todo)
            log.info("encoding %d contig(s), %s bases of %s into the token cache %s", len(todo), f"{total:,}", fasta, folder)
            for name in todo:
                entry = manifest["contigs"][name]
                _encode_contig(genome, name, folder / entry["file"])
                entry["built"] = True
                with atomic_write(manifest_path, "w") as handle:
                    json.dump(manifest, handle, indent=1)
            log.info("token cache built in %.1f s", time.perf_counter() - started)
        return cls(fasta, folder, manifest, names)

    # -- reading ----------------------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        return resolve_contig(list(self.all_lengths), name, str(self.fasta))

    def file_of(self, contig: str) -> Path:
        """The FASTA file holding ``contig``."""
        self.resolve(contig)
        return self.fasta

    def packed(self, contig: str) -> np.ndarray:
        """The whole contig as a read-only uint8 memmap of packed tokens."""
        name = contig if contig in self._maps else self.resolve(contig)
        arr = self._maps.get(name)
        if arr is None:
            entry = self._manifest["contigs"][name]
            if not entry["built"]:
                raise GenossmError(f"{self.fasta}: contig {name!r} was not selected when the token cache was opened")
            length = int(entry["length"])
            arr = np.memmap(self.folder / entry["file"], dtype=np.uint8, mode="r", shape=(length,)) if length else np.zeros(0, np.uint8)
            self._maps[name] = arr
        return arr

    def tokens(self, contig: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """``(uint8 ids, bool soft-mask)`` of bases ``[start, end)`` (0-based, half-open)."""
        arr = self.packed(contig)
        if not 0 <= start <= end <= len(arr):
            raise GenossmError(f"{self.fasta}: region {contig}:{start}-{end} is outside the contig (length {len(arr)})")
        return tokenizer.unpack(np.asarray(arr[start:end]))

    def n_fraction(self, contig: str, start: int = 0, end: int | None = None) -> float:
        arr = self.packed(contig)
        end = len(arr) if end is None else end
        return float(np.count_nonzero((arr[start:end] & 0x7F) == tokenizer.N)) / max(end - start, 1)

    def __getstate__(self):  # memmaps reopen lazily in each worker process
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __repr__(self) -> str:
        return f"TokenCache({str(self.fasta)!r}, {len(self.contig_names)} contigs, {sum(self.lengths.values()):,} bp)"


class MultiTokenCache:
    """A genome spread over several FASTA files (``fasta=[a.fa,b.fa.gz]``): the contigs of all files together,
    in list order, with the reading interface of :class:`TokenCache`.

    Each file keeps its own :class:`TokenCache` (rebuilt when that file changes). A contig name present in
    two files, or two names that the alias table makes one contig (``chr20`` and ``20``), is an error: the
    contigs of the list form one genome. Open with :func:`open_tokens`.
    """

    def __init__(self, caches: Sequence[TokenCache], contig_names: list[str]):
        self.caches = list(caches)
        self.paths = [c.fasta for c in self.caches]
        self.fasta = " + ".join(str(p) for p in self.paths)  # for messages
        self._owner = {name: cache for cache in self.caches for name in cache.all_lengths}
        self.all_lengths: dict[str, int] = {n: c.all_lengths[n] for n, c in self._owner.items()}
        self.contig_names = list(contig_names)
        self.lengths: dict[str, int] = {n: self.all_lengths[n] for n in self.contig_names}

    def resolve(self, name: str) -> str:
        return resolve_contig(list(self.all_lengths), name, self.fasta)

    def file_of(self, contig: str) -> Path:
        return self._owner[self.resolve(contig)].fasta

    def packed(self, contig: str) -> np.ndarray:
        name = contig if contig in self._owner else self.resolve(contig)
        return self._owner[name].packed(name)

    def tokens(self, contig: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.resolve(contig)
        return self._owner[name].tokens(name, start, end)

    def n_fraction(self, contig: str, start: int = 0, end: int | None = None) -> float:
        name = self.resolve(contig)
        return self._owner[name].n_fraction(name, start, end)

    def __repr__(self) -> str:
        return f"MultiTokenCache({len(self.paths)} files, {len(self.contig_names)} contigs, {sum(self.lengths.values()):,} bp)"


def open_tokens(fasta, cache_dir: str | os.PathLike | None = None, contigs=None) -> TokenCache | MultiTokenCache:
    """The token cache of a genome given as one FASTA path or a list of them (see :func:`fasta_paths`).

    ``contigs`` (names, aliases or a regular expression) picks among the contigs of all files; only the
    picked contigs are encoded. One file gives a :class:`TokenCache`, several a :class:`MultiTokenCache`.
    """
    paths = fasta_paths(fasta)
    if len(paths) == 1:
        return TokenCache.open(paths[0], cache_dir, contigs)
    with contextlib.ExitStack() as locks:
        for path in paths:  # always in list order: two processes opening the same list cannot deadlock
            if not path.exists():
                raise GenossmError(f"{path}: FASTA file not found")
            locks.enter_context(_cache_lock(path, cache_dir))
        return _open_several(paths, cache_dir, contigs)


def _open_several(paths: list[Path], cache_dir, contigs) -> MultiTokenCache:
    opened = [(path, *TokenCache._manifest(path, cache_dir)) for path in paths]
    seen: dict[str, tuple[str, Path]] = {}  # alias key -> (name, file)
    for path, _, manifest, _ in opened:
        for name in manifest["contigs"]:
            key = canonical_contig(name)
            if key in seen and seen[key][1] != path:  # inside one file the alias table resolves exact names first
                other, other_path = seen[key]
                same = f"contig {name!r}" if other == name else f"contigs {other!r} and {name!r} (the same contig by the alias table)"
                raise GenossmError(
                    f"{other_path} and {path}: {same} in both files; the FASTA files of a list form one genome, so "
                    "contig names must be unique across them (rename one, or leave one file out)"
                )
            seen.setdefault(key, (name, path))
    source = " + ".join(str(p) for p in paths)
    names = select_contigs([n for _, _, m, _ in opened for n in m["contigs"]], contigs, source)
    if not names:
        raise GenossmError(f"{source}: no contig matches {contigs!r}")
    picked = set(names)
    caches = [
        TokenCache._build(path, cache_dir, folder, manifest, [n for n in manifest["contigs"] if n in picked], genome)
        for path, folder, manifest, genome in opened
    ]
    return MultiTokenCache(caches, names)


def _encode_contig(genome: Genome, name: str, target: Path) -> None:
    length = genome.all_lengths[name]
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for _, seq in genome.iter_blocks(name, BUILD_BLOCK):
                ids, soft = tokenizer.encode_with_softmask(seq.encode("ascii", errors="replace"))
                out.write(tokenizer.pack(ids, soft).tobytes())
        if tmp.stat().st_size != length:
            raise GenossmError(f"{genome.path}: contig {name!r} gave {tmp.stat().st_size} bases instead of {length}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# the fasta= value


def fasta_value(fasta):
    """``fasta`` as JSON/YAML wants it: one path string, or a list of them for a genome in several files."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(fasta):
        fasta = OmegaConf.to_container(fasta, resolve=True)
    return [str(f) for f in fasta] if isinstance(fasta, (list, tuple)) else str(fasta)


def fasta_label(fasta) -> str:
    """A short name for titles and messages: the file name, or the file names joined by ``+``."""
    value = fasta_value(fasta)
    return " + ".join(Path(f).name for f in value) if isinstance(value, list) else Path(value).name

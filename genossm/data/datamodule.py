"""LightningDataModule over a genome's token cache, configured from ``conf/data/*.yaml``.

Each batch is a dict::

    tokens    LongTensor (B, L)   token ids (A=0 C=1 G=2 T=3 N=4, <pad>=5 beyond an interval's end)
    softmask  BoolTensor (B, L)   True at soft-masked (lowercase) bases
    valid     BoolTensor (B, L)   True at real sequence, False at padding
    contig    list[str]           the window's contig
    start     LongTensor (B,)     0-based start of the window on the forward strand
    rc        BoolTensor (B,)     True when the window was reverse-complemented (training augmentation)
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import lightning as L
from torch.utils.data import DataLoader

from genossm.data.genome import fasta_paths
from genossm.data.windows import (
    Interval,
    MultiTokenCache,
    RandomWindows,
    SplitSpec,
    TiledWindows,
    TokenCache,
    make_splits,
    open_tokens,
    unpack_batch,
)
from genossm.errors import GenossmError

log = logging.getLogger(__name__)

MAX_WINDOW_LEN = 1 << 20


class _EpochLoader(DataLoader):
    """Tells the dataset which epoch starts (the trainer's when attached) before workers copy it."""

    def __init__(self, dataset, epoch_fn, window_len_fn=None, **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self._epoch_fn = epoch_fn
        self._window_len_fn = window_len_fn

    def __iter__(self):
        if self._window_len_fn is not None and self.dataset.window_len != self._window_len_fn():
            self.dataset.set_window_len(self._window_len_fn())  # sequence-length warm-up between epochs
        self.dataset.set_epoch(self._epoch_fn())
        return map(unpack_batch, super().__iter__())  # workers send packed bytes


class GenomeDataModule(L.LightningDataModule):
    """Windows of a FASTA genome for masked-LM training and evaluation.

    Args:
        fasta: path of the genome (plain, gzip or bgzip FASTA), or a list of paths whose contigs together
            form the genome (each file has its own token cache; contig names must be unique across files).
        window_len: bases per window (1 kb .. 1 Mb); can change between epochs with :meth:`set_window_len`.
        batch_size: windows per batch.
        num_workers: DataLoader worker processes (0: in the main process).
        contigs: contigs to use: a list of names/aliases or a regular expression (None: all).
        rc_augment: reverse-complement half of the training windows.
        max_n_fraction: skip windows with a larger fraction of N.
        val_contigs, test_contigs: contigs held out whole.
        train_bed, val_bed, test_bed: BED files of split intervals (train default: everything not held out).
        val_fraction, test_fraction: hold out the last stretches of every remaining contig.
        samples_per_epoch: training windows per epoch (across DDP ranks).
        eval_window_len: window length for val/test (default ``window_len``).
        max_eval_windows: cap on val/test windows (evenly spread), None for all.
        seed: base seed; batches are drawn from (seed, epoch, rank, batch index).
        cache_dir: where the token cache goes (default ``.genossm-cache/`` beside the FASTA, or the user
            cache folder when that folder is read-only).
    """

    def __init__(
        self,
        fasta: str | os.PathLike | Sequence[str | os.PathLike],
        window_len: int = 1024,
        batch_size: int = 8,
        num_workers: int = 0,
        contigs: Sequence[str] | str | None = None,
        rc_augment: bool = True,
        max_n_fraction: float = 0.5,
        val_contigs: Sequence[str] | None = None,
        test_contigs: Sequence[str] | None = None,
        train_bed: str | None = None,
        val_bed: str | None = None,
        test_bed: str | None = None,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        samples_per_epoch: int = 1024,
        eval_window_len: int | None = None,
        max_eval_windows: int | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ):
        super().__init__()
        self.paths = fasta_paths(fasta, must_exist=False)
        self.fasta = self.paths[0] if isinstance(fasta, (str, os.PathLike)) else self.paths
        self.window_len = self._check_len(window_len, "window_len")
        self.eval_window_len = self._check_len(eval_window_len, "eval_window_len") if eval_window_len else None
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.contigs = list(contigs) if contigs is not None and not isinstance(contigs, str) else contigs
        self.rc_augment = bool(rc_augment)
        self.max_n_fraction = float(max_n_fraction)
        self.split_spec = SplitSpec(
            val_contigs=list(val_contigs) if val_contigs else None,
            test_contigs=list(test_contigs) if test_contigs else None,
            train_bed=train_bed, val_bed=val_bed, test_bed=test_bed,
            val_fraction=float(val_fraction), test_fraction=float(test_fraction),
        )
        self.samples_per_epoch = int(samples_per_epoch)
        self.max_eval_windows = max_eval_windows
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.cache: TokenCache | MultiTokenCache | None = None
        self._splits: dict[str, list[Interval]] | None = None
        self._epoch = 0

    @staticmethod
    def _check_len(n, name: str) -> int:
        n = int(n)
        if not 1 <= n <= MAX_WINDOW_LEN:
            raise GenossmError(f"{name} must be between 1 and {MAX_WINDOW_LEN:,} bases, got {n:,}")
        return n

    # -- Lightning hooks --------------------------------------------------------------------------

    def prepare_data(self) -> None:
        open_tokens(self.fasta, self.cache_dir, self.contigs)

    def setup(self, stage: str | None = None) -> None:
        if self.cache is None:
            self.cache = open_tokens(self.fasta, self.cache_dir, self.contigs)
            self._splits = make_splits(self.cache, self.split_spec)
            for split, ivs in self._splits.items():
                log.info("%s split: %d interval(s), %s bases", split, len(ivs), f"{sum(e - s for _, s, e in ivs):,}")
            for split in ("train", "val"):
                ivs = self._splits.get(split) or []
                bases = sum(e - s for _, s, e in ivs)
                scorable = sum((e - s) * (1.0 - self.cache.n_fraction(c, s, e)) for c, s, e in ivs)
                if ivs and scorable < 1:
                    raise GenossmError(
                        f"{self.cache.fasta}: the {split} split ({bases:,} bases) holds no A, C, G or T, only N: "
                        "there is nothing to train on or score; check the FASTA (or the contigs and split chosen)"
                    )

    def intervals(self, split: str) -> list[Interval]:
        """The split's intervals ``(contig, start, end)``, 0-based half-open (``split``: train, val or test)."""
        if split not in ("train", "val", "test"):
            raise GenossmError(f"unknown split {split!r}: use train, val or test")
        self.setup()
        return list(self._splits[split])

    def set_window_len(self, window_len: int) -> None:
        """Change the training window length from the next epoch on (sequence-length warm-up)."""
        if self.persistent_workers:
            raise GenossmError("set_window_len needs persistent_workers=False (workers copy the dataset once)")
        self.window_len = self._check_len(window_len, "window_len")

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.current_epoch)
        epoch, self._epoch = self._epoch, self._epoch + 1
        return epoch

    def _loader(self, dataset, epoch_fn, window_len_fn=None) -> DataLoader:
        return _EpochLoader(
            dataset,
            epoch_fn,
            window_len_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataset(self) -> RandomWindows:
        self.setup()
        rank, world = self._rank()
        return RandomWindows(
            self.cache, self._splits["train"], self.window_len, self.batch_size, seed=self.seed,
            rc_augment=self.rc_augment, max_n_fraction=self.max_n_fraction, rank=rank, world_size=world,
            samples_per_epoch=self.samples_per_epoch,
        )

    def eval_dataset(self, split: str, all_ranks: bool = False) -> TiledWindows:
        """Tiled windows of ``split``: under DDP this rank's share of them, or every window with ``all_ranks``."""
        ivs = self.intervals(split)
        if not ivs:
            raise GenossmError(f"the {split} split of {self.cache.fasta} is empty: set val/test contigs, BED files or fractions")
        rank, world = (0, 1) if all_ranks else self._rank()
        return TiledWindows(
            self.cache, ivs, self.eval_window_len or self.window_len, self.batch_size, seed=self.seed,
            max_n_fraction=self.max_n_fraction, rank=rank, world_size=world, max_windows=self.max_eval_windows,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), self._current_epoch, lambda: self.window_len)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val"), lambda: 0)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test"), lambda: 0)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test"), lambda: 0)

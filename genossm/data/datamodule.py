"""LightningDataModule over a genome's token cache, configured from ``conf/data/*.yaml``.

Each batch is a dict::

    tokens    LongTensor (B, L)   token ids (A=0 C=1 G=2 T=3 N=4, <pad>=5 beyond an interval's end)
    softmask  BoolTensor (B, L)   True at soft-masked (lowercase) bases
    valid     BoolTensor (B, L)   True at real sequence, False at padding
    contig    list[str]           the window's contig
    start     LongTensor (B,)     0-based start of the window on the forward strand
    rc        BoolTensor (B,)     True when the window was reverse-complemented (training augmentation)

The module's own state (``state_dict``, kept in every Lightning checkpoint) is how many batches of the current
training epoch were already trained on: after a resume the first training epoch skips them, so the run goes
on with exactly the batch the interrupted one would have trained on next (batches are a pure function of
seed, epoch, rank and index, and the epoch comes from the restored trainer). The training window length can
grow epoch by epoch (:class:`WindowLenSchedule`, HyenaDNA-style sequence-length warm-up).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from genossm.data.genome import fasta_paths
from genossm.data.intervals import Interval, SplitSpec, make_splits
from genossm.data.token_cache import MultiTokenCache, TokenCache, fasta_label, open_tokens
from genossm.data.windows import RandomWindows, TiledWindows, unpack_batch
from genossm.errors import GenossmError
from genossm.options import whole

log = logging.getLogger(__name__)

MAX_WINDOW_LEN = 1 << 20


@dataclass(frozen=True)
class WindowLenSchedule:
    """Sequence-length warm-up: the training window starts at ``start_len`` and is multiplied by ``growth``
    every ``epochs_per_stage`` epochs until it reaches the configured ``window_len``."""

    start_len: int = 1024
    growth: float = 2.0
    epochs_per_stage: int = 1

    @classmethod
    def from_config(cls, values: Mapping | None) -> "WindowLenSchedule | None":
        if not values:
            return None
        values = dict(values)
        return cls(int(values.get("start_len", 1024)), float(values.get("growth", 2)),
                   max(1, int(values.get("epochs_per_stage", 1))))

    def window_len(self, epoch: int, target: int) -> int:
        return int(min(target, self.start_len * self.growth ** (epoch // self.epochs_per_stage)))


class _EpochLoader(DataLoader):
    """Before each pass (and before workers copy the dataset) tells it which epoch starts; for training also
    the epoch's window length and, after a resume, how many batches of the epoch were already done."""

    def __init__(self, dataset, datamodule: "GenomeDataModule", train: bool, **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self.datamodule = datamodule
        self.train = train

    def __iter__(self):
        skip = 0
        if self.train:
            epoch = self.datamodule.current_epoch()
            window_len = self.datamodule.window_len_at(epoch)
            if self.dataset.window_len != window_len:
                self.dataset.set_window_len(window_len)
            self.dataset.set_epoch(epoch)
            skip = self.datamodule.take_resume_skip(epoch)
        else:
            self.dataset.set_epoch(0)
        batches = map(unpack_batch, super().__iter__())  # workers send packed bytes
        for _ in range(skip):
            next(batches, None)
        return batches


class EvaluationPasses(IterableDataset):
    """The batches of ``windows``, ``passes`` times over; each names the key of its masks (``mask_index``), so
    every pass masks other positions and every run of the same evaluation masks the same ones."""

    def __init__(self, windows: TiledWindows, passes: int = 1):
        self.windows = windows
        self.passes = int(passes)

    def __iter__(self):
        for p in range(self.passes):
            for index, batch in enumerate(self.windows):
                yield dict(batch, mask_index=index + p * 1_000_003)


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
        window_len_warmup: ``{start_len, growth, epochs_per_stage}`` (:class:`WindowLenSchedule`): the
            training window grows to ``window_len`` over the first epochs; None: ``window_len`` throughout.
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
        window_len_warmup: Mapping | None = None,
    ):
        super().__init__()
        self.paths = fasta_paths(fasta, must_exist=False)
        self.fasta = self.paths[0] if isinstance(fasta, (str, os.PathLike)) else self.paths
        # sizes are checked here (OptionError names the argument; the config edge adds the node: data.batch_size)
        self.window_len = self._check_len(whole(window_len, "window_len"), "window_len")
        eval_window_len = whole(eval_window_len, "eval_window_len", null=True)
        self.eval_window_len = self._check_len(eval_window_len, "eval_window_len") if eval_window_len else None
        self.batch_size = whole(batch_size, "batch_size")
        self.num_workers = whole(num_workers, "num_workers", minimum=0)
        self.contigs = list(contigs) if contigs is not None and not isinstance(contigs, str) else contigs
        self.rc_augment = bool(rc_augment)
        self.max_n_fraction = float(max_n_fraction)
        self.split_spec = SplitSpec(
            val_contigs=list(val_contigs) if val_contigs else None,
            test_contigs=list(test_contigs) if test_contigs else None,
            train_bed=train_bed, val_bed=val_bed, test_bed=test_bed,
            val_fraction=float(val_fraction), test_fraction=float(test_fraction),
        )
        self.samples_per_epoch = whole(samples_per_epoch, "samples_per_epoch")
        self.max_eval_windows = whole(max_eval_windows, "max_eval_windows", null=True)
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.cache: TokenCache | MultiTokenCache | None = None
        self._splits: dict[str, list[Interval]] | None = None
        self._epoch = 0
        self.window_len_warmup = WindowLenSchedule.from_config(window_len_warmup)
        if self.window_len_warmup is not None and self.persistent_workers:
            raise GenossmError("data.window_len_warmup needs persistent_workers=False (workers copy the dataset once)")
        self._resume_skip: tuple[int | None, int] = (None, 0)

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

    def window_len_at(self, epoch: int) -> int:
        """The training window length of ``epoch`` (the warm-up schedule's, else ``window_len``)."""
        if self.window_len_warmup is None:
            return self.window_len
        return self.window_len_warmup.window_len(epoch, self.window_len)

    # -- resumable state (Lightning saves it in checkpoints and restores it before the first epoch) -------

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {"epoch": 0, "batches_done": 0}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": int(trainer.current_epoch), "batches_done": int(done)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_skip = (state_dict.get("epoch"), int(state_dict.get("batches_done", 0)))

    def take_resume_skip(self, epoch: int) -> int:
        """Batches the first training pass after a resume skips (once): those of the checkpoint's epoch already
        trained on. A checkpoint written after an epoch's last batch resumes at the start of the next epoch
        (Lightning counts that epoch as done), which skips nothing."""
        (saved_epoch, done), self._resume_skip = self._resume_skip, (None, 0)
        if saved_epoch is not None and int(saved_epoch) != int(epoch):
            return 0
        return done

    def current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.current_epoch)
        epoch, self._epoch = self._epoch, self._epoch + 1
        return epoch

    def _loader(self, dataset, train: bool = False) -> DataLoader:
        return _EpochLoader(
            dataset,
            self,
            train,
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
        return self._loader(self.train_dataset(), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test"))

    # -- the bases the baselines see ----------------------------------------------------------------

    def eval_bases(self, split: str = "val") -> list:
        """The bases the model is scored on for ``split``: every real position of every evaluation window, one
        array per window (the model sees no context beyond its window, nor does the Markov model)."""
        seqs = []
        for batch in self.eval_dataset(split, all_ranks=True):
            for tokens, valid in zip(batch["tokens"], batch["valid"]):
                seqs.append(tokens[valid].numpy())
        return seqs

    def train_bases(self, max_bases: int | None = None) -> list:
        """The training split's bases (interval by interval; the first ``max_bases`` when capped)."""
        seqs, total = [], 0
        for contig, start, end in self.intervals("train"):
            if max_bases is not None and total >= max_bases:
                break
            if max_bases is not None:
                end = min(end, start + max_bases - total)
            ids, _ = self.cache.tokens(contig, start, end)
            seqs.append(ids)
            total += end - start
        return seqs

    def check_window_fits(self) -> None:
        """Fail with one message when the training window is longer than every training interval."""
        longest = max((e - s for _, s, e in self.intervals("train")), default=0)
        if self.window_len > longest:
            raise GenossmError(
                f"data.window_len={self.window_len:,} is longer than the longest training interval of "
                f"{fasta_label(self.fasta)} ({longest:,} bases): every window would be mostly padding; choose "
                f"data.window_len <= {longest:,}"
            )

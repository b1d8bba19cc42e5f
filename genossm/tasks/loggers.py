"""Loggers: Lightning's CSV logger, made to keep a run's history across resumes and failed starts.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` as soon as it starts in a folder that has one, so a resume
that failed or was stopped before its first step (a checkpoint that does not fit, SIGTERM or kill -9 during
the restore) lost the whole history. :class:`ResumableCSVLogger` never deletes it: it reads the earlier rows
when it is created and leaves the file as it is until the resumed run has rows of its own to write. Then it
writes, atomically (a temporary file renamed over ``metrics.csv``), the earlier rows logged before the
restored step followed by the new ones; the earlier rows after that step are recomputed by the resumed run
and replaced. Every later save rewrites the file the same way, so a run killed at any moment leaves either the
previous ``metrics.csv`` or the new one, whole.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from genossm.atomic import atomic_path, atomic_write

log = logging.getLogger("genossm.loggers")


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics CSV as text, without empty cells; raises ValueError when it is not a readable CSV."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(str(err)) from None
    if rows and "step" not in rows[0]:
        raise ValueError("no 'step' column")
    # a short last line (a file cut off mid-write by an older version) has None cells; extra cells a None key
    return [{k: v for k, v in r.items() if k is not None and isinstance(v, str) and v != ""} for r in rows]


def _step(row: dict) -> int | None:
    try:
        return int(float(row.get("step", "")))
    except (TypeError, ValueError):
        return None


def _aside(path: Path) -> Path:
    """A free name beside ``path`` for an unreadable file kept aside: metrics.unreadable.csv, then .1, .2, ..."""
    kept = path.with_name(f"{path.stem}.unreadable{path.suffix}")
    n = 0
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.stem}.unreadable.{n}{path.suffix}")
    return kept


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV experiment writer that never deletes the file it finds, and writes the whole file
    atomically (earlier rows kept, then this run's) on every save."""

    def __init__(self, log_dir: str, previous: list[dict], unreadable: str | None) -> None:
        super().__init__(log_dir)
        self.previous = previous  # the rows found in the file; all kept until told which to keep
        self.unreadable = unreadable  # why the file found could not be read (it is kept aside at the first save)
        self.rows: list[dict] = []  # this run's rows, already saved

    def _check_log_dir_exists(self) -> None:  # Lightning deletes metrics.csv here
        pass

    def log_hparams(self, params: dict[str, Any]) -> None:
        from lightning.pytorch.core.saving import save_hparams_to_yaml

        self.hparams.update(params)
        with atomic_path(Path(self.log_dir) / self.NAME_HPARAMS_FILE, ".yaml") as tmp:
            save_hparams_to_yaml(tmp, self.hparams)

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        if self.unreadable is not None and path.is_file():
            kept = _aside(path)
            os.replace(path, kept)
            log.warning(f"{path}: not a readable metrics CSV ({self.unreadable}); kept aside as {kept.name}, "
                        "the history starts afresh")
            self.unreadable = None
        self.rows.extend({k: v for k, v in r.items() if v is not None} for r in self.metrics)
        self.metrics = []
        rows = self.previous + self.rows
        keys = sorted(set().union(*rows))
        self.metrics_keys = keys
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        with atomic_write(path, "w") as handle:
            handle.write(text.getvalue())


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` covers the whole run after any number of resumes, and is never
    deleted or cut short by a run that fails or is stopped before writing rows of its own."""

    def __init__(self, save_dir: str | os.PathLike, name: str = "lightning_logs", version: str | int | None = None,
                 **kwargs):
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._previous: list[dict] = []
        self._unreadable: str | None = None
        path = Path(self.log_dir) / "metrics.csv"
        if path.is_file():
            try:
                self._previous = read_rows(path)
            except ValueError as err:  # kept aside (at the first save) rather than lost
                self._unreadable = str(err)

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._previous, self._unreadable)
        return self._experiment

    def keep_rows_before(self, step: int) -> int:
        """Keep only the earlier run's rows logged before ``step`` (the resumed run's first step); returns how
        many. Nothing is written until the run saves rows of its own."""
        writer = self.experiment
        if not isinstance(writer, _KeepingWriter):  # another rank than 0: it writes nothing
            return 0
        writer.previous = [r for r in writer.previous if _step(r) is not None and _step(r) < step]
        return len(writer.previous)


class KeepMetricHistory(Callback):
    """At the start of training (after a checkpoint is restored): every :class:`ResumableCSVLogger` keeps the
    earlier rows before the resumed step (none for a fresh run, which starts at step 0)."""

    def on_train_start(self, trainer, pl_module):
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.keep_rows_before(int(trainer.global_step))

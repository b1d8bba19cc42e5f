"""Loggers: Lightning's CSV logger, made to keep a run's history across resumes.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` whenever it starts in a folder that has one, so every resumed
or requeued run lost the rows logged before its checkpoint. :class:`ResumableCSVLogger` reads the earlier
rows when it is created and, once training starts (the checkpoint restored), writes back those logged before
the restored step; the rows after it are recomputed by the resumed run and replace the old ones.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger

log = logging.getLogger("genossm.loggers")


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` covers the whole run after any number of resumes."""

    def __init__(self, save_dir: str | os.PathLike, name: str = "lightning_logs", version: str | int | None = None,
                 **kwargs):
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._previous: list[dict] = []
        path = Path(self.log_dir) / "metrics.csv"
        if path.is_file():
            try:
                with open(path, newline="") as handle:
                    self._previous = [row for row in csv.DictReader(handle)]
            except (UnicodeDecodeError, csv.Error) as err:  # not a CSV: keep it aside rather than lose it
                kept = path.with_name("metrics.unreadable.csv")
                os.replace(path, kept)
                log.warning(f"{path}: not a readable CSV ({err}); moved to {kept.name}, the history starts afresh")

    def keep_rows_before(self, step: int) -> int:
        """Put back the earlier run's rows logged before ``step`` (the resumed run's first step); returns how many."""
        rows = [r for r in self._previous if _step(r) is not None and _step(r) < step]
        self._previous = []
        if rows:
            rows = [{k: v for k, v in r.items() if v not in ("", None)} for r in rows]  # the text as it was
            self.experiment.metrics[:0] = rows
            self.save()
        return len(rows)


def _step(row: dict) -> int | None:
    try:
        return int(float(row.get("step", "")))
    except ValueError:
        return None


class KeepMetricHistory(Callback):
    """At the start of training (after a checkpoint is restored): every :class:`ResumableCSVLogger` puts back
    the earlier rows before the resumed step (none for a fresh run, which starts at step 0)."""

    def on_train_start(self, trainer, pl_module):
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.keep_rows_before(int(trainer.global_step))

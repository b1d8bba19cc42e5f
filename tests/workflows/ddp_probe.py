"""Test helper loaded into every rank of a real ``genossm pretrain`` DDP run (``+callbacks.probe._target_=
ddp_probe.RankProbe`` with this folder on PYTHONPATH). Each rank records, into ``<folder>/rank<r>.json`` when
its process exits:

* the training windows it read (contig, start, reverse-complemented) in order, with the epoch;
* the validation bits per base it saw after each validation;
* every file it opened for writing, or moved, into the run folder (through a Python audit hook, which sees
  ``open``, ``os.open`` and ``os.rename``/``os.replace``: also the temporary files of atomic writes, of
  safetensors/matplotlib outputs, and Lightning's checkpoints written elsewhere then moved in).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback

_TEMP = re.compile(r"^\.(.+)\.[^.]+\.tmp(\.[A-Za-z0-9.]+)?$")  # genossm.atomic.atomic_write/atomic_path names


class RankProbe(Callback):
    def __init__(self, folder: str, watch: str):
        super().__init__()
        self.folder = Path(folder)
        self.watch = os.path.abspath(watch)
        self.rank = int(os.environ.get("LOCAL_RANK", 0))
        self.windows: list = []
        self.val_bpb: list = []
        self.writes: set[str] = set()
        sys.addaudithook(self._audit)
        atexit.register(self._dump)

    def _audit(self, event, args):
        if event in ("os.rename", "os.replace") and len(args) >= 2:  # a file written elsewhere, moved in
            path = args[1]
        elif event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
            if not writing:
                return
        else:
            return
        if not isinstance(path, (str, bytes, os.PathLike)):
            return
        full = os.path.abspath(os.fsdecode(path))
        if full.startswith(self.watch + os.sep):
            rel = Path(os.path.relpath(full, self.watch))
            match = _TEMP.match(rel.name)
            self.writes.add(str(rel.with_name(match.group(1)) if match else rel))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rank = trainer.global_rank
        self.windows.append({
            "epoch": trainer.current_epoch,
            "index": batch_idx,
            "contig": list(batch["contig"]),
            "start": batch["start"].tolist(),
            "rc": batch["rc"].tolist(),
        })

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and "val/bpb" in trainer.callback_metrics:
            self.val_bpb.append(float(trainer.callback_metrics["val/bpb"]))

    def _dump(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"rank": self.rank, "windows": self.windows, "val_bpb": self.val_bpb, "writes": sorted(self.writes)}
        (self.folder / f"rank{self.rank}.json").write_text(json.dumps(record))

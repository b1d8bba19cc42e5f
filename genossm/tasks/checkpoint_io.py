"""Checkpoints written whole or not at all.

Lightning's ``TorchCheckpointIO`` writes a checkpoint in place (through fsspec), so a full disk or a quota
left a truncated ``best.ckpt``/``last.ckpt`` over the previous good one, and the run died with a traceback.
:class:`AtomicCheckpointIO` writes beside the final name and renames when complete (the rename is atomic on one
file system); a failed write leaves the previous checkpoint as it was and stops with one ``genossm: error:``
line naming the file.
"""

from __future__ import annotations

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from genossm.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_path(path, ".ckpt") as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)  # a Python file: a full disk is an OSError (ENOSPC), not a RuntimeError

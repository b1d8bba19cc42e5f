"""Callbacks: tokens/s in the progress bar, metric history, checkpoint-on-preemption (training); the prediction
writer that streams variant scores into per-rank shard files and the variant progress bar (scoring).

Also the optional TensorBoard logger factory, which fails with an install hint when TensorBoard is absent.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint

from genossm.errors import GenossmError
from genossm.options import whole

log = logging.getLogger(__name__)


class TokensPerSecond(Callback):
    """Shows training tokens/s (bases in the batch, over the last ``window`` steps, this rank) in the progress bar.

    Also keeps totals (``tokens``, ``seconds``) for the end-of-run summary.
    """

    def __init__(self, window: int = 20):
        super().__init__()
        self.window = window
        self._recent: deque = deque(maxlen=window)
        self._t0: float | None = None
        self.tokens = 0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        n = int(batch["tokens"].numel())
        self.tokens += n
        self.seconds += dt
        self._recent.append((n, dt))
        rate = sum(x for x, _ in self._recent) / max(sum(t for _, t in self._recent), 1e-9)
        pl_module.log("tok/s", rate, prog_bar=True, on_step=True, on_epoch=False, batch_size=1)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


class MetricHistory(Callback):
    """Records (step, train loss/bpb) every ``every_n_steps`` and (step, val loss/bpb) at every validation.

    Kept in checkpoints, so a resumed run's plot covers the whole run.
    """

    def __init__(self, every_n_steps: int = 10):
        super().__init__()
        self.every_n_steps = whole(every_n_steps, "every_n_steps")
        self.train: list[tuple[int, float, float]] = []
        self.val: list[tuple[int, float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        m = trainer.callback_metrics
        if "train/loss" in m:
            bpb = float(m["train/bpb"]) if "train/bpb" in m else float("nan")
            self.train.append((step, float(m["train/loss"]), bpb))

    def on_validation_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        if not trainer.sanity_checking and "val/bpb" in m:
            self.val.append((trainer.global_step, float(m["val/loss"]), float(m["val/bpb"])))

    def state_dict(self) -> dict[str, Any]:
        return {"train": list(self.train), "val": list(self.val)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = [tuple(x) for x in state_dict.get("train", [])]
        self.val = [tuple(x) for x in state_dict.get("val", [])]


def non_finite(tensors) -> list[str]:
    """The names of the tensors of a ``{name: tensor}`` mapping that hold a NaN or an infinite value."""
    return [name for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


class StopOnNonFinite(Callback):
    """Stop training with one message when the loss or the weights stop being finite numbers (a learning rate
    far too high): a model of NaN weights was trained to the end, exported, and scored every variant as NaN.
    The loss is checked at every step, the weights before every checkpoint is written (a checkpoint of NaN
    weights is never written: the earlier ones stay the run's latest)."""

    def _stop(self, trainer, pl_module, what: str) -> None:
        lr = getattr(getattr(pl_module, "hparams", {}), "get", lambda *_: None)("lr")
        raise GenossmError(f"training stopped at step {trainer.global_step}: {what} not a finite number (NaN or "
                           f"infinite)" + (f"; task.lr={lr} is likely too high" if lr is not None else "")
                           + "; the checkpoints written before this step are kept, no model was exported")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            self._stop(trainer, pl_module, f"the training loss is {float(loss.detach().float().mean())},")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        bad = non_finite(checkpoint.get("state_dict") or {})
        if bad:
            self._stop(trainer, pl_module, f"the weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) are")


def _epoch_ends_here(trainer) -> bool:
    """True at the end of an epoch's last training batch (the epoch-end hooks and validation still to come)."""
    return bool(getattr(trainer.fit_loop.epoch_loop.batch_progress, "is_last_batch", False))


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` for resuming: every ``every_n_train_steps``, at every validation, and at the end of training.

    Always the same file (no ``last-v1.ckpt`` beside a ``last.ckpt`` written by :class:`CheckpointOnSignal` or
    an earlier run). A periodic save that falls on an epoch's last batch is moved to the end of that epoch
    (after its validation, or at ``on_train_epoch_end`` without one): Lightning restores a checkpoint written
    between an epoch's last batch and its end as two finished epochs, one too many, so the resumed run would
    read the batches of the wrong epoch. From the epoch's end, resume is exact.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_train_steps: int | None = 100, **kwargs):
        every_n_train_steps = whole(every_n_train_steps, "every_n_train_steps", null=True)
        kwargs.update(save_last=True, save_top_k=0, enable_version_counter=False)
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, **kwargs)
        self._at_epoch_end = False

    def save_last_now(self, trainer) -> str:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        return self.last_model_path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if _epoch_ends_here(trainer):
            every = self._every_n_train_steps
            self._at_epoch_end = bool(every and every > 0 and trainer.global_step % every == 0)
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or self._should_skip_saving_checkpoint(trainer):
            return
        self._at_epoch_end = False
        self.save_last_now(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        if self._at_epoch_end and not self._should_skip_saving_checkpoint(trainer):
            self.save_last_now(trainer)
        self._at_epoch_end = False


class CheckpointOnSignal(Callback):
    """Saves ``last.ckpt`` when the cluster warns of the time limit, then lets the requeue owner act.

    genossm's SLURM set-up has ONE requeue owner: submitit (``hydra/launcher=slurm`` with
    ``max_num_timeout`` > 0) requeues the job on its signal (USR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says
    otherwise); Lightning's own SLURM auto-requeue is switched off. The signal handler only sets a flag;
    at the end of the current batch this callback writes the checkpoint and then calls the previous
    handler (submitit's), which requeues the job. A requeued job keeps its SLURM job id, so its run folder
    (``outputs/pretrain/slurm-<job id>``) and ``last.ckpt`` are found again.
    """

    def __init__(self, dirpath: str | os.PathLike, signal_name: str | None = None):
        super().__init__()
        self.dirpath = Path(dirpath)
        name = signal_name or os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        self.signum = getattr(signal, name if name.startswith("SIG") else f"SIG{name}")
        self._previous = None
        self._pending = False

    def on_train_start(self, trainer, pl_module):
        self._previous = signal.getsignal(self.signum)
        signal.signal(self.signum, self._flag)

    def _flag(self, signum, frame):
        self._pending = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._pending and not _epoch_ends_here(trainer):  # at an epoch's last batch: at the epoch's end
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module):
        if self._pending and trainer.training and not trainer.sanity_checking:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        if self._pending:
            self._save(trainer)

    def _save(self, trainer) -> None:
        self._pending = False
        # through the LastCheckpoint callback when there is one, so that it goes on writing the same last.ckpt
        last = next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)
                     and Path(c.dirpath) == self.dirpath), None)
        path = self.dirpath / "last.ckpt"
        if last is not None:
            path = Path(last.save_last_now(trainer))
        else:
            trainer.save_checkpoint(path)
        log.warning("time-limit signal: saved %s", path)
        if callable(self._previous):
            self._previous(self.signum, None)
        else:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        if self._previous is not None:
            signal.signal(self.signum, self._previous)


def tensorboard_logger(save_dir: str, name: str = "tensorboard", **kwargs):
    """A Lightning TensorBoardLogger, or a clear error telling how to install TensorBoard."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise GenossmError(
                "logger=tensorboard needs TensorBoard, which is not installed: run `pip install tensorboard` "
                "(or use the default logger=csv)"
            ) from None
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=save_dir, name=name, **kwargs)





SHARD_DTYPE = np.dtype([("index", "<i8"), ("llr", "<f8"), ("emb_dist", "<f8"), ("reason", "<i2")])


class ShardWriter(BasePredictionWriter):
    """Appends each batch's scores to this process's shard file as soon as it is predicted (nothing is
    accumulated in memory); :func:`merged_scores` later reads every shard back in input order."""

    def __init__(self, folder: str | os.PathLike, keep_embeddings: bool = False):
        super().__init__(write_interval="batch")
        self.folder = Path(folder)
        self.keep_embeddings = keep_embeddings
        self._files: dict[str, object] = {}
        self.n_written = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        # once every rank has joined: rank 0 clears what an interrupted run left, before anyone writes
        if trainer.is_global_zero and self.folder.exists():
            shutil.rmtree(self.folder)
        trainer.strategy.barrier("genossm-shards-cleared")

    def _file(self, name: str, rank: int):
        key = f"{name}.rank{rank:04d}.bin"
        if key not in self._files:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._files[key] = open(self.folder / key, "wb")
        return self._files[key]

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows = np.zeros(prediction["index"].shape[0], dtype=SHARD_DTYPE)
        rows["index"] = prediction["index"].cpu().numpy()
        rows["llr"] = prediction["llr"].cpu().numpy()
        rows["emb_dist"] = prediction["emb_dist"].cpu().numpy()
        rows["reason"] = prediction["reason"].cpu().numpy()
        rows.tofile(self._file("scores", trainer.global_rank))
        if self.keep_embeddings and "emb_ref" in prediction:
            both = torch.stack([prediction["emb_ref"], prediction["emb_alt"]], dim=1).float().cpu().numpy()
            both.tofile(self._file("embeddings", trainer.global_rank))
        self.n_written += len(rows)

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}

    def on_predict_end(self, trainer, pl_module):
        self.close()


class VariantProgress(Callback):
    """A progress bar counting variant alleles (with alleles/s), instead of Lightning's batches."""

    def __init__(self, total: int | None = None, enabled: bool = True):
        self.total = total
        self.enabled = enabled
        self.bar = None

    def on_predict_start(self, trainer, pl_module):
        if self.enabled and trainer.is_global_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, unit=" alleles", desc="scoring", dynamic_ncols=True)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.bar is not None:
            self.bar.update(int(batch["index"].shape[0]) * trainer.world_size)

    def on_predict_end(self, trainer, pl_module):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def merged_scores(folder: str | os.PathLike, rows: int = 65536) -> Iterator[np.void]:
    """Every shard's rows, merged by allele index (each shard is already in increasing order); ``rows``: how many
    of a shard's rows are read into memory at a time."""
    files = sorted(Path(folder).glob("scores.rank*.bin"))

    def shard_rows(path):
        data = np.memmap(path, dtype=SHARD_DTYPE, mode="r") if path.stat().st_size else np.zeros(0, SHARD_DTYPE)
        for i in range(0, len(data), rows):  # ``rows`` at a time into memory
            yield from np.array(data[i : i + rows])

    expected = 0
    for row in heapq.merge(*(shard_rows(p) for p in files), key=lambda r: int(r["index"])):
        if int(row["index"]) != expected:
            raise RuntimeError(f"score shards in {folder} are missing allele {expected} (found {int(row['index'])})")
        expected += 1
        yield row


def merged_embeddings(folder: str | os.PathLike, dim: int) -> Iterator[np.ndarray]:
    """The embedding rows ``(2, dim)`` in allele order, aligned with :func:`merged_scores`."""
    folder = Path(folder)
    streams = []
    for path in sorted(folder.glob("scores.rank*.bin")):
        emb_path = folder / path.name.replace("scores", "embeddings")
        idx = np.memmap(path, dtype=SHARD_DTYPE, mode="r")["index"] if path.stat().st_size else np.zeros(0, np.int64)
        emb = (np.memmap(emb_path, dtype=np.float32, mode="r").reshape(-1, 2, dim)
               if emb_path.exists() and emb_path.stat().st_size else np.zeros((0, 2, dim), np.float32))
        streams.append(((int(i), k, emb) for k, i in enumerate(idx)))
    for _, k, emb in heapq.merge(*streams, key=lambda t: t[0]):
        yield np.asarray(emb[k])


__all__ = ["TokensPerSecond", "MetricHistory", "LastCheckpoint", "CheckpointOnSignal", "tensorboard_logger", "ShardWriter",
           "VariantProgress", "merged_scores", "merged_embeddings"]

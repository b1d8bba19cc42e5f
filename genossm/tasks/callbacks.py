"""Training callbacks: tokens/s in the progress bar, metric history and its plot, checkpoint-on-preemption.

Also the optional TensorBoard logger factory, which fails with an install hint when TensorBoard is absent.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from genossm.errors import GenossmError, atomic_path

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
        self.every_n_steps = every_n_steps
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


def plot_history(history: MetricHistory, path: str | os.PathLike, baselines: dict | None = None, title: str = "") -> Path:
    """Two panels (loss; bits per base with the baselines as horizontal lines), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(11, 4))
    if history.train:
        steps, loss, bpb = zip(*history.train)
        ax_loss.plot(steps, loss, label="train", alpha=0.7)
        ax_bpb.plot(steps, bpb, label="train", alpha=0.7)
    if history.val:
        steps, loss, bpb = zip(*history.val)
        ax_loss.plot(steps, loss, "o-", label="validation")
        ax_bpb.plot(steps, bpb, "o-", label="validation")
    if baselines:
        ax_bpb.axhline(baselines["composition_entropy"], color="grey", ls="--", label="composition entropy")
        ax_bpb.axhline(baselines["best_markov"], color="black", ls=":", label=f"Markov k={baselines['best_order']}")
    ax_loss.set(xlabel="step", ylabel="loss (nats)", title="masked-LM loss")
    ax_bpb.set(xlabel="step", ylabel="bits per base", title="bits per base")
    for ax in (ax_loss, ax_bpb):
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


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
        if not self._pending:
            return
        self._pending = False
        path = self.dirpath / "last.ckpt"
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


__all__ = ["TokensPerSecond", "MetricHistory", "plot_history", "CheckpointOnSignal", "tensorboard_logger"]

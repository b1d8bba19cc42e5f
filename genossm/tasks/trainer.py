"""The one Lightning Trainer builder, and what a run does before it builds anything.

:func:`build_trainer` is the one way genossm builds a Trainer: from a workflow's ``trainer`` group (or, from
Python, plain Trainer keywords), with the workflow's callbacks, loggers and ``precision``, a checkpoint writer
that never leaves a half-written file (:class:`~genossm.tasks.checkpoint_io.AtomicCheckpointIO`) and, under
SLURM, requeueing left to submitit. :func:`prepare_run` checks the trainer can run here, seeds, sets the CPU
threads and quiets third-party noise.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from genossm.config import instantiate, set_cpu_threads
from genossm.errors import GenossmError


def fsdp_strategy(sharding_strategy: str = "FULL_SHARD", state_dict_type: str = "full", **kwargs):
    """Lightning FSDP wrapping each residual block (used by ``conf/trainer/fsdp.yaml``)."""
    from lightning.pytorch.strategies import FSDPStrategy

    from genossm.models.mamba import ResidualBlock

    return FSDPStrategy(auto_wrap_policy={ResidualBlock}, sharding_strategy=sharding_strategy,
                        state_dict_type=state_dict_type, **kwargs)


def check_trainer(trainer) -> None:
    """Fail before anything starts, with one clear message, on a trainer this machine cannot run."""
    import torch

    trainer = trainer or {}
    strategy = trainer.get("strategy")
    strategy = str(strategy.get("_target_", "")) if OmegaConf.is_config(strategy) else str(strategy or "")
    accelerator = str(trainer.get("accelerator") or "auto")
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    gpu = torch.cuda.is_available() or (accelerator != "cuda" and mps)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not gpu)
    if "fsdp" in strategy.lower() and (on_cpu or not gpu):
        raise GenossmError(
            "trainer=fsdp needs GPUs: PyTorch's FSDP does not run on CPU (Lightning refuses it and torch's "
            "FullyShardedDataParallel needs an accelerator device). On CPU use data parallel instead: "
            "trainer=ddp trainer.accelerator=cpu trainer.devices=2 trainer.precision=32-true"
        )
    if accelerator in ("gpu", "cuda") and not gpu:
        raise GenossmError(
            f"trainer.accelerator={accelerator} but no GPU is visible to this process; on CPU use trainer=cpu "
            "(or, for data parallel over CPU processes, trainer=ddp trainer.accelerator=cpu trainer.devices=2 "
            "trainer.precision=32-true)"
        )


# the Trainer precisions genossm's models run in (float64 is not one: the scan kernels compute in float32)
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
_PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def check_precision(value, key: str = "precision") -> str:
    """The Trainer precision ``value`` as Lightning spells it, or one message naming ``key`` and the choices."""
    text = str(value).strip()
    text = _PRECISION_ALIASES.get(text, text)
    if text not in PRECISIONS:
        raise GenossmError(f"{key}={value}: expected auto or one of {', '.join(PRECISIONS)}"
                           + (" (genossm's scan kernels compute in float32; 64-bit is not supported)"
                              if text.startswith("64") else ""))
    return text


def local_processes(trainer) -> int:
    """How many processes of this run share this machine's cores (CPU DDP ranks; 1 otherwise)."""
    trainer = trainer or {}
    if str(trainer.get("accelerator") or "") != "cpu":
        return 1
    devices = trainer.get("devices", 1)
    return int(devices) if isinstance(devices, int) and devices > 0 else 1


def build_trainer(cfg: Mapping, callbacks: Iterable = (), loggers: Iterable = (), **overrides: Any):
    """The run's Lightning Trainer: ``cfg.trainer`` with the run's callbacks and loggers.

    ``cfg.trainer`` is a workflow's ``trainer`` group (a ``_target_`` node, instantiated) or, from Python, plain
    Trainer keywords (``{"accelerator": "cpu", "devices": 1}``; its own ``callbacks`` come first, its ``logger``
    is used when no ``loggers`` are given). ``cfg.precision`` (when set and not ``auto``) replaces
    ``trainer.precision``; under SLURM, submitit owns the requeue (Lightning only reads the ranks); checkpoints
    are written whole or not at all. ``overrides`` are the run's own Trainer arguments. The settings were
    checked by :func:`prepare_run`, before anything was built."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from genossm.tasks.checkpoint_io import AtomicCheckpointIO

    settings = cfg.get("trainer")
    precision = cfg.get("precision", "auto")
    if precision not in (None, "", "auto"):
        overrides["precision"] = precision
    plain = not OmegaConf.is_config(settings) and "_target_" not in (settings or {})
    callbacks, logger = list(callbacks), list(loggers) or False
    if plain:  # Trainer keywords from Python: the run's own arguments win
        settings = dict(settings or {})
        callbacks = [*(settings.pop("callbacks", None) or []), *callbacks]
        given_logger = settings.pop("logger", False)
        logger = logger or given_logger
        overrides = {**settings, **overrides}
    plugins = list(overrides.pop("plugins", None) or [])
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    if not any(isinstance(p, AtomicCheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())  # a failed save (full disk) keeps the previous checkpoint
    overrides["plugins"] = plugins
    if not plain:
        return instantiate(settings, callbacks=callbacks, logger=logger, **overrides)
    import lightning as L

    return L.Trainer(callbacks=callbacks, logger=logger, **overrides)


# third-party messages that say nothing about the user's run (matched at the start of the message)
_NOISE_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch's pytree API, used inside Lightning
    r"Your `IterableDataset` has `__len__` defined",  # ours report their exact per-rank length on purpose
    r"Checkpoint directory .* exists and is not empty",  # every resume and every rerun into output=
    r"The '(train|val|predict|test)_dataloader' does not have many workers",  # tiny CPU runs use none on purpose
)
_NOISE_LOGS = ("💡 Tip:",)  # Lightning's adverts for its cloud services


class _DropNoise:
    """A logging filter: drops Lightning's adverts, and a line identical to the one just let through (Lightning
    logs its device summary once per Trainer, and workflows may build more than one)."""

    def __init__(self) -> None:
        self._last = None

    def filter(self, record) -> bool:
        message = record.getMessage()
        if message.startswith(_NOISE_LOGS):
            return False
        if message == self._last:
            return False
        self._last = message
        return True


def quiet_third_party() -> None:
    """Lightning and torch messages that are noise for a genossm user: adverts, deprecations of APIs Lightning
    uses inside, warnings about choices genossm makes on purpose; and Lightning's own log handler, which
    printed every line twice beside the workflow's logging. Real warnings still show."""
    import logging
    import warnings

    for pattern in _NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    root_has_handlers = logging.getLogger().hasHandlers()
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        if root_has_handlers:  # the workflow's logging prints Lightning's lines: drop Lightning's second copy
            for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                logger.removeHandler(handler)
            logger.propagate = True
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropNoise) for f in rank_zero.filters):
        rank_zero.addFilter(_DropNoise())


def prepare_run(cfg: DictConfig, num_workers: int = 0) -> None:
    """Before anything is built: check the trainer can run here (the one check of the ``trainer`` group and
    ``precision``), seed everything from ``cfg.seed``, set the CPU threads from ``cfg.torch_threads`` and quiet
    the third-party noise (:func:`quiet_third_party`)."""
    import lightning as L

    quiet_third_party()
    if cfg.get("trainer") is not None:
        check_trainer(cfg.trainer)
    if cfg.get("precision") not in (None, "", "auto"):
        check_precision(cfg.precision, "precision")
    elif (cfg.get("trainer") or {}).get("precision") is not None:
        check_precision(cfg.trainer.precision, "trainer.precision")
    L.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    set_cpu_threads(cfg.get("torch_threads", "auto"), num_workers, local_processes(cfg.get("trainer")))

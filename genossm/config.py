"""What every workflow shares: the OmegaConf resolvers, instantiation, CPU threads, the saved config.

Importing ``genossm`` registers the resolvers the configs use (once, here):

* ``${bundled:NAME}``: the absolute path of a file shipped in ``data/``;
* ``${run_id:}``: the run folder's name (see :func:`run_id`);
* ``${or_default:VALUE,DEFAULT}``: ``VALUE`` unless it is null or empty.

:func:`set_cpu_threads` applies ``torch_threads``. The Trainer is built with the LightningModules, in
:mod:`genossm.tasks.trainer`.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from genossm.atomic import atomic_write
from genossm.errors import GenossmError

RUN_ID_ENV = "GENOSSM_RUN_ID"
MAX_AUTO_THREADS = 32  # beyond this the small kernels of a CPU run stop getting faster


# ---------------------------------------------------------------------------------------------- resolvers


def run_id() -> str:
    """The run folder's name: ``slurm-<job id>`` under SLURM (a requeued job keeps its id, so it finds its own
    checkpoint), else the date and time of the first call in this process; ``_<n>`` per job of a local multirun.

    The name is also put in the environment (``GENOSSM_RUN_ID``), so the DDP ranks Lightning starts by
    re-running the workflow, seconds later, inherit it and write into the same run folder."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"slurm-{array_job}_{array_task}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    name = os.environ.setdefault(RUN_ID_ENV, datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            name += f"_{HydraConfig.get().job.num}"
    except Exception:  # noqa: BLE001 - outside a Hydra job there is no job number
        pass
    return name


def _bundled(name: str) -> str:
    from genossm.paths import bundled

    return bundled(name)


def _or_default(value, default):
    return default if value in (None, "") else value


def register_resolvers() -> None:
    """Register ``bundled``, ``run_id`` and ``or_default`` (idempotent; done when ``genossm`` is imported)."""
    for name, func in (("bundled", _bundled), ("run_id", run_id), ("or_default", _or_default)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, func)


register_resolvers()


# ---------------------------------------------------------------------------------------------- instantiation


def instantiate(node, **kwargs):
    """``hydra.utils.instantiate``, re-raising a GenossmError from the target as itself (one clean message); a
    bad option the target names (:class:`~genossm.options.OptionError`, ``batch_size=0``) is named by its full
    path in the config (``data.batch_size=0``)."""
    import hydra
    from hydra.errors import InstantiationException

    from genossm.options import OptionError

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, GenossmError):
            cause = cause.__cause__
        if isinstance(cause, OptionError):
            raise cause.under(node_path(node)) from None
        if cause is not None:
            raise cause from None
        raise


def node_path(node) -> str:
    """The dotted path of a config node in its root config (``callbacks.history``; empty for the root)."""
    try:
        return str(node._get_full_key(None) or "") if OmegaConf.is_config(node) else ""
    except Exception:  # noqa: BLE001 - a node without a parent: no path
        return ""


def instantiate_all(group) -> list:
    """Every non-null entry of a group of ``_target_`` nodes (``callbacks:``, ``logger:``), in order."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def to_plain(value):
    """A config node as plain Python (lists, dicts, scalars); anything else as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def model_config(name: str, overrides: Iterable[str] = ()) -> dict:
    """The fields of ``conf/model/<name>.yaml`` as composed by Hydra (a group may inherit from another)."""
    from hydra import compose, initialize_config_dir

    from genossm.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=["~experiment", f"model={name}", *overrides])
    return OmegaConf.to_container(cfg.model, resolve=True)


def renamed_keys(cfg: DictConfig, renames: dict[str, str], given: set[str] | None = None) -> dict[str, str]:
    """Old spellings still accepted for one release: a value set under an old dotted key moves to its new key,
    with a deprecation warning; the old key (kept in the YAML as null so that overrides of it still parse) is
    dropped from the composed config. Returns ``{new: old}`` for the keys given in their old spelling, so that
    a message about the value can name the key as the user wrote it (:meth:`genossm.options.Options.from_config`).

    ``given``: the keys the user set (the command line's overrides, :func:`given_keys`); an old spelling and its
    new key both given with different values is an error naming both (the old one used to win silently)."""
    import warnings

    from omegaconf import open_dict

    spelled = {}
    for old, new in renames.items():
        value = OmegaConf.select(cfg, old, default=None)
        if value is not None and given and new in given:
            current = OmegaConf.select(cfg, new, default=None)
            if to_plain(current) != to_plain(value):
                raise GenossmError(f"{old}={to_plain(value)!r} and {new}={to_plain(current)!r} are both given: {old} is "
                                   f"the old spelling of {new}; give {new} only")
        parent, _, leaf = old.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is not None and leaf in node:
            with open_dict(node):
                node.pop(leaf)
        if value is not None:
            warnings.warn(f"{old} is deprecated and will be removed in the next release: use {new}", FutureWarning,
                          stacklevel=2)
            with open_dict(cfg):
                OmegaConf.update(cfg, new, value, force_add=True)
            spelled[new] = old
    return spelled


def given_keys() -> set[str]:
    """The config keys set on the command line of this Hydra run (``key=v``, ``+key=v``, ``++key=v``); empty
    outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return set()
        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - no Hydra run: nothing known
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}


def save_config(cfg: DictConfig, folder: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the composed, resolved config beside a run's outputs (atomically)."""
    path = Path(folder) / name
    with atomic_write(path, "w") as handle:
        handle.write(OmegaConf.to_yaml(cfg, resolve=True))
    return path


# ---------------------------------------------------------------------------------------------- CPU threads


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, as set by taskset, cgroups or SLURM)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_threads(requested: int | str | None = "auto", num_workers: int = 0, processes: int = 1) -> int | None:
    """The torch thread count for ``torch_threads``: an int as given; ``auto`` ``OMP_NUM_THREADS`` when it is
    set, else the cores this process may use, less one per DataLoader worker, shared between the ``processes``
    (CPU DDP ranks) of this machine, capped at 32; None leaves torch's default."""
    if requested is None or requested == "":
        return None
    if isinstance(requested, str) and requested != "auto":
        try:
            requested = int(requested)
        except ValueError:
            raise GenossmError(f"torch_threads must be auto, null or a number of threads, got {requested!r}") from None
    if requested == "auto" and os.environ.get("OMP_NUM_THREADS", "").strip():
        text = os.environ["OMP_NUM_THREADS"].strip()
        if not text.isdigit() or int(text) < 1:
            raise GenossmError(f"OMP_NUM_THREADS={text!r} in the environment: expected a number of threads >= 1 "
                               "(torch_threads=auto follows it); unset it or set torch_threads=N")
        requested = int(text)  # the user's own choice for this shell
    if requested != "auto":
        if int(requested) < 1:
            raise GenossmError(f"torch_threads must be >= 1, got {requested}")
        return int(requested)
    cores = available_cores() // max(1, int(processes))
    return max(1, min(MAX_AUTO_THREADS, cores - max(0, int(num_workers or 0))))


def set_cpu_threads(threads: int | str | None = "auto", num_workers: int = 0, processes: int = 1) -> int | None:
    """Set the number of threads torch computes with on CPU, and return it (see :func:`cpu_threads`).

    ``auto`` takes the cores this process may use (``os.sched_getaffinity``) less the DataLoader workers, so the
    threads never outnumber the cores. On a busy machine OpenMP threads that spin while waiting for each other
    can make a run many times slower than one thread; the ``genossm`` command therefore sets
    ``OMP_WAIT_POLICY=PASSIVE`` (and ``KMP_BLOCKTIME=0``) unless they are set. From Python, set them in the
    environment before ``import torch`` (OpenMP reads them once, when it starts)::

        OMP_WAIT_POLICY=PASSIVE python my_script.py

    and call ``genossm.set_cpu_threads()`` (or ``set_cpu_threads(1)`` for tiny models, whose many small
    operations run fastest on one thread)."""
    n = cpu_threads(threads, num_workers, processes)
    if n is not None:
        import torch

        torch.set_num_threads(n)
    return n


def passive_openmp_environment(environ=os.environ) -> None:
    """A passive OpenMP wait policy unless the user chose one; must run before torch is imported."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    environ.setdefault("KMP_BLOCKTIME", "0")  # Intel OpenMP builds; ignored by GNU OpenMP


def huge_page_environment(environ=os.environ) -> None:
    """Let torch put its CPU tensors of 2 MiB and more on transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``)
    unless the user chose otherwise; torch reads it at its first large allocation, so this must run before
    (``import genossm`` calls it while torch is not yet imported, which covers the ``genossm`` command too).

    Each large tensor torch frees goes back to the operating system, and the next one is faulted in again
    4 KiB at a time: a fresh 128 MiB tensor took 117 ms to fill where copying into an existing one took 13 ms
    (24 ms on huge pages), and the tiny model scored 2^18-token calls 1.6x faster. Without huge pages in the
    kernel (``/sys/kernel/mm/transparent_hugepage/enabled`` = never) it changes nothing."""
    environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


# ---------------------------------------------------------------------------------------------- composing


# the keys that mean the same thing in every workflow that takes them (README: "the same top-level keys")
SHARED_KEYS = ("fasta", "pretrained", "variants", "regions", "output")


def config_name(workflow: str) -> str:
    """The root config of a workflow: ``conf/<name>.yaml`` (``score-variants`` -> ``score_variants``)."""
    return workflow.replace("-", "_")


def workflow_keys(workflow: str) -> set[str]:
    """The top-level keys ``workflow``'s root config declares, read from its YAML (no composing): a shared key
    that is not among them is one the workflow does not use (pretrain's ``fasta`` comes from its data group)."""
    from genossm.paths import conf_dir

    root = OmegaConf.load(Path(conf_dir()) / f"{config_name(workflow)}.yaml")
    keys = {str(k) for k in root.keys()}
    if any(OmegaConf.is_dict(d) and "data" in d for d in root.get("defaults", [])):
        keys.add("fasta")  # the data group (package _global_) sets it
    return keys


def refuse_unused_keys(workflow: str, overrides: Iterable[str]) -> None:
    """Stop with one message when an override sets a shared key (``variants=``, ``regions=``, ...) that
    ``workflow`` does not use: ``genossm pretrain variants=x.vcf`` was accepted and the file silently ignored."""
    wanted = None
    for item in overrides:
        key = str(item).split("=", 1)[0].lstrip("+")
        if "=" not in str(item) or key not in SHARED_KEYS:
            continue
        wanted = workflow_keys(workflow) if wanted is None else wanted
        if key not in wanted:
            raise GenossmError(f"{workflow} does not use {key}= (its keys: "
                               f"{', '.join(k for k in SHARED_KEYS if k in wanted)}); drop {key}=")


def compose(workflow: str, overrides: Iterable[str] = ()) -> DictConfig:
    """The config ``genossm <workflow> OVERRIDES`` runs with, composed from ``conf/`` for a Python caller::

        cfg = genossm.compose("score-variants", ["pretrained=bundled:human_chr20", "fasta=chr20.fa.gz",
                                                 "variants=calls.vcf.gz", "output=scored.vcf.gz"])
        load_workflow("score-variants").run(cfg)

    The overrides are spelled as on the command line (old spellings included: the run function moves them to
    their new names); a shared key the workflow does not use is refused with the same message."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from genossm.paths import conf_dir

    from hydra.core.global_hydra import GlobalHydra

    overrides = [str(o) for o in overrides]
    refuse_unused_keys(workflow, overrides)
    if GlobalHydra.instance().is_initialized():  # inside a workflow's run: its search path is conf/ already
        return hydra_compose(config_name=config_name(workflow), overrides=overrides)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name(workflow), overrides=overrides)

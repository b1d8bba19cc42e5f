"""The workflows the ``genossm`` command runs, and what their scripts share at the edge.

:data:`WORKFLOWS` names each workflow (its script in ``workflows/`` and a one-line summary);
:func:`load_workflow` loads a script as a module for calling its run from Python; :func:`user_errors` wraps a
workflow's run so that a :class:`~genossm.errors.GenossmError` becomes one clean message and exit status 2.
The command line (:mod:`genossm.cli`) and the workflow scripts both import this module; it imports neither.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Callable

from genossm.errors import GenossmError

# name on the command line -> (file in workflows/, one-line summary)
WORKFLOWS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect_genome.py", "list a FASTA's contigs with length, N and soft-mask fractions"),
    "pretrain": ("pretrain.py", "train a masked-LM on genomes (demo: tiny model, bundled genome, CPU)"),
    "evaluate": ("evaluate.py", "bits per base of a saved model on any FASTA, beside Markov baselines"),
    "score-variants": ("score_variants.py", "score a VCF/BCF/TSV of variants with a pretrained model"),
    "evaluate-variants": ("evaluate_variants.py", "how well variant scores predict labels, beside baselines"),
    "finetune": ("finetune.py", "fine-tune or linear-probe a pretrained model on labelled regions"),
    "score-regions": ("score_regions.py", "apply a fine-tuned model to new regions"),
    "embed": ("embed.py", "write RC-invariant embeddings of regions or FASTA records"),
}


def user_errors(func: Callable) -> Callable:
    """Turn a :class:`GenossmError` raised inside a workflow into one clean message and exit status 2, leaving
    no run folder behind when the run stopped before writing anything. (The options are read and checked by
    the workflow's run, in its typed option group: :mod:`genossm.options`.)"""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        fresh = _fresh_run_folder()
        try:
            return func(*args, **kwargs)
        except GenossmError as err:
            print(f"genossm: error: {err}", file=sys.stderr)
            _remove_failed_run(fresh)
            raise SystemExit(2) from None

    return wrapper


# what Hydra writes into a run folder before the workflow starts
_HYDRA_FILES = {".hydra"}


def _fresh_run_folder():
    """The Hydra run folder when this run created it (nothing in it but Hydra's own files), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        folder = Path(HydraConfig.get().runtime.output_dir).resolve()
        job = HydraConfig.get().job.name
    except Exception:  # noqa: BLE001 - not a Hydra run: nothing to clean
        return None
    if folder == Path.cwd().resolve() or not folder.is_dir():
        return None
    own = _HYDRA_FILES | {f"{job}.log"}
    return folder if all(p.name in own for p in folder.iterdir()) else None


def _remove_failed_run(folder) -> None:
    """A run stopped by a user error before doing anything leaves no run folder behind (an earlier run's
    folder, resumed or extended, is never touched)."""
    if folder is None or not folder.is_dir():
        return
    leftovers = [p for p in folder.rglob("*") if p.is_file() and ".hydra" not in p.relative_to(folder).parts]
    if all(p.suffix == ".log" or p.name == "config.yaml" for p in leftovers):  # only what the failed start wrote
        import logging

        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in list(getattr(logger, "handlers", [])):  # Hydra's job log file lives in the folder
                if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().is_relative_to(folder):
                    logger.removeHandler(handler)
                    handler.close()
        shutil.rmtree(folder, ignore_errors=True)


def workflow_path(name: str) -> Path:
    """The workflow's script (in a checkout or inside an installed wheel)."""
    from genossm.paths import workflows_dir

    filename, _ = WORKFLOWS[name]
    return workflows_dir() / filename


def load_workflow(name: str):
    """The workflow's script as a module (loaded once), for calling its run from Python, e.g.
    ``load_workflow("pretrain").train(cfg)`` or ``load_workflow("score-variants").score_variants(...)``."""
    path = workflow_path(name)
    module_name = f"genossm_workflow_{path.stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module

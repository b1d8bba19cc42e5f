"""The ``genossm`` command: ``genossm <workflow> [hydra overrides...]``.

Each workflow is a Hydra script, ``workflows/<name>.py``; this module finds it (in a checkout or inside an
installed wheel) and runs it as the program itself, ``python workflows/<name>.py <overrides>``: ``sys.argv[0]``
is the script and ``__main__`` is it, so every Hydra flag works as usual (``--cfg job``, ``--multirun``,
``hydra/launcher=slurm``) and Lightning's DDP launcher starts the other ranks by re-running that very script
with the same overrides. This is the only module that reads ``sys.argv``.

Before torch is imported it also sets a passive OpenMP wait policy (unless the user set one): OpenMP threads
that spin while waiting make a run on a busy machine many times slower than one thread.
"""

from __future__ import annotations

import os

from genossm.config import passive_openmp_environment

passive_openmp_environment(os.environ)  # before anything imports torch

import functools  # noqa: E402
import importlib.util  # noqa: E402
import re  # noqa: E402
import runpy  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

from omegaconf import DictConfig  # noqa: E402

from genossm import __version__  # noqa: E402
from genossm.config import check_sizes, given_keys, renamed_keys  # noqa: E402
from genossm.errors import GenossmError  # noqa: E402

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

USAGE = """usage: genossm <workflow> [key=value ...] [hydra flags]
       genossm models                # the bundled models and the Hub checkpoints genossm runs
       genossm models check hf:ORG/NAME   # compare an imported checkpoint with its original code

genossm {version}: genomic language models with bidirectional selective state-space models.

workflows:
{table}

Arguments after the workflow are Hydra overrides, the same keys in every workflow:
  fasta=PATH  pretrained=PATH  variants=PATH  regions=PATH  output=PATH
  experiment=NAME  model=NAME  trainer=NAME  data=NAME

examples:
  genossm inspect
  genossm pretrain
  genossm pretrain experiment=human_chr20_131k trainer=gpu fasta=chr20.fa.gz
  genossm score-variants pretrained=runs/x/model fasta=chr20.fa.gz variants=calls.vcf.gz output=scored.vcf.gz
  genossm evaluate pretrained=bundled:bacteria fasta=genome.fa.gz
  genossm pretrain --cfg job        # print the composed config and exit
  genossm <workflow> --help         # that workflow's config groups and options
"""


def usage() -> str:
    width = max(len(name) for name in WORKFLOWS)
    table = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in WORKFLOWS.items())
    return USAGE.format(version=__version__, table=table)


def models_table() -> str:
    """The bundled reference models (name, summary, model card) and the Hub checkpoints genossm runs (name,
    parameters, training context, download size, licence, whether the Hugging Face cache holds them). A model
    whose files are damaged is listed with the reason instead of its summary; the others are listed all the same."""
    from genossm.errors import GenossmError
    from genossm.models import bundled_models, load_extra
    from genossm.models.caduceus import KNOWN_CHECKPOINTS
    from genossm.models.hub import BUNDLED, HF

    rows = []
    for name, folder in bundled_models().items():
        try:
            summary = str(load_extra(folder).get("summary", ""))
        except GenossmError as err:
            summary = f"DAMAGED, cannot be used: {err}"
        rows.append((f"{BUNDLED}{name}", summary, str(folder / "README.md")))
    lines = []
    if rows:
        width = max(len(r[0]) for r in rows)
        lines.append("bundled reference models (use as pretrained=NAME in any workflow, or "
                     "genossm.models.from_pretrained(NAME)):")
        for name, summary, card in rows:
            lines.append(f"  {name:<{width}}  {summary}")
            lines.append(f"  {'':<{width}}  model card: {card}")
    else:
        lines.append("no bundled models in this installation")
    cached = hub_cache_state(KNOWN_CHECKPOINTS)
    width = max(len(HF + r) for r in KNOWN_CHECKPOINTS)
    lines += ["", "Hugging Face Hub checkpoints genossm runs (pretrained=hf:ORG/NAME; fetched on first use into the "
                  "Hugging Face cache):",
              f"  {'name':<{width}}  {'parameters':>11}  {'context':>7}  {'download':>8}  {'licence':<10}  cache"]
    for repo, facts in KNOWN_CHECKPOINTS.items():
        context = f"{round(facts['context'] / 1000)} kb" if facts["context"] >= 1000 else f"{facts['context']} bp"
        lines.append(f"  {HF + repo:<{width}}  {facts['parameters']:>11,}  {context:>7}  {facts['download']:>8}  "
                     f"{facts['licence']:<10}  {cached[repo]}")
        lines.append(f"  {'':<{width}}  {facts['summary']}")
    return "\n".join(lines)


def hub_cache_state(repos) -> dict[str, str]:
    """'cached' when the Hugging Face cache holds a repository's config and weights, else 'not downloaded'."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return {repo: "huggingface_hub not installed" for repo in repos}
    from genossm.models.hub import HF_WEIGHTS

    def has(repo, name):
        return isinstance(try_to_load_from_cache(repo, name), str)

    return {repo: "cached" if has(repo, "config.json") and any(has(repo, w) for w in HF_WEIGHTS) else "not downloaded"
            for repo in repos}


def user_errors(func: Callable | None = None, *, renamed: dict[str, str] | None = None) -> Callable:
    """Turn a :class:`GenossmError` raised inside a workflow into one clean message and exit status 2.

    At the config edge, before the workflow reads any option: the workflow's ``renamed`` keys (old spelling ->
    new, see :func:`genossm.config.renamed_keys`) move to their new names, then the sizes are checked."""
    if func is None:
        return functools.partial(user_errors, renamed=renamed)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        fresh = _fresh_run_folder()
        try:
            if args and isinstance(args[0], DictConfig):
                spelled = renamed_keys(args[0], renamed, given_keys()) if renamed else {}
                check_sizes(args[0], spelled)  # a bad size is named as the user spelled it
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


# a region as a genome browser shows it, with thousands separators: 20:421,801-421,840
_BROWSER_REGION = re.compile(r"^(?P<key>\+{0,2}(?:[\w.]+\.)?region)=(?P<value>[^\s:'\"\[\]{}=,]+:\d{1,3}(?:,\d{3})*"
                             r"(?:-\d{1,3}(?:,\d{3})*)?)$")


def quote_region(arg: str) -> str:
    """``region=20:421,801-421,840`` passed on quoted (``region="20:421,801-421,840"``): Hydra reads a bare
    comma as a sweep or list and stopped with "Ambiguous value"."""
    match = _BROWSER_REGION.match(arg)
    if match is None or "," not in match["value"]:
        return arg
    return f'{match["key"]}="{match["value"]}"'


# workflows whose output= is Hydra's run folder: Hydra creates it before the workflow starts, so a place that
# cannot hold it ended in Hydra's traceback
RUN_FOLDER_WORKFLOWS = ("pretrain", "evaluate", "finetune")


def check_run_folder(overrides: list[str]) -> None:
    """Stop with one line when ``output=`` names a folder that cannot be created: a file in its way, or a
    parent folder this user cannot write to."""
    values = [a.split("=", 1)[1] for a in overrides if a.startswith("output=")]
    if not values or not values[-1] or "${" in values[-1] or values[-1] in ("null", "~"):
        return
    folder = Path(values[-1]).absolute()
    if folder.exists():
        problem = None if folder.is_dir() else f"{folder} is a file, not a folder"
    else:
        parent = next((p for p in folder.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            problem = f"{parent} is a file, not a folder"
        elif parent is not None and not os.access(parent, os.W_OK | os.X_OK):
            problem = f"{parent} is not writable"
        else:
            problem = None
    if problem:
        print(f"genossm: error: output={values[-1]}: cannot write the run folder there: {problem}", file=sys.stderr)
        raise SystemExit(2)


def workflow_path(name: str):
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


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] in ("-V", "--version"):
        print(f"genossm {__version__}")
        return
    if argv[0] == "models":
        if argv[1:2] == ["check"]:  # compare an imported checkpoint with its original code
            from genossm.models import check

            try:
                raise SystemExit(check.main(argv[2:]))
            except GenossmError as err:
                print(f"genossm: error: {err}", file=sys.stderr)
                raise SystemExit(2) from None
        print(models_table())
        return
    name = argv[0].replace("_", "-")
    if name not in WORKFLOWS:
        print(f"genossm: unknown workflow {argv[0]!r}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        raise SystemExit(2)
    argv[1:] = [quote_region(a) for a in argv[1:]]
    _refuse_unused_keys(name, argv[1:])
    if name in RUN_FOLDER_WORKFLOWS:
        check_run_folder(argv[1:])
    path = workflow_path(name)
    sys.argv = [str(path), *argv[1:]]
    stop_on_sigterm()
    runpy.run_path(str(path), run_name="__main__")


def _refuse_unused_keys(name: str, overrides: list[str]) -> None:
    from genossm.config import refuse_unused_keys

    try:
        refuse_unused_keys(name, overrides)
    except GenossmError as err:
        print(f"genossm: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM: unwinds the workflow like any error, so every output being
    written is dropped (temp files removed, an earlier file at ``output=`` left as it was), and exits 143."""

    def __init__(self) -> None:
        super().__init__(143)


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while unwinding ends the process at once
    print("genossm: stopped by SIGTERM; outputs being written were discarded", file=sys.stderr)
    raise Terminated()


def stop_on_sigterm() -> None:
    """Let SIGTERM (``timeout``, ``kill``, systemd, ``scancel``) stop a workflow within a few seconds, exit
    status 143. Lightning's own SIGTERM handler only takes note and lets the run go on; it calls the handler
    it finds installed, so this one still runs. Under submitit (``hydra/launcher=slurm``) the job does not
    start through this command: submitit's own handlers keep pretraining's checkpoint-then-requeue."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


if __name__ == "__main__":
    main()

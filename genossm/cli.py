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

import ast  # noqa: E402
import re  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from genossm import __version__  # noqa: E402
from genossm.errors import GenossmError  # noqa: E402
# the workflow table and loading live in genossm.workflows; the names stay reachable here as before
from genossm.workflows import WORKFLOWS, load_workflow, user_errors, workflow_path  # noqa: E402,F401

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
    if HELP_FLAGS.intersection(argv[1:]) and print_help(path):
        return
    stop_on_sigterm()
    runpy.run_path(str(path), run_name="__main__")


# Hydra's flags that print help and exit before a workflow runs: answered from the workflow's config alone, without
# loading its script (and Lightning and torch with it), in well under a second
HELP_FLAGS = {"--help", "-h", "--hydra-help"}


def hydra_entry(path: Path) -> dict | None:
    """``config_name`` and ``version_base`` of the workflow script's ``@hydra.main``, read from its source."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "hydra.main":
                    return {k.arg: ast.literal_eval(k.value) for k in decorator.keywords
                            if k.arg in ("config_name", "version_base")}
    return None


def print_help(path: Path) -> bool:
    """Let Hydra print the workflow's help as the script would: a stand-in entry point compiled under the script's
    file name (Hydra names the app after it) and run as ``__main__``, with the script's config. False when the
    script's entry point cannot be read that way (the script then runs itself)."""
    entry = hydra_entry(path)
    if entry is None or "config_name" not in entry:
        return False
    import hydra

    from genossm.paths import conf_dir

    namespace = {"__name__": "__main__"}
    exec(compile("def main(cfg):\n    pass\n", str(path), "exec"), namespace)  # noqa: S102 - a fixed stand-in
    hydra.main(config_path=str(conf_dir()), **entry)(namespace["main"])()
    return True


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

"""Start-up of the ``genossm`` command: help, and the time until a run's first log line, for three trees side by side.

    python benchmarks/startup.py                 # best of 5
    python benchmarks/startup.py --repeats 3
    python benchmarks/startup.py --all           # also the first log line of inspect, evaluate, embed, finetune

Rows, each one ``genossm`` command run as a user would type it:

* ``genossm --help`` and ``genossm score-variants --help``: the whole command, until it exits;
* ``score-variants, first log line``: ``genossm score-variants`` with the ``tiny`` model (random weights) on the
  shipped chr20 slice and its multi-allelic VCF, writing a table; the time from the start of the command until
  it writes its first line (stdout or stderr, whichever comes first; the process is then stopped). The lines
  themselves are printed under the table, so what each tree wrote first can be compared.
* with ``--all``, the same for ``genossm inspect`` (the shipped chloroplast), ``genossm evaluate`` (the tiny
  model on the chr20 slice), ``genossm embed`` (the tiny model, the shipped promoters) and ``genossm finetune``
  (the tiny model, one epoch).

Columns: commit ``e1e4a2a`` (before the workflows moved), commit ``d47326c`` (the workflows in ``workflows/``) and
this tree. Each commit is checked out into a temporary git worktree and run with its own ``genossm`` code
(``python -m genossm.cli`` with the checkout first on ``PYTHONPATH``), with the same Python and environment
(``PYTHONUNBUFFERED=1``, so a line printed is a line seen). The model folder is written by the oldest tree's
``save_pretrained`` and read by all three. Trees take turns for each row (round-robin), best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import MAKE_MODEL  # noqa: E402
from side_by_side import REPO, baseline_tree, load_line, machine_line, table  # noqa: E402

COMMITS = ("e1e4a2a", "d47326c")
DATA = REPO / "data"
SLICE = DATA / "variants_chr20_slice.fa.gz"
VARIANTS = DATA / "variants_chr20_multiallelic.vcf"


def rows(model: Path, every_workflow: bool = False) -> dict[str, tuple[list[str], bool]]:
    """Row name -> (the command's arguments, whether to stop at its first line)."""
    table = {
        "genossm --help": (["--help"], False),
        "genossm score-variants --help": (["score-variants", "--help"], False),
        "score-variants, first log line": (["score-variants", f"pretrained={model}", f"fasta={SLICE}",
                                            f"variants={VARIANTS}", "output=scored.tsv"], True),
    }
    if every_workflow:
        promoters = DATA / "chloroplast_promoters.tsv"
        table.update({
            "inspect, first log line": (["inspect"], True),
            "evaluate, first log line": (["evaluate", f"pretrained={model}", f"fasta={SLICE}", "max_windows=4",
                                          "output=eval"], True),
            "embed, first log line": (["embed", f"pretrained={model}", f"regions={promoters}", "output=emb.npy"], True),
            "finetune, first log line": (["finetune", f"pretrained={model}", "trainer.max_epochs=1", "output=ft"],
                                         True),
        })
    return table


def environment(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "THP_MEM_ALLOC_ENABLE")}
    return dict(env, PYTHONPATH=str(root), PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")


def run_command(root: Path, args: list[str], first_line: bool, out: Path) -> dict:
    """{"seconds", "line"} (until exit, or until the first line written) or {"error"}."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "genossm.cli", *args], cwd=out, env=environment(root),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if first_line:
        line = ""
        for line in proc.stdout:
            if line.strip():
                break
        seconds = time.perf_counter() - start
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.stdout.close()
        proc.wait()
        return {"seconds": seconds, "line": line.strip()} if line.strip() else {"error": "no output"}
    output, _ = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode:
        tail = output.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit {proc.returncode}: {tail[0][:100]}"}
    return {"seconds": seconds}


def measure(trees: dict, rows: dict, tmp: Path, repeats: int) -> dict:
    """(row, tree) -> best result; the trees take turns within each row."""
    best: dict = {}
    for row, (args, first_line) in rows.items():
        for _ in range(repeats):
            for name, root in trees.items():
                res = run_command(root, args, first_line, tmp / "run")
                print(f"  {row:<32} {name:<12} " + (f"{res['seconds']:.2f} s" if "seconds" in res else res["error"]),
                      flush=True)
                kept = best.get((row, name))
                if "seconds" in res and (kept is None or "error" in kept or res["seconds"] < kept["seconds"]):
                    best[(row, name)] = res
                elif kept is None:
                    best[(row, name)] = res
    return best


def report(best: dict, trees: dict, rows: dict, repeats: int) -> str:
    lines = [[row] + [best.get((row, name), {}).get("seconds", best.get((row, name), {}).get("error", "-"))
                      for name in trees] for row in rows]
    headers = ["start-up"] + [f"{name} s" for name in trees]
    firsts = [f"  {name}: {best[(row, name)]['line'][:110]}" for row, (_, first) in rows.items() if first
              for name in trees if "line" in best.get((row, name), {})]
    return (f"best of {repeats}; {load_line()} at the end\n" + table(headers, lines)
            + ("\n\nfirst lines written:\n" + "\n".join(firsts) if firsts else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--all", action="store_true", help="also the first log line of inspect, evaluate, embed, finetune")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    print(f"python {sys.version.split()[0]} ({sys.executable}); {load_line()} at the start", flush=True)
    with tempfile.TemporaryDirectory(prefix="genossm-startup-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        trees = {}
        for commit in COMMITS:
            root = stack.enter_context(baseline_tree(commit))
            if root is not None:
                trees[commit] = root
        trees["this tree"] = REPO
        maker = next(iter(trees.values()))  # the oldest format, read by every tree
        model = tmp / "tiny"
        subprocess.run([sys.executable, "-c", MAKE_MODEL, str(model), str(maker / "conf" / "model" / "tiny.yaml")],
                       check=True, env={**os.environ, "PYTHONPATH": str(maker)})
        table_rows = rows(model, args.all)
        best = measure(trees, table_rows, tmp, args.repeats)
        print()
        print(report(best, trees, table_rows, args.repeats))


if __name__ == "__main__":
    main()

"""End-to-end CPU wall times of the ``genossm`` command: this tree beside the baseline commit, in one run.

    python benchmarks/end_to_end.py                    # beside a busy process, then idle
    python benchmarks/end_to_end.py --no-idle --repeats 1
    python benchmarks/end_to_end.py --no-baseline      # this tree only

Workloads, all with the ``tiny`` model (random weights: speed does not depend on training), each one
``genossm`` command run as a user would type it, with the defaults of each tree (2 threads on this kind of
machine: the torch default at the baseline, ``torch_threads=auto`` now):

* ``score-variants`` on ``data/variants_chr20_indels_1000g.vcf.gz`` (194 indels, window 256) over the shipped
  slice ``data/variants_chr20_slice.fa.gz``;
* ``score-variants mode=saturation`` over 300 positions (900 substitutions, window 256; ``mode=`` is the
  baseline's spelling of ``scan=``, which this tree still accepts);
* ``finetune`` on the shipped chloroplast task (382 regions of 200 bases, batch 32) for 1 and for 3
  epochs: the difference over 2 is the time per epoch, without the start-up, the linear probe and the
  k-mer baseline both runs share.

The baseline commit (``side_by_side.BASELINE``) is checked out into a temporary git worktree and run with
its own ``genossm`` code (``python -m genossm.cli`` with the checkout first on ``PYTHONPATH``). Both trees
get the same environment: ``OMP_WAIT_POLICY``/``KMP_BLOCKTIME``/``THP_MEM_ALLOC_ENABLE`` are removed from it,
so each tree's own thread and memory policy is what is measured. The model folder is written by the baseline's ``save_pretrained`` and
read by both (this tree reads the older format). Trees take turns for each row (round-robin), best of
``--repeats``. The busy pass runs a process keeping one core at 100 % for its whole duration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import (BASELINE, REPO, baseline_tree, busy_core, load_line,  # noqa: E402
                          machine_line, table)

DATA = REPO / "data"
SLICE = DATA / "variants_chr20_slice.fa.gz"
INDELS = DATA / "variants_chr20_indels_1000g.vcf.gz"
SATURATION = "20:421701-422000"  # 300 real bases around the VCF's first indel (the slice is N elsewhere)

MAKE_MODEL = """
import sys, torch
from genossm.models import BiMambaConfig, BiMambaLM, save_pretrained
try:  # a model group that may inherit from another
    from genossm.config import model_config
    cfg = model_config("tiny")
except ImportError:  # older trees: the group file holds every field
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(OmegaConf.load(sys.argv[2]))
cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
torch.manual_seed(0)
save_pretrained(BiMambaLM(BiMambaConfig(**cfg)), sys.argv[1])
"""


def workloads(model: Path) -> dict:
    """Row -> the genossm command line; outputs are named relative to the folder each run starts in."""
    common = [f"pretrained={model}", "progress=false"]
    return {
        "score-variants, 194 indels": ["score-variants", *common, f"fasta={SLICE}", f"variants={INDELS}",
                                       "window_len=256", "output=indels.vcf.gz"],
        "saturation, 300 positions": ["score-variants", *common, f"fasta={SLICE}", "mode=saturation",
                                      f"region={SATURATION}", "window_len=256", "output=sat.tsv", "heatmap=sat.png"],
        "finetune, 1 epoch": ["finetune", f"pretrained={model}", "trainer.max_epochs=1", "output=ft1"],
        "finetune, 3 epochs": ["finetune", f"pretrained={model}", "trainer.max_epochs=3", "output=ft3"],
    }


PER_EPOCH = "finetune, per epoch"


def run_command(root: Path, args: list[str], out: Path) -> dict:
    """Runs ``genossm args`` with the tree at ``root`` in a fresh folder ``out``; {"seconds"} or {"error"}."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "THP_MEM_ALLOC_ENABLE")}
    env["PYTHONPATH"] = str(root)
    env["PYTHONWARNINGS"] = "ignore"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "genossm.cli", *args], cwd=out, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit {proc.returncode}: {tail[0][:100]}"}
    return {"seconds": seconds}


def measure(trees: dict, rows: dict, tmp: Path, repeats: int) -> dict:
    """(row, tree) -> best result; trees take turns within each row."""
    best: dict = {}
    for row, args in rows.items():
        for _ in range(repeats):
            for name, root in trees.items():
                key = (row, name)
                if "error" in best.get(key, {}):
                    continue
                res = run_command(root, args, tmp / f"run-{name}")
                print(f"  {row:<28} {name:<10} " + (f"{res['seconds']:.1f} s" if "seconds" in res else res["error"]),
                      flush=True)
                if key not in best or "error" in res or res["seconds"] < best[key]["seconds"]:
                    best[key] = res
    for name in trees:  # per epoch: (3 epochs - 1 epoch) / 2
        one, three = best.get(("finetune, 1 epoch", name), {}), best.get(("finetune, 3 epochs", name), {})
        if "seconds" in one and "seconds" in three:
            best[(PER_EPOCH, name)] = {"seconds": (three["seconds"] - one["seconds"]) / 2}
    return best


def report(title: str, best: dict, trees: dict, rows: dict) -> str:
    lines = []
    for row in [*rows, *([PER_EPOCH] if any(k[0] == PER_EPOCH for k in best) else [])]:
        cur = best.get((row, "genossm"), {})
        base = best.get((row, "baseline"), {})
        line = [row, cur.get("seconds", cur.get("error", "-"))]
        if "baseline" in trees:
            line += [base.get("seconds", base.get("error", "-")),
                     base["seconds"] / cur["seconds"] if "seconds" in cur and "seconds" in base else "-"]
        lines.append(line)
    headers = ["workload", "genossm s"] + ([f"{BASELINE} s", "speed-up"] if "baseline" in trees else [])
    return f"{title}\n" + table(headers, lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-idle", action="store_true", help="only the pass beside a busy process")
    ap.add_argument("--no-busy", action="store_true", help="only the idle pass")
    ap.add_argument("--only", nargs="*", default=None, metavar="WORD",
                    help="only the workloads whose name contains one of these words (e.g. saturation finetune)")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="genossm-e2e-") as tmp_name, \
            (baseline_tree() if not args.no_baseline else _none()) as base_root:
        tmp = Path(tmp_name)
        trees = {"genossm": REPO}
        if base_root is not None:
            trees["baseline"] = base_root
        maker = base_root or REPO  # the older format, read by both trees
        model = tmp / "tiny"
        subprocess.run([sys.executable, "-c", MAKE_MODEL, str(model), str(maker / "conf" / "model" / "tiny.yaml")],
                       check=True, env={**os.environ, "PYTHONPATH": str(maker)})
        rows = {k: v for k, v in workloads(model).items() if not args.only or any(w in k for w in args.only)}
        tables = []
        for busy in [p for p, skip in ((True, args.no_busy), (False, args.no_idle)) if not skip]:
            label = "beside a busy process (one core at 100 %)" if busy else "idle"
            print(f"pass: {label}; {load_line()}", flush=True)
            with busy_core(busy):
                best = measure(trees, rows, tmp, args.repeats)
            tables.append(report(f"\n{label}; {load_line()} at the end; best of {args.repeats}", best, trees, rows))
    print("\n".join(tables))


class _none:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()

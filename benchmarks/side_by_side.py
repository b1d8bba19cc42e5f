"""Side-by-side CPU timing shared by ``model.py --cpu`` and ``scan.py --cpu``.

Every implementation runs in its own worker process (so two versions of genossm never meet in one
interpreter), and the workers take turns: repetition 1 of every implementation, then repetition 2, ...
(round-robin), best of the repetitions kept. That way a shared, noisy machine slows all columns alike
and the ratios printed side by side mean something even when the seconds do not.

* The current tree: genossm as imported by the benchmark.
* The baseline commit (``BASELINE``, the last commit before the fused CPU kernel): checked out with
  ``git worktree add --detach`` into a temporary folder, imported from there by its worker (the folder is put
  first on ``sys.path``), removed afterwards.
* Peers built from other packages (HF ``transformers``' Mamba mixer, ``mamba_ssm``'s ``selective_scan_ref``):
  ``pip install -e ".[bench]"``.

Thread policy: the workers start with ``OMP_WAIT_POLICY=PASSIVE`` (and ``KMP_BLOCKTIME=0``) in their
environment unless the caller set them, i.e. before torch is imported, so OpenMP threads sleep instead of
spinning while they wait (what the ``genossm`` command does too), and with ``THP_MEM_ALLOC_ENABLE=1`` (torch's
large tensors on huge pages, what ``import genossm`` sets): every column gets both, so the ratios measure the code. ``--contention`` starts a busy process
(a Python loop keeping one core at 100 %) for the duration of a second pass over the same rows.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BASELINE = "e1e4a2a"
REPO = Path(__file__).resolve().parent.parent


def set_thread_policy(passive: bool = True) -> str:
    """Sets the OpenMP wait policy for the workers started after this call; returns a line saying so."""
    if passive:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("KMP_BLOCKTIME", "0")
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
        os.environ.pop("KMP_BLOCKTIME", None)
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # what genossm sets (config.huge_page_environment)
    return (f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset: spin)')}, "
            f"THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']} for every column, set before torch is imported")


def machine_line() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"machine: {model or 'unknown CPU'}, {cores} cores"


def load_line() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # so that the finally blocks remove the checkout and stop the workers


@contextlib.contextmanager
def baseline_tree(commit: str = BASELINE):
    """A temporary checkout of ``commit`` (a git worktree), removed on exit (also on SIGTERM). Yields its path,
    or None with a message when git cannot make it (no repository, unknown commit)."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="genossm-baseline-"))
    path = tmp / "tree"
    proc = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit],
                          capture_output=True, text=True)
    if proc.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"baseline {commit} unavailable: {proc.stderr.strip()}", flush=True)
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)


def _worker_main(conn, root, threads, jobs_file):
    if root:  # this worker's genossm is the checkout at root, ahead of any installed one
        sys.path.insert(0, str(root))
    sys.path.insert(1, str(Path(jobs_file).parent))
    import torch

    torch.set_num_threads(threads)
    spec = importlib.util.spec_from_file_location("_bench_jobs", jobs_file)
    jobs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jobs)
    cache: dict = {}
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, kwargs = msg
        try:
            if root:
                import genossm

                assert Path(genossm.__file__).resolve().is_relative_to(Path(root).resolve()), genossm.__file__
            conn.send((True, getattr(jobs, f"job_{name}")(cache, **kwargs)))
        except Exception as err:  # noqa: BLE001  (reported in the table)
            conn.send((False, f"{type(err).__name__}: {err}".splitlines()[0][:120] + _where(err)))


def _where(err) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    return f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""


class Worker:
    """A process that imports ``jobs_file`` (with genossm from ``root``, or the installed one) and runs its
    ``job_<name>(cache, **kwargs)`` functions on request; ``cache`` keeps built models between calls."""

    def __init__(self, jobs_file, threads, root=None):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, root, threads, str(jobs_file)), daemon=True)
        self.proc.start()

    def run(self, name, **kwargs):
        try:
            self.conn.send((name, kwargs))
            ok, value = self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return {"error": f"worker exited (code {self.proc.exitcode}; out of memory?)"}
        return value if ok else {"error": value}

    def close(self):
        with contextlib.suppress(Exception):
            self.conn.send(None)
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


def round_robin(calls: dict, repeats: dict) -> dict:
    """calls: name -> zero-argument function returning a dict with "seconds" (or "error"); repeats: name -> n.
    Runs repetition r of every name before repetition r + 1; returns name -> best result (least seconds)."""
    best: dict = {}
    for r in range(max(repeats.values(), default=0)):
        for name, call in calls.items():
            if r >= repeats[name] or "error" in best.get(name, {}):
                continue
            res = call()
            if "error" in res or name not in best or res["seconds"] < best[name]["seconds"]:
                best[name] = res
    return best


@contextlib.contextmanager
def busy_core(enabled: bool = True):
    """A process that keeps one core at 100 % while the block runs."""
    if not enabled:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def table(headers, rows) -> str:
    """Plain-text table: numbers right-aligned, text left."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    for raw, r in zip(rows, cells):
        out.append("  ".join(c.rjust(w) if isinstance(v, (int, float)) else c.ljust(w)
                             for v, c, w in zip(raw, r, widths)).rstrip())
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        if v >= 100:
            return f"{v:.0f}"
        return f"{v:.3g}" if v < 10 else f"{v:.1f}"
    return str(v)


def ratio(a, b):
    """a / b for two results' seconds-based rates, or '-' when either is missing."""
    if not a or not b or "error" in a or "error" in b:
        return "-"
    return b["seconds"] / a["seconds"]


def cell(res, key="seconds"):
    if not res:
        return "-"
    if "error" in res:
        return res["error"]
    return res[key]


def module_file(module_name: str):
    """The file of an importable module, without importing it (None when absent)."""
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(module_name)
        return spec.origin if spec else None
    return None

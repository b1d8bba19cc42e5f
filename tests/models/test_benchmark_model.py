"""benchmarks/model.py --cpu: the side-by-side table code, at a tiny size, on the current tree only."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import model
    import side_by_side

    return model, side_by_side


def test_job_times_a_forward_and_a_training_step(bench):
    model, _ = bench
    cache = {}
    for mode in ("forward", "train"):
        res = model.job_model(cache, "genossm", "tiny", 64, mode)
        assert res["seconds"] > 0 and res["tokens_per_s"] == pytest.approx(64 / res["seconds"])


@pytest.mark.slow
def test_side_by_side_table_quick(bench, capsys):
    model, _ = bench
    args = type("Args", (), dict(quick=True, spin=False, no_peers=True, no_baseline=True, contention=False,
                                 thread_counts=[1], repeats=1))()
    model.side_by_side(args)
    out = capsys.readouterr().out
    assert "OMP_WAIT_POLICY=PASSIVE" in out and "load average" in out
    assert "tiny inference 256" in out and "tiny train step 256" in out
    assert "genossm tok/s" in out and "error" not in out


def test_round_robin_alternates_and_keeps_the_best(bench):
    _, sbs = bench
    order = []

    def call(name, seconds):
        def run():
            order.append(name)
            return {"seconds": seconds.pop(0)}
        return run

    best = sbs.round_robin({"a": call("a", [3.0, 1.0, 2.0]), "b": call("b", [5.0])}, {"a": 3, "b": 1})
    assert order == ["a", "b", "a", "a"]
    assert best["a"]["seconds"] == 1.0 and best["b"]["seconds"] == 5.0
    assert sbs.ratio(best["a"], best["b"]) == 5.0
    assert "x" in sbs.table(["h1", "h2"], [["x", 1.5]])


def test_busy_core_runs_and_stops(bench):
    _, sbs = bench
    with sbs.busy_core():
        pass

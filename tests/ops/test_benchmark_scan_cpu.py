"""benchmarks/scan.py --cpu side by side: the job and the table code at a tiny size (current tree only)."""

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def scan_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import scan

    return scan


@pytest.mark.parametrize("backend", ["auto", "chunked"])
def test_scan_job(scan_bench, backend):
    cache = {}
    for mode in ("fwd", "fwd+bwd"):
        result = scan_bench.job_scan(cache, "genossm", (1, 16, 4, 64), mode, backend=backend)
        assert set(result) == {"seconds"} and 0 < result["seconds"] < 60
        assert cache[("genossm", backend, mode)] is True  # warmed up before the timed call
    # the job scanned inputs of the size asked for (batch, dim, state, length), and left no gradients behind
    x = cache[("inputs", (1, 16, 4, 64))]
    assert x["u"].shape == x["delta"].shape == (1, 16, 64) and x["A"].shape == (16, 4) and x["B"].shape == (1, 4, 64)
    assert all(t.grad is None for t in x.values())


def test_side_by_side_quick(scan_bench, capsys):
    args = scan_bench.argparse.Namespace(quick=True, spin=False, no_baseline=True, contention=False,
                                         thread_counts=[1], repeat=1, mamba_src="/nonexistent.tar.gz")
    scan_bench.side_by_side(args)
    out = capsys.readouterr().out
    assert "no mamba_ssm column" in out and "OMP_WAIT_POLICY" in out
    assert "(1, 64, 16, 1024)" in out and "fwd+bwd" in out and "genossm / baseline" in out

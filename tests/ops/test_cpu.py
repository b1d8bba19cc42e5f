"""The fused C scan (backend "cpu") against the reference: values and every input gradient, all options, both
directions, several threads, and the model's position-major entry point."""

import functools

import pytest
import torch

from genossm.ops.selective_scan import resolve_backend, selective_scan
from genossm.ops.selective_scan import cpu
from genossm.ops.selective_scan.cpu import selective_scan_cpu, ssm_scan_pm
from genossm.ops.selective_scan.reference import selective_scan_ref

import scan_cases
from scan_cases import BF16_TOL, assert_close, hot_inputs, make, run

pytestmark = pytest.mark.skipif(not cpu.available(), reason=f"C kernel unavailable: {cpu.unavailable_reason()}")


compare = functools.partial(scan_cases.compare, scan=selective_scan_cpu)
compare64 = functools.partial(scan_cases.compare64, scan=selective_scan_cpu)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 150])
def test_lengths_and_direction(length, reverse, threads):
    # 40 channels: two full tiles of 16 and a partial one, split between the threads
    compare(make(dim=40, length=length, initial_state=True), reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("z,bias,softplus", [(False, False, False), (True, False, True), (False, True, True),
                                             (True, True, False)])
def test_gate_bias_softplus(z, bias, softplus, reverse):
    compare(make(length=37, z=z, bias=bias), softplus=softplus, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dim,groups", [(8, 2), (8, 4), (48, 2), (40, 4)])
def test_grouped_B_C(dim, groups, reverse, threads):
    compare(make(dim=dim, length=30, groups=groups, initial_state=True), reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_bfloat16(reverse):
    x = make(length=45, groups=2, initial_state=True, dtype=torch.bfloat16)
    compare(x, reverse=reverse, tol=BF16_TOL)  # the tolerance of the chunked backend's bf16 test
    assert run(selective_scan_cpu, x, True, reverse)[0].dtype == torch.bfloat16


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [40, 130])
def test_huge_decays_in_every_channel(length, reverse):
    compare64(hot_inputs(length=length), reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hot_every", [2, 5])
def test_mixed_huge_and_small_decays(hot_every, reverse):
    compare64(hot_inputs(dim=10, length=70, hot_every=hot_every, groups=2), reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_decays_through_the_subnormal_range(reverse):
    x = make(dim=6, length=48, initial_state=True, bias=False)
    with torch.no_grad():
        x["A"].fill_(-1.0)
        x["delta"].copy_(torch.linspace(30.0, 110.0, 48).expand(2, 6, 48))
    compare64(x, softplus=False, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_growing_states_match_the_reference(reverse):
    x = make(dim=4, length=33, initial_state=True, bias=False)
    with torch.no_grad():
        x["delta"].sub_(0.6)
    compare(x, softplus=False, reverse=reverse, tol=5e-5)


@pytest.mark.parametrize("groups", [None, 2])
def test_position_major_entry_sums_directions(groups, threads):
    # what the model calls: (batch, L, dim) views of wider tensors, both directions summed, against two
    # calls of the reference
    x = make(dim=32, length=70, groups=groups)
    pm = lambda t: t.transpose(1, 2)  # noqa: E731
    wide = torch.cat([x["u"], x["z"]], dim=1).transpose(1, 2).detach().requires_grad_(True)  # (b, L, 2 dim)
    u_pm, z_pm = wide[..., :32], wide[..., 32:]
    bc = (lambda t: t.permute(0, 2, 1)) if groups is None else (lambda t: t.permute(0, 3, 1, 2))
    got = ssm_scan_pm(u_pm, pm(x["delta"]), x["A"], bc(x["B"]), bc(x["C"]), x["D"], z_pm, x["delta_bias"], True,
                      directions=(False, True))
    u, z = wide.transpose(1, 2)[:, :32], wide.transpose(1, 2)[:, 32:]
    args = (u, x["delta"], x["A"], x["B"], x["C"], x["D"], z, x["delta_bias"], True)
    want = pm(selective_scan_ref(*args) + selective_scan_ref(*args, reverse=True))
    assert_close(got, want, 2e-5, "out")
    g = torch.randn(got.shape, generator=torch.Generator().manual_seed(3))
    inputs = [wide, x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"]]
    g_got = torch.autograd.grad((got * g).sum(), inputs)
    g_want = torch.autograd.grad((want * g).sum(), inputs)
    for name, a, b in zip(["u|z", "delta", "A", "B", "C", "D", "delta_bias"], g_got, g_want):
        assert_close(a, b, 1e-4, f"grad {name}")


def test_dispatcher_uses_the_c_kernel_on_cpu():
    x = make(length=25, initial_state=True)
    assert resolve_backend("auto", x["u"]) == "cpu"
    assert resolve_backend("auto", x["u"], state=65) == "chunked"  # beyond the kernel's state buffer
    direct = run(selective_scan_cpu, x, True, False)
    via = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True,
                         initial_state=x["initial_state"], backend="auto")
    torch.testing.assert_close(via[0], direct[0], rtol=0, atol=0)
    torch.testing.assert_close(via[1], direct[1], rtol=0, atol=0)


def test_no_grad_saves_nothing_and_inputs_unchanged():
    x = make(length=40, initial_state=True)
    before = {n: t.detach().clone() for n, t in x.items() if t is not None}
    with torch.no_grad():
        out, last = run(selective_scan_cpu, x, True, True)
    assert not out.requires_grad and out.grad_fn is None
    ref, ref_last = run(selective_scan_ref, x, True, True)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-5, atol=1e-5)
    for n, t in before.items():
        assert torch.equal(x[n].detach(), t), n


def test_zero_length():
    x = make(length=0, initial_state=True)
    out, last = run(selective_scan_cpu, x, True, False)
    assert out.shape == (2, 4, 0)
    torch.testing.assert_close(last, x["initial_state"].detach())


@pytest.mark.parametrize("reverse", [False, True])
def test_softplus_inside_the_kernel_over_a_wide_range(reverse):
    # the kernel's own softplus (exp and log1p polynomials) from far negative to far positive arguments
    x = make(dim=16, length=64, bias=True)
    with torch.no_grad():
        x["delta"].copy_(torch.linspace(-25.0, 25.0, 2 * 16 * 64).view(2, 16, 64))
        x["A"].mul_(0.01)
    compare(x, reverse=reverse)


def test_without_a_compiler_auto_falls_back_to_chunked(tmp_path):
    # a fresh interpreter whose C compiler fails: one warning, and "auto" means chunked
    import subprocess
    import sys

    code = ("import warnings, torch\n"
            "from genossm.ops.selective_scan import cpu, resolve_backend\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    ok = cpu.available()\n"
            "print(ok, resolve_backend('auto', torch.zeros(1)), len(w))\n")
    env = dict(__import__("os").environ, CC="false", GENOSSM_KERNEL_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "chunked", "1"]


@pytest.mark.parametrize("reverse", [False, True])
def test_more_channel_ranges_than_threads(monkeypatch, reverse):
    # large calls are cut into up to four ranges per thread, taken by whichever thread is free
    monkeypatch.setattr(cpu, "_TASK_WORK", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(cpu._ranges(128, 64, 10)) == 8
        compare(make(dim=128, length=70, groups=2, initial_state=True), reverse=reverse)
    finally:
        torch.set_num_threads(before)


def test_triton_backend_without_triton_says_how_to_install_it(monkeypatch):
    import importlib.util

    import genossm.ops.selective_scan as ss

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ImportError, match=r"pip install 'genossm\[gpu\]'"):
        ss.resolve_backend("triton", x)
    assert ss.resolve_backend("auto", x, 16) in ("cpu", "chunked")  # auto never needs it


def test_the_base_install_does_not_pull_triton():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("triton")]
    assert any(d.startswith("triton") for d in project["optional-dependencies"]["gpu"])


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 37, 101), (1, 300, 257), (3, 16, 4099)])
def test_layout_change_is_the_transpose(shape, threads):
    # the public entry's (batch, channels, L) <-> (batch, L, channels) copy: blocked kernel, rows split over threads
    x = torch.randn(shape)
    assert torch.equal(cpu._swap_last(x), x.transpose(1, 2).contiguous())
    assert torch.equal(cpu._swap_last(x.transpose(1, 2)), x)  # a non-contiguous input
    half = x.to(torch.bfloat16)
    assert torch.equal(cpu._swap_last(half), half.transpose(1, 2).contiguous())

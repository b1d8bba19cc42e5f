"""The compiled CPU kernel is verified before it is loaded: a cached library cut short, empty, replaced or
without the kernel's functions is compiled again (it killed every later run with SIGBUS, or left them all on
the slow path); a library in a folder another user can write to, or owns, is never loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = """
import sys, warnings, torch
warnings.simplefilter("always")
from genossm.ops.selective_scan import cpu, reference
assert cpu.available(), cpu.unavailable_reason()
g = torch.Generator().manual_seed(0)
u, dt = torch.randn(1, 16, 32, generator=g), torch.rand(1, 16, 32, generator=g)
A, B, C = -torch.rand(16, 4, generator=g), torch.randn(1, 4, 32, generator=g), torch.randn(1, 4, 32, generator=g)
torch.testing.assert_close(cpu.selective_scan_cpu(u, dt, A, B, C), reference.selective_scan_ref(u, dt, A, B, C),
                           rtol=1e-4, atol=1e-4)
print("kernel ok")
"""

needs_cc = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="needs a C compiler")


def run_kernel(cache: Path, tmp: Path | None = None, **env) -> subprocess.CompletedProcess:
    environ = dict(os.environ, GENOSSM_KERNEL_CACHE=str(cache), OMP_NUM_THREADS="1", **env)
    if tmp is not None:
        environ["TMPDIR"] = str(tmp)
    return subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, env=environ, timeout=300)


def library(cache: Path) -> Path:
    found = list(cache.glob("genossm_scan_*.so"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def built(tmp_path) -> Path:
    cache = tmp_path / "cache"
    proc = run_kernel(cache)
    assert proc.returncode == 0 and "kernel ok" in proc.stdout, proc.stderr[-2000:]
    return cache


@needs_cc
@pytest.mark.parametrize("damage", ["truncated", *(pytest.param(d, marks=pytest.mark.slow)
                                                    for d in ("empty", "random", "no stamp"))])
def test_a_damaged_cached_library_is_compiled_again(built, damage):
    so = library(built)
    good = so.read_bytes()
    if damage == "truncated":  # a crash or full disk during the old, unsynced rename: SIGBUS when loaded
        so.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        so.write_bytes(b"")
    elif damage == "random":
        so.write_bytes(os.urandom(len(good)))
    else:
        Path(str(so) + ".sha256").unlink()
    proc = run_kernel(built)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "kernel ok" in proc.stdout
    assert "compiling it again" in proc.stderr and "could not be compiled" not in proc.stderr
    assert so.stat().st_size == len(good)
    second = run_kernel(built)  # verified now: loaded without a word
    assert second.returncode == 0 and "compiling it again" not in second.stderr


@needs_cc
@pytest.mark.slow
def test_a_library_without_the_kernels_functions_is_not_used(built, tmp_path):
    so = library(built)
    other = tmp_path / "other.c"
    other.write_text("int something_else(void) { return 1; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", str(other), "-o", str(so)], check=True)
    import hashlib

    data = so.read_bytes()  # a stamp that matches it: only the missing functions give it away
    Path(str(so) + ".sha256").write_text(f"{hashlib.sha256(data).hexdigest()} {len(data)}\n")
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from genossm.ops.selective_scan import cpu, resolve_backend\nimport torch\n"
            "print(cpu.available(), resolve_backend('auto', torch.zeros(1)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, GENOSSM_KERNEL_CACHE=str(built)))
    assert proc.returncode == 0, proc.stderr[-2000:]  # an AttributeError before
    assert proc.stdout.split() == ["False", "chunked"]
    assert "lacks the kernel's functions (ssm_fwd" in proc.stderr


PLANT = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("MARKER", "w"); if (f) { fputs("ran", f); fclose(f); }
}
"""


@needs_cc
def test_a_library_planted_in_a_shared_folder_is_never_loaded(built, tmp_path):
    """The cache folder unwritable, genossm fell back to a predictable path under the shared temp folder and
    loaded whatever was there: code another user planted ran inside this user's process."""
    so = library(built)
    marker = tmp_path / "planted_ran"
    source = tmp_path / "plant.c"
    source.write_text(PLANT.replace("MARKER", str(marker)))
    shared_tmp = tmp_path / "shared_tmp"
    shared_tmp.mkdir()
    os.chmod(shared_tmp, 0o1777)
    uid = os.getuid()
    planted_dir = shared_tmp / f"genossm-kernels-{uid}"
    planted_dir.mkdir()
    import hashlib

    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(planted_dir / so.name)], check=True)
    data = (planted_dir / so.name).read_bytes()
    (planted_dir / (so.name + ".sha256")).write_text(f"{hashlib.sha256(data).hexdigest()} {len(data)}\n")
    os.chmod(planted_dir, 0o777)
    if uid == 0:  # as root the folder can be given to another user, as it would be when planted
        os.chown(planted_dir, 65534, 65534)
        os.chown(planted_dir / so.name, 65534, 65534)
    unusable = tmp_path / "unusable_cache"
    unusable.write_text("a file where the cache folder should be")
    proc = run_kernel(unusable / "kernels", tmp=shared_tmp)
    assert proc.returncode == 0 and "kernel ok" in proc.stdout, proc.stderr[-2000:]
    assert not marker.exists(), "the planted library was loaded"
    assert "no private kernel cache" in proc.stderr
    # a folder of this user that others can write to is closed, and the library in it is rebuilt and used
    if uid == 0:
        os.chown(planted_dir, 0, 0)
    proc = run_kernel(planted_dir, tmp=tmp_path)
    assert proc.returncode == 0 and "kernel ok" in proc.stdout, proc.stderr[-2000:]
    assert not marker.exists(), "the planted library was loaded"
    assert planted_dir.stat().st_mode & 0o022 == 0


def test_the_kernel_switch_takes_the_usual_spellings_of_off(tmp_path):
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from genossm.ops.selective_scan import cpu\nprint(cpu.available(), cpu.unavailable_reason())\n")
    for word in ("0", "false", "FALSE", "no", "off"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, GENOSSM_CPU_KERNEL=word, GENOSSM_KERNEL_CACHE=str(tmp_path)))
        assert proc.returncode == 0 and proc.stdout.startswith("False switched off"), (word, proc.stdout, proc.stderr)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, GENOSSM_CPU_KERNEL="maybe", GENOSSM_KERNEL_CACHE=str(tmp_path),
                                   CC="false"))
    assert "GENOSSM_CPU_KERNEL='maybe' is not one of" in proc.stderr

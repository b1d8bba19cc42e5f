"""The selective scan as one fused loop per channel tile, in C: the fast CPU backend (``backend="cpu"``).

PyTorch has no op for a sequential recurrence, so the chunked backend solves each block of positions
with dozens of tensor ops, each a pass over a (block, batch, dim, state) buffer: on CPU it is bound by
memory traffic and by the dispatcher, not by arithmetic. ``cpu_kernel.c`` runs the recurrence the way
a CPU wants it: position after position, every tile of 16 channels of a thread's range updates its
(state, 16) state, which stays in L1, with one vectorised exp, multiply-add and C·h reduction per state;
the inputs stream row after row, and nothing of size (batch, dim, state, length) is ever written. The backward keeps the state before each block of ``BLOCK_LEN`` positions, recomputes a
block's states into a small work buffer and runs the adjoint recurrence back through it.

The C file is compiled once per machine and source version with the system C compiler (``cc``, or
``$CC``) into ``~/.cache/genossm/kernels`` (``GENOSSM_KERNEL_CACHE`` to choose another folder) and loaded
with ctypes: no build step at install time, no dependency. The build records the library's size and SHA-256
beside it, and a library is loaded only from a folder of this user that no one else can write to, after those
are checked: a file cut short or replaced is compiled again. ``available()`` says whether that worked;
without a compiler, or with ``GENOSSM_CPU_KERNEL=0`` (or ``false``, ``no``, ``off``), ``backend="auto"`` uses
the chunked backend instead.
Threads: one call per torch thread (``torch.get_num_threads()``) on disjoint channel ranges, from a small
pool of Python threads (ctypes releases the GIL); the calls do not spin while they wait.

Two entry points:

* :func:`selective_scan_cpu`: the public contract of ``selective_scan`` ((batch, dim, length) tensors);
  it transposes to position-major and back.
* :func:`ssm_scan_pm`: what the model calls. Position-major (batch, length, dim) tensors, as the
  projections produce them, any row stride (views of a wider projection are fine), one or both scan
  directions summed, gate and skip included: no transpose anywhere.

The forward computes softplus(Δ + bias), the D·u skip and the silu(z) gate in the same pass as the
recurrence; the backward kernel covers the recurrence (gradients of Δ, u, B, C, A and the initial state)
and the few elementwise gradients around it are PyTorch ops. The depthwise conv + silu of a Mamba branch
(:func:`conv_silu_pm`) is in the same C file. Everything is float32 inside; outputs come back in the input
dtype.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from genossm.ops.selective_scan._checks import check_shapes

BLOCK_LEN = 64  # positions per saved state in the backward (its work buffer: 4 x 64 x state x 16 floats)
TILE = 16
MAX_STATE = 64
_SOURCE = Path(__file__).with_name("cpu_kernel.c")
_FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-march=native", "-fno-math-errno", "-fno-trapping-math",
          "-fno-signed-zeros", "-fassociative-math", "-ffp-contract=fast"]

_lib = None
_lib_error: str | None = None
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _cpu_signature() -> str:
    """What the compiled code depends on beyond its source: -march=native means this machine's CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


_SYMBOLS = ("ssm_fwd", "ssm_bwd", "conv_silu", "transpose_2d")
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")


def _private(folder: Path) -> str | None:
    """Why ``folder`` may not hold code this process loads (None when it may): it must be a real folder (not
    a link) owned by this user that no other user can write to, so nobody else can plant or swap a library."""
    try:
        st = os.lstat(folder)
    except OSError as err:
        return err.strerror or str(err)
    import stat

    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:  # this user's own folder, opened to others (a umask of 002): closed again
        try:
            os.chmod(folder, stat.S_IMODE(st.st_mode) & ~0o022)
        except OSError:
            return "writable by other users"
    return None


def _cache_dir() -> Path:
    """The folder the compiled kernel is kept in: ``$GENOSSM_KERNEL_CACHE`` or ``~/.cache/genossm/kernels``
    when this user owns it and no one else can write to it; else ``<tmp>/genossm-kernels-<uid>`` on the same
    terms (made private by this process); else a fresh private temporary folder (compiled again by each run).
    A folder another user controls is never read."""
    env = os.environ.get("GENOSSM_KERNEL_CACHE")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    candidates = [Path(env) if env else Path.home() / ".cache" / "genossm" / "kernels",
                  Path(tempfile.gettempdir()) / f"genossm-kernels-{uid}"]
    reasons = []
    for folder in candidates:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as err:
            reasons.append(f"{folder}: {err.strerror or err}")
            continue
        why = _private(folder)
        if why is None and os.access(folder, os.W_OK):
            return folder
        reasons.append(f"{folder}: {why or 'not writable'}")
    private = Path(tempfile.mkdtemp(prefix="genossm-kernels-"))
    warnings.warn(f"genossm: no private kernel cache ({'; '.join(reasons)}); compiling the CPU kernel into "
                  f"{private} for this run only", RuntimeWarning, stacklevel=4)
    return private


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp(target: Path) -> Path:
    """The file beside a compiled library recording its size and SHA-256, written by the build."""
    return target.with_name(target.name + ".sha256")


def _verified(target: Path) -> str | None:
    """Why the compiled library at ``target`` must not be loaded (None when it may): it must be a regular file
    of this user that no one else can write, whose size and SHA-256 are those its build recorded beside it (a
    file cut short by a crash or a full disk, or replaced, is compiled again instead of crashing the process)."""
    import stat

    try:
        st = os.lstat(target)
        recorded = _stamp(target).read_text().split()
    except OSError:
        return "missing or without its recorded checksum"
    if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()) or st.st_mode & 0o022:
        return "not a private regular file"
    if len(recorded) != 2 or recorded[1] != str(st.st_size):
        return f"its size ({st.st_size} bytes) is not the one recorded"
    if recorded[0] != _digest(target):
        return "its content is not the one recorded"
    return None


def _write_synced(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _compile(cc: list[str], target: Path) -> None:
    """Compile into a temporary file, sync it to disk, record its size and SHA-256, then rename it into place
    (atomic: processes building at once each write their own file; a crash leaves no partial library)."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        proc = subprocess.run([*cc, *_FLAGS, str(_SOURCE), "-o", str(tmp), "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cc)} failed: {proc.stderr.strip()[-500:]}")
        os.chmod(tmp, 0o700)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        data = tmp.read_bytes()
        _write_synced(_stamp(target), f"{hashlib.sha256(data).hexdigest()} {len(data)}\n".encode())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def _build() -> ctypes.CDLL:
    cc = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")]
    if not cc[0]:
        raise RuntimeError("no C compiler (cc, gcc or clang) found")
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([*cc, *_FLAGS]).encode() + _cpu_signature().encode()).hexdigest()[:16]
    target = _cache_dir() / f"genossm_scan_{key}.so"
    why = _verified(target)
    if why is not None:
        if target.exists() or target.is_symlink():
            warnings.warn(f"genossm: the cached CPU kernel {target} is {why}; compiling it again", RuntimeWarning,
                          stacklevel=4)
        _compile(cc, target)
        why = _verified(target)
        if why is not None:
            raise RuntimeError(f"the compiled kernel {target} did not verify: {why}")
    lib = ctypes.CDLL(str(target))
    missing = [name for name in _SYMBOLS if not hasattr(lib, name)]
    if missing:
        raise RuntimeError(f"{target} lacks the kernel's functions ({', '.join(missing)}); delete it to rebuild")
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.ssm_fwd.restype = lib.ssm_bwd.restype = ctypes.c_int
    lib.ssm_fwd.argtypes = ([i64] * 5 + [ptr, i64, i64] * 4 + [ptr, ptr, i64, i64, ctypes.c_int, ptr, ptr, i64,
                                                               ctypes.c_int, i64, i64]
                            + [ptr, ctypes.c_int, ptr, ctypes.c_float, ctypes.c_int, ptr, i64, i64, ptr, i64, i64, ptr])
    lib.ssm_bwd.argtypes = ([i64] * 5 + [ptr, i64, i64] * 4 + [ptr, ptr, i64, i64, ptr, i64, ptr]
                            + [ptr, i64, i64] * 4 + [ptr, ptr, ctypes.c_int, i64, i64])
    lib.conv_silu.restype = lib.transpose_2d.restype = ctypes.c_int
    lib.transpose_2d.argtypes = [i64, i64, ptr, i64, ptr, i64, i64, i64]
    lib.conv_silu.argtypes = [i64] * 5 + [ptr, i64, i64, ptr, ptr] + [ptr, i64, i64] * 3 + [ptr, ptr, i64, i64]
    return lib


def _library():
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        with _lock:
            if _lib is None and _lib_error is None:
                switch = os.environ.get("GENOSSM_CPU_KERNEL", "1").strip().lower()
                if switch in _OFF:
                    _lib_error = f"switched off by GENOSSM_CPU_KERNEL={os.environ['GENOSSM_CPU_KERNEL']}"
                else:
                    if switch not in _ON:
                        warnings.warn(f"genossm: GENOSSM_CPU_KERNEL={os.environ['GENOSSM_CPU_KERNEL']!r} is not one "
                                      "of 1/true/yes/on or 0/false/no/off; the CPU kernel stays on",
                                      RuntimeWarning, stacklevel=3)
                    try:
                        _lib = _build()
                    except (OSError, RuntimeError) as err:
                        _lib_error = str(err)
                        warnings.warn(f"genossm: the fused CPU selective scan could not be compiled or loaded ({err}); "
                                      "using the slower chunked scan", RuntimeWarning, stacklevel=3)
    return _lib


def available() -> bool:
    """Whether the C kernel is compiled and loaded (compiling it on the first call)."""
    return _library() is not None


def unavailable_reason() -> str | None:
    _library()
    return _lib_error


_slot = threading.local()  # which pool thread this is: the index of its own g_B/g_C buffers in the backward


def _name_slot(counter):
    _slot.index = next(counter)


def slot() -> int:
    """0 .. threads-1 inside a pool thread, 0 in the caller (one thread: no pool)."""
    return getattr(_slot, "index", 0)


def _map(fn, ranges, threads=None):
    """Runs fn(lo, hi) for every channel range on ``threads`` pool threads (default torch.get_num_threads()).
    There are more ranges than threads when the work is large, and a thread takes the next range when it is
    done with one, so a thread slowed down by another process on its core holds up the others by at most one
    range."""
    global _pool, _pool_size
    threads = min(threads or torch.get_num_threads(), len(ranges))
    if threads <= 1:
        for lo, hi in ranges:
            fn(lo, hi)
        return
    with _lock:
        if _pool is None or _pool_size != threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="genossm-scan",
                                       initializer=_name_slot, initargs=(itertools.count(),))
            _pool_size = threads
        pool = _pool
    for f in [pool.submit(fn, lo, hi) for lo, hi in ranges]:
        f.result()


_TASK_WORK = 2**22  # state updates per range below which splitting further costs more than it balances


def _ranges(dim: int, per_group: int, work_per_channel: int = 0):
    """Channel ranges cut at tile borders that respect B/C groups: one per torch thread, or up to four per
    thread when each still holds ``_TASK_WORK`` state updates (``work_per_channel`` per channel)."""
    starts = [d for g0 in range(0, dim, per_group) for d in range(g0, g0 + per_group, TILE)]
    threads = torch.get_num_threads()
    parts = threads if threads > 1 else 1
    if threads > 1 and work_per_channel:
        parts = max(threads, min(4 * threads, dim * work_per_channel // _TASK_WORK))
    parts = max(1, min(parts, len(starts)))
    cuts = [starts[i * len(starts) // parts] for i in range(parts)] + [dim]
    return [(cuts[i], cuts[i + 1]) for i in range(parts) if cuts[i] < cuts[i + 1]]


def _n_tiles(lo: int, hi: int, per_group: int) -> int:
    """How many tiles the kernel makes of channels [lo, hi): up to TILE wide, never across a B/C group."""
    n, d = 0, lo
    while d < hi:
        group_end = (d // per_group + 1) * per_group
        d = min(d + TILE, hi, group_end)
        n += 1
    return n


def _p(t):
    return ctypes.c_void_p(t.data_ptr())


def _rows(t):
    """(batch, L, ...) tensor whose last dim (and, for 4-D, the last two) are contiguous -> pointer, strides."""
    return _p(t), t.stride(0), t.stride(1)


def _pm_ok(t) -> bool:
    return t.dtype == torch.float32 and t.stride(-1) == 1 and (t.dim() == 3 or t.stride(-2) == t.shape[-1])


def _float_pm(t):
    t = t.float()
    return t if _pm_ok(t) else t.contiguous()


def _opt(t):
    return _p(t) if t is not None else None


class _Scan(torch.autograd.Function):
    """Σ over ``directions`` of the gated scan, (y + n D u) · silu(z) with y = Σ_n C h, and each direction's
    last state; Δ = softplus(delta + dbias) computed inside the kernel.

    delta, u, z (batch, L, D) float32 with unit channel stride; B, C (batch, L, G, N) float32; A (D, N);
    h0 (batch, D, N) or None (the same initial state for every direction); dbias, D (D,) or None."""

    @staticmethod
    def forward(ctx, delta, u, B, C, A, h0, dbias, D, z, directions, softplus, save):
        lib = _library()
        batch, length, dim = u.shape
        groups, state = B.shape[2], B.shape[3]
        At = A.float().t().contiguous()  # (N, D)
        y = u.new_empty(batch, length, dim)
        ysave = u.new_empty(batch, length, dim) if save and z is not None else None
        n_blocks = -(-length // BLOCK_LEN)
        lasts, all_starts = [], []
        for i, reverse in enumerate(directions):
            h = (u.new_zeros(batch, state, dim) if h0 is None
                 else h0.float().transpose(1, 2).contiguous())  # (batch, N, D)
            starts = u.new_empty(n_blocks, batch, state, dim) if save else None
            finish = i == len(directions) - 1

            def call(lo, hi, reverse=reverse, h=h, starts=starts, accumulate=int(i > 0), finish=int(finish)):
                tile_states = u.new_empty(_n_tiles(lo, hi, dim // groups) * TILE * state)
                rc = lib.ssm_fwd(batch, length, dim, state, groups, *_rows(delta), *_rows(u), *_rows(B), *_rows(C),
                                 _p(At), *_rows(y), accumulate, _p(h), _opt(starts), BLOCK_LEN, int(reverse), lo, hi,
                                 _opt(dbias), int(softplus), _opt(D), float(len(directions)), finish,
                                 *(_rows(z) if z is not None else (None, 0, 0)),
                                 *(_rows(ysave) if ysave is not None else (None, 0, 0)), _p(tile_states))
                if rc:
                    raise RuntimeError("selective scan cpu kernel failed")

            if length:
                _map(call, _ranges(dim, dim // groups, batch * length * state))
            lasts.append(h.transpose(1, 2))
            all_starts.append(starts)
        if save:
            ctx.save_for_backward(delta, u, B, C, At, dbias, D, z, ysave, *all_starts)
            ctx.directions, ctx.softplus = directions, softplus
            ctx.has_h0 = h0 is not None
        return (y, *lasts)

    @staticmethod
    def backward(ctx, g_out, *g_lasts):
        lib = _library()
        delta, u, B, C, At, dbias, D, z, ysave, *all_starts = ctx.saved_tensors
        batch, length, dim = u.shape
        groups, state = B.shape[2], B.shape[3]
        n_dir = len(ctx.directions)
        g_out = u.new_zeros(batch, length, dim) if g_out is None else _float_pm(g_out)
        pre = delta if dbias is None else delta + dbias
        dt = F.softplus(pre) if ctx.softplus else pre
        dt = dt if _pm_ok(dt) else dt.contiguous()
        g_z = None
        if z is not None:
            sig = torch.sigmoid(z)
            gy = g_out * (z * sig)  # gradient of the ungated output
            if ctx.needs_input_grad[8]:
                g_z = g_out * ysave * (sig * (1 + z * (1 - sig)))
            del sig
        else:
            gy = g_out
        g_D = (gy * u).sum((0, 1)) * n_dir if D is not None and ctx.needs_input_grad[7] else None
        g_dt = torch.zeros_like(u, memory_format=torch.contiguous_format)
        g_u = gy * (n_dir * D) if D is not None else torch.zeros_like(g_dt)
        g_At = u.new_zeros(state, dim)
        ranges = _ranges(dim, dim // groups, batch * length * state)
        parts = {}  # pool thread -> its own g_B, g_C (sums over channels) and work buffer

        def buffers():
            i = slot()
            if i not in parts:
                parts[i] = (B.new_zeros(B.shape), B.new_zeros(B.shape), u.new_empty(4 * BLOCK_LEN * state * TILE))
            return parts[i]

        g_h0 = u.new_zeros(batch, state, dim) if ctx.has_h0 else None
        for reverse, starts, g_last in zip(ctx.directions, all_starts, g_lasts):
            mu = (u.new_zeros(batch, state, dim) if g_last is None
                  else g_last.float().transpose(1, 2).contiguous())

            def call(lo, hi, reverse=reverse, starts=starts, mu=mu):
                g_Bp, g_Cp, work = buffers()
                rc = lib.ssm_bwd(batch, length, dim, state, groups, *_rows(dt), *_rows(u), *_rows(B), *_rows(C),
                                 _p(At), *_rows(gy), _p(starts), BLOCK_LEN, _p(mu), *_rows(g_dt), *_rows(g_u),
                                 *_rows(g_Bp), *_rows(g_Cp), _p(g_At), _p(work), int(reverse), lo, hi)
                if rc:
                    raise RuntimeError("selective scan cpu kernel failed")

            if length:
                _map(call, ranges)
            if g_h0 is not None:
                g_h0 += mu
        if parts:
            (g_B, g_C, _), *rest = parts.values()
            for gb, gc, _ in rest:
                g_B += gb
                g_C += gc
        else:
            g_B, g_C = torch.zeros_like(B), torch.zeros_like(C)
        g_delta = g_dt.mul_(torch.sigmoid(pre)) if ctx.softplus else g_dt
        g_dbias = g_delta.sum((0, 1)) if dbias is not None and ctx.needs_input_grad[6] else None
        return (g_delta, g_u, g_B, g_C, g_At.t(), None if g_h0 is None else g_h0.transpose(1, 2), g_dbias, g_D,
                g_z, None, None, None)


class _ConvSilu(torch.autograd.Function):
    """silu(depthwise conv(x) + bias) along positions of x (batch, L, E); taps w (K, E), tap k reading
    position t + k - left. The backward recomputes the pre-activation instead of keeping it."""

    @staticmethod
    def forward(ctx, x, w, bias, left):
        lib = _library()
        batch, length, dim = x.shape
        K = w.shape[0]
        out = x.new_empty(batch, length, dim)

        def call(lo, hi):
            if lib.conv_silu(batch, length, dim, K, left, *_rows(x), _p(w), _p(bias), None, 0, 0, *_rows(out),
                             None, 0, 0, None, None, lo, hi):
                raise RuntimeError("conv cpu kernel failed")

        if length:
            _map(call, _ranges(dim, dim))
        ctx.save_for_backward(x, w, bias)
        ctx.left = left
        return out

    @staticmethod
    def backward(ctx, g):
        lib = _library()
        x, w, bias = ctx.saved_tensors
        batch, length, dim = x.shape
        K = w.shape[0]
        g = _float_pm(g)
        g_x = x.new_zeros(batch, length, dim)
        g_w = w.new_zeros(K, dim)
        g_b = bias.new_zeros(dim)

        def call(lo, hi):
            if lib.conv_silu(batch, length, dim, K, ctx.left, *_rows(x), _p(w), _p(bias), *_rows(g), None, 0, 0,
                             *_rows(g_x), _p(g_w), _p(g_b), lo, hi):
                raise RuntimeError("conv cpu kernel failed")

        if length:
            _map(call, _ranges(dim, dim))
        return g_x, g_w, g_b, None


def conv_silu_pm(x, w, bias, left: int):
    """silu(bias + Σ_k w[k] x[t + k - left]) for x (batch, L, E) (unit channel stride; zeros outside the
    sequence), w (K, E), bias (E,): the depthwise conv of a Mamba branch, position-major. Returns float32
    (what the scan reads; under autocast the next projection casts it itself)."""
    return _ConvSilu.apply(_float_pm(x), w.float().contiguous(), bias.float().contiguous(), int(left))


def _save_for_backward(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _vec(v):
    return None if v is None else v.float().contiguous()


def ssm_scan_pm(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, *, directions=(False,),
                initial_state=None, return_last_state=False):
    """Gated selective scan in the model's layout: u, delta, z (batch, L, dim), B, C (batch, L, state) or
    (batch, L, groups, state); A (dim, state), D, delta_bias (dim,).

    Returns Σ over ``directions`` (False: forward, True: reverse) of (y + D·u)·silu(z), (batch, L, dim) in
    u's dtype; with ``return_last_state`` also each direction's last state (batch, dim, state)."""
    dtype = u.dtype
    if B.dim() == 3:
        B, C = B.unsqueeze(2), C.unsqueeze(2)
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    save = _save_for_backward(*tensors)
    y, *lasts = _Scan.apply(_float_pm(delta), _float_pm(u), _float_pm(B), _float_pm(C), A, initial_state,
                            _vec(delta_bias), _vec(D), None if z is None else _float_pm(z),
                            tuple(bool(r) for r in directions), bool(delta_softplus), save)
    y = y.to(dtype)
    return (y, *lasts) if return_last_state else y


def _swap_last(x):
    """(batch, P, Q) -> contiguous (batch, Q, P). Float32: the kernel's blocked transpose, the rows P shared
    between the torch threads (PyTorch's own 2-D transpose copy runs on one thread, and the general copy
    ``transpose(1, 2).contiguous()`` is slower still); other dtypes: one 2-D transpose per batch row."""
    out = x.new_empty(x.shape[0], x.shape[2], x.shape[1])
    lib = _library() if x.dtype == torch.float32 and x.numel() else None
    if lib is None:
        for i in range(x.shape[0]):
            out[i] = x[i].t()
        return out
    batch, rows, cols = x.shape
    x = x.contiguous()

    def call(lo, hi):
        for i in range(batch):
            lib.transpose_2d(rows, cols, ctypes.c_void_p(x[i].data_ptr()), cols,
                             ctypes.c_void_p(out[i].data_ptr()), rows, lo, hi)

    step = max(TILE, -(-rows // (4 * torch.get_num_threads())) // TILE * TILE) if rows * cols > 1 << 16 else rows
    _map(call, [(lo, min(lo + step, rows)) for lo in range(0, rows, step)])
    return out


class _SwapLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _swap_last(x.contiguous())

    @staticmethod
    def backward(ctx, g):
        return _swap_last(g.contiguous())


def _rows_of(x):
    """(batch, dim, L) or (batch, groups, state, L) -> contiguous position-major (batch, L, dim | groups, state)."""
    if x is None:
        return None
    if x.dim() == 4:
        b, g, n, length = x.shape
        return _SwapLast.apply(x.reshape(b, g * n, length)).view(b, length, g, n)
    return _SwapLast.apply(x)


def selective_scan_cpu(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, reverse=False, initial_state=None,
):
    """Same arguments and results as :func:`~genossm.ops.selective_scan.reference.selective_scan_ref`."""
    check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if not available():
        raise RuntimeError(f"the cpu selective-scan backend is unavailable: {unavailable_reason()}")
    if A.shape[1] > MAX_STATE:
        raise ValueError(f"the cpu backend supports at most {MAX_STATE} states, got {A.shape[1]}")
    out, last = ssm_scan_pm(_rows_of(u), _rows_of(delta), A, _rows_of(B), _rows_of(C), D, _rows_of(z), delta_bias,
                            delta_softplus, directions=(reverse,), initial_state=initial_state,
                            return_last_state=True)
    out = _SwapLast.apply(out)
    return (out, last) if return_last_state else out


__all__ = ["selective_scan_cpu", "ssm_scan_pm", "conv_silu_pm", "available", "unavailable_reason"]

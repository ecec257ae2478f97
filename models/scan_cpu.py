"""The compiled CPU selective scan (``scan_backend="cpp"``): build on first use, load, wrap in autograd.

``csrc/selective_scan_cpu.cpp`` runs the recurrence one channel at a time with the N-dimensional state in
registers (forward), and recomputes the states of one channel in a per-thread workspace to run the adjoint
recurrence backwards (backward), OpenMP-parallel over batch × channel. Δ = softplus(delta + bias) and the D·u
skip are computed inside as well, saving autograd's extra passes over (batch, D, L) tensors. The library has a
plain C ABI and includes no torch or Python header, so it is compiled with one ``c++`` call (about a second, no
ninja, no Python development headers) and called through ctypes, which releases the GIL for the call.

Build once per machine: the library is cached under the torch extensions folder (``$TORCH_EXTENSIONS_DIR``
or ``~/.cache/torch_extensions``) with a name that hashes the source, the compiler, the flags and this CPU's
instruction-set flags (``-march=native``: a home folder shared by different machines gets one library per CPU
type). Concurrent processes (Ray trial workers starting together) serialise on an ``flock`` held while one of
them compiles; the others then load its result. The compiler writes to a temporary name that is renamed into
place, so a crashed build never leaves a half-written library, and a lock held by a dead process is released
by the kernel (no stale lock file to delete by hand).

Where the library cannot be built or loaded (no compiler, no OpenMP, a read-only cache, a self-check that
disagrees with the reference recurrence) :func:`cpu_scan_available` is False, ``"auto"`` uses the PyTorch
scan, and one line saying why goes to the ``models.scan_cpu`` logger (once per process). Environment:
``BOHB_SEARCH_SCAN_CXX`` names the compiler (default ``$CXX``, else ``c++`` / ``g++`` / ``clang++``; also the
tests' way to make the build fail), ``BOHB_SEARCH_SCAN_CPP=0`` turns the compiled scan off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "selective_scan_cpu.cpp"
ABI_VERSION = 2  # asd_scan_abi_version() in the source
# -O3 vectorises the loops over the state index; -march=native lets them use this CPU's widest vectors (the
# cache key includes the CPU's flags, see above); no -ffast-math: the exponential relies on exact rounding.
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17")
BUILD_TIMEOUT_S = 300


class CompiledScanUnavailable(RuntimeError):
    """The compiled CPU scan could not be built or loaded; the message says why."""


# ----------------------------------------------------------------------------------------------------
# Build and load


def _compiler() -> str | None:
    chosen = os.environ.get("BOHB_SEARCH_SCAN_CXX") or os.environ.get("CXX")
    if chosen:
        return chosen  # used as given: a missing one fails the build by its name instead of being replaced
    return next((path for name in ("c++", "g++", "clang++") if (path := shutil.which(name))), None)


def _cpu_fingerprint() -> str:
    """This CPU's instruction-set flags (Linux), else the processor string: what -march=native depends on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"
    return Path(root) / "bohb_search_selective_scan"


@contextmanager
def _exclusive(lock_path: Path):
    """An exclusive flock on ``lock_path`` (where fcntl exists; elsewhere the atomic rename alone keeps builds safe)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def library_path(cxx: str) -> Path:
    """Where the library for this source, compiler, flags and CPU lives (it may not exist yet)."""
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise CompiledScanUnavailable(f"compiler {cxx!r} does not run: {err}") from err
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), cxx.encode(), version.encode(), " ".join(FLAGS).encode(),
                 platform.machine().encode(), _cpu_fingerprint().encode()):
        key.update(part)
        key.update(b"\0")
    return _cache_dir() / f"selective_scan_{key.hexdigest()[:16]}.so"


def build(cxx: str) -> Path:
    """The compiled library, built now unless this machine already has it."""
    if not SOURCE.is_file():
        raise CompiledScanUnavailable(f"{SOURCE} is missing")
    lib = library_path(cxx)
    if lib.is_file():
        return lib
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CompiledScanUnavailable(f"cannot create the cache folder {lib.parent}: {err}") from err
    with _exclusive(lib.with_suffix(".lock")):
        if lib.is_file():  # another process built it while this one waited for the lock
            return lib
        fd, tmp = tempfile.mkstemp(dir=lib.parent, prefix=f".{lib.stem}.", suffix=".so.tmp")
        os.close(fd)
        try:
            done = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT_S)
            if done.returncode != 0:
                first = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[0]
                raise CompiledScanUnavailable(f"{cxx} failed: {first}")
            os.replace(tmp, lib)
        except (OSError, subprocess.SubprocessError) as err:
            raise CompiledScanUnavailable(f"{cxx} failed: {err}") from err
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib


def _bind(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.asd_scan_abi_version() != ABI_VERSION:
        raise CompiledScanUnavailable(f"{path} has ABI version {lib.asd_scan_abi_version()}, expected {ABI_VERSION}")
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.asd_scan_forward.argtypes = [p, p, p, i32, p, p, p, p, p] + [i64] * 5 + [i32, p]
    lib.asd_scan_forward.restype = None
    lib.asd_scan_backward.argtypes = [p, p, p, i32, p, p, p, p] + [p] * 8 + [i64] * 6 + [i32, p]
    lib.asd_scan_backward.restype = None
    return lib


def _self_check(lib: ctypes.CDLL) -> None:
    """A tiny scan through the library against the recurrence written out here: a miscompiled or foreign
    library must not be used silently. Two state sizes: a specialised one (16) and the generic path (3)."""
    g = torch.Generator().manual_seed(0)
    for n in (16, 3):
        u, raw = torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 9, generator=g)
        A, D, bias = -torch.rand(4, n, generator=g) - 0.1, torch.randn(4, generator=g), torch.randn(4, generator=g)
        B, C = torch.randn(2, 2, n, 9, generator=g), torch.randn(2, 2, n, 9, generator=g)
        y = _forward(lib, u, raw, A, B, C, D, bias, True)
        delta, h, want = torch.nn.functional.softplus(raw + bias[:, None]), torch.zeros(2, 4, n), []
        for t in range(9):
            Bt, Ct = B[:, :, :, t].repeat_interleave(2, 1), C[:, :, :, t].repeat_interleave(2, 1)
            h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t])[..., None] * Bt
            want.append((h * Ct).sum(-1) + D * u[..., t])
        if not torch.allclose(y, torch.stack(want, -1), rtol=1e-4, atol=1e-4):
            raise CompiledScanUnavailable("the compiled scan disagrees with the reference recurrence (self-check)")


@lru_cache(maxsize=1)
def _loaded() -> tuple[ctypes.CDLL, Path] | None:
    """(library, its path), or None (after one logged line) where it cannot be built or loaded. Once per process."""
    if os.environ.get("BOHB_SEARCH_SCAN_CPP", "1") == "0":
        return None
    try:
        cxx = _compiler()
        if cxx is None:
            raise CompiledScanUnavailable("no C++ compiler found (set $CXX or $BOHB_SEARCH_SCAN_CXX)")
        path = build(cxx)
        lib = _bind(path)
        _self_check(lib)
        return lib, path
    except Exception as err:  # noqa: BLE001 - whatever went wrong, the PyTorch scan is the answer
        log.warning("compiled CPU selective scan unavailable, using the PyTorch scan instead: %s", err)
        return None


def _library() -> ctypes.CDLL | None:
    loaded = _loaded()
    return None if loaded is None else loaded[0]


def cpu_scan_available() -> bool:
    """True when the compiled CPU scan is built and loaded in this process (builds it on the first call)."""
    return _loaded() is not None


def loaded_library_path() -> Path | None:
    """The file of the loaded library (None where it is unavailable)."""
    loaded = _loaded()
    return None if loaded is None else loaded[1]


# ----------------------------------------------------------------------------------------------------
# Calls and autograd


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _forward(lib, u, delta, A, B, C, D, delta_bias, softplus: bool) -> torch.Tensor:
    """y = scan + D·u for float32 contiguous u, delta (batch, D, L), A (D, N), B, C (batch, G, N, L), D and
    delta_bias (D,) or None."""
    batch, dim, length = u.shape
    groups, n = B.shape[1], A.shape[1]
    Bt, Ct = B.transpose(-1, -2).contiguous(), C.transpose(-1, -2).contiguous()  # time-major for the kernel
    y = torch.empty_like(u)
    threads = torch.get_num_threads()
    workspace = u.new_empty(threads * (length + 4 * n))
    lib.asd_scan_forward(_ptr(u), _ptr(delta), _ptr(delta_bias), int(softplus), _ptr(A), _ptr(Bt), _ptr(Ct), _ptr(D),
                         _ptr(y), batch, dim, length, n, groups, threads, _ptr(workspace))
    return y


def _backward_parts(batch: int, groups: int, per_group: int, threads: int) -> int:
    """Parts per (batch item, group) in the backward: enough work items for two per thread, each part with
    its own dB/dC buffers (L × N), so no two threads add into the same memory."""
    return max(1, min(per_group, -(-2 * threads // (batch * groups))))


class _CompiledScan(torch.autograd.Function):
    """y_t = Σ_n C_t,n h_t,n + D u_t with h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t and Δ = softplus(delta + delta_bias)
    (or without softplus). Inputs float32 and contiguous: u, delta (batch, D, L), A (D, N), B, C (batch, G, N, L),
    D and delta_bias (D,) or None. Nothing of size (batch, D, L, N) is kept for the backward, which recomputes."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus):
        ctx.softplus = softplus
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        return _forward(_library(), u, delta, A, B, C, D, delta_bias, softplus)

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        batch, dim, length = u.shape
        groups, n = B.shape[1], A.shape[1]
        threads = torch.get_num_threads()
        parts = _backward_parts(batch, groups, dim // groups, threads)
        Bt, Ct = B.transpose(-1, -2).contiguous(), C.transpose(-1, -2).contiguous()
        grad_y = grad_y.float().contiguous()
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dA_part, dD_part, dbias_part = u.new_empty(batch, dim, n), u.new_empty(batch, dim), u.new_empty(batch, dim)
        dB_part, dC_part = (u.new_zeros(batch, groups, parts, length, n) for _ in range(2))
        workspace = u.new_empty(threads * ((2 * length + 5) * n + 2 * length))
        _library().asd_scan_backward(
            _ptr(u), _ptr(delta), _ptr(delta_bias), int(ctx.softplus), _ptr(A), _ptr(Bt), _ptr(Ct), _ptr(D),
            _ptr(grad_y), _ptr(du), _ptr(ddelta), _ptr(dA_part), _ptr(dD_part), _ptr(dbias_part), _ptr(dB_part),
            _ptr(dC_part), batch, dim, length, n, groups, parts, threads, _ptr(workspace))
        dB = dB_part.sum(2).transpose(-1, -2).contiguous()  # back to (batch, G, N, L)
        dC = dC_part.sum(2).transpose(-1, -2).contiguous()
        return (du, ddelta, dA_part.sum(0), dB, dC, None if D is None else dD_part.sum(0),
                None if delta_bias is None else dbias_part.sum(0), None)


def compiled_scan(u, delta, A, B, C, D=None, delta_bias=None, softplus=False) -> torch.Tensor:
    """The compiled scan (+ D·u, Δ's bias and softplus inside) with autograd; float32 contiguous CPU inputs as
    :class:`_CompiledScan` says. Raises :class:`CompiledScanUnavailable` where the library cannot run."""
    if _library() is None:
        raise CompiledScanUnavailable("the compiled CPU selective scan could not be built or loaded on this machine "
                                      "(see the logged reason); use scan_backend='auto' or 'torch'")
    if u.device.type != "cpu":
        raise ValueError(f"scan_backend='cpp' needs CPU tensors, got tensors on {u.device}")
    return _CompiledScan.apply(u, delta, A, B, C, D, delta_bias, bool(softplus))

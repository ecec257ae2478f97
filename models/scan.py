"""Selective scan (the S6 recurrence of Mamba) behind one function, with three interchangeable backends.

For every channel d and state index n the scan runs the discretised linear recurrence

    h_t = exp(Δ_t · A) ⊙ h_{t-1} + (Δ_t · B_t) · u_t        (zero-order hold on A, Euler on B)
    y_t = ⟨C_t, h_t⟩ + D · u_t        and optionally   y_t ← y_t · silu(z_t)

with Δ_t = softplus(delta_t + delta_bias) when ``delta_softplus``. This is exactly what mamba-ssm's
``selective_scan_fn`` computes: Ā = exp(ΔA) and B̄ = ΔB. The paper (section 2.2, after eq. 3) writes
Ā_t = I + Δ_t A_t, which is the first-order Taylor approximation of exp(Δ_t A_t); we keep the exact
exponential because it is what the CUDA kernel does and because it keeps |Ā| ≤ 1 for any Δ > 0 when A < 0
(the approximation goes unstable for Δ > 2/|A|).

Tensor layout and semantics follow ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` so the
backends are drop-in replacements for each other:

    u, delta : (batch, D, L)       A : (D, N) real          D : (D,)        delta_bias : (D,)
    B, C     : (batch, N, L), or (batch, G, N, L) where channel d uses group d // (D / G)
    z        : (batch, D, L)       returns y : (batch, D, L) in u's dtype (math runs in float32)

Backends (``backend=`` / ``EncoderConfig.scan_backend``):

* ``"reference"``: a plain Python loop over time, the readable definition; used by the tests.
* ``"torch"``: a chunked scan in pure PyTorch, fast on CPU and differentiable. The sequence is cut into
  ~√L chunks; a short loop over the position inside a chunk scans all chunks at once, a second short loop
  carries the state across chunk boundaries, and one vectorised correction adds each chunk's incoming
  state: O(√L) Python steps instead of O(L). It only ever multiplies numbers in (0, 1] (no exp(-cumsum)
  tricks that overflow for large Δ). Work is done in cache-sized blocks of channels in a time-major
  layout, and a hand-written backward recomputes the states and runs the adjoint recurrence as a reverse
  chunked scan, so, like the CUDA kernel, nothing of size (batch, D, L, N) outlives a call.
* ``"cpp"``: a compiled CPU kernel (``models.scan_cpu``, ``csrc/selective_scan_cpu.cpp``): the recurrence
  runs one channel at a time with its N-dimensional state in vector registers, OpenMP-parallel over
  batch × channel, with Δ's softplus and the D skip fused in; a hand-written backward recomputes each
  channel's states. 5-10× the reference loop and 3-5× the ``"torch"`` scan on one core (BENCHMARKS.md).
  Built with the system C++ compiler on first use (about a second, cached per machine); ``"auto"`` picks it
  for CPU tensors, and where it cannot be built falls back to ``"torch"`` after one logged line.
* ``"cuda"``: mamba-ssm's fused kernel, imported lazily and only when asked for or when ``"auto"`` sees a
  CUDA tensor and a working install (mamba-ssm 2.3.2 cannot even be imported without its CUDA build, so
  it is never imported at module import time).
"""

from __future__ import annotations

import importlib
import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from .config import SCAN_BACKENDS
from .scan_cpu import compiled_scan, cpu_scan_available



# ----------------------------------------------------------------------------------------------------
# Backend selection


@lru_cache(maxsize=None)
def cuda_kernel(module: str, name: str) -> Callable | None:
    """mamba-ssm's ``module.name`` if CUDA and the ``cuda`` extra are usable, else None (Mamba-1's selective
    scan here, Mamba-2's chunk scan in :mod:`models.ssd`).

    The import itself loads the compiled extension, which fails (ImportError, OSError on a missing
    libcudart, RuntimeError from torch's CUDA init, Triton errors) on machines without a matching CUDA
    build, so it happens only on request, never at module import time.
    """
    if not torch.cuda.is_available():
        return None
    try:
        return getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - any failure to load the extension means "not available"
        return None


def _cuda_selective_scan_fn() -> Callable | None:
    return cuda_kernel("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")


def cuda_scan_available() -> bool:
    """True when the mamba-ssm CUDA kernel can be used in this process."""
    return _cuda_selective_scan_fn() is not None


def resolve_scan_backend(name: str, device: torch.device | str | None = None) -> str:
    """Turn a requested backend into the one that will run: "cpp", "torch", "reference" or "cuda".

    ``"auto"`` picks the CUDA kernel when ``device`` is a CUDA device (or, with no device given, when
    CUDA is available) and mamba-ssm loads; on CPU the compiled kernel when it builds and loads (the first
    call may build it), else the fast PyTorch scan. Asking for ``"cuda"`` or ``"cpp"`` where that kernel
    cannot run is an error rather than a silent fallback.
    """
    if name not in SCAN_BACKENDS:
        raise ValueError(f"scan_backend must be one of {SCAN_BACKENDS}, got {name!r}")
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if name == "auto":
        if on_cuda:
            return "cuda" if cuda_scan_available() else "torch"
        return "cpp" if cpu_scan_available() else "torch"
    if name == "cpp":
        if on_cuda:
            raise ValueError(f"scan_backend='cpp' needs CPU tensors, got tensors on {device or 'cuda'}")
        if not cpu_scan_available():
            raise RuntimeError("scan_backend='cpp': the compiled CPU selective scan could not be built or loaded "
                               "here (the logged line says why); use scan_backend='auto' or 'torch'")
    if name == "cuda":
        if not cuda_scan_available():
            raise RuntimeError(
                "scan_backend='cuda' needs a CUDA device and the 'cuda' extra (mamba-ssm built for this "
                "torch); use scan_backend='auto' or 'torch' on this machine"
            )
        if not on_cuda:
            raise ValueError(f"scan_backend='cuda' needs CUDA tensors, got tensors on {device}")
    return name


# ----------------------------------------------------------------------------------------------------
# Shared input handling


def _check_inputs(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, D, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (D={dim}, N), got shape {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("A must be real; complex A is not supported")
    n_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            ok = t.shape == (batch, n_state, length)
        elif t.dim() == 4:
            ok = t.shape[0] == batch and t.shape[2:] == (n_state, length) and dim % t.shape[1] == 0
        else:
            ok = False
        if not ok:
            raise ValueError(
                f"{name} must be (batch={batch}, N={n_state}, L={length}) or (batch, G, N, L) with G dividing "
                f"D={dim}, got shape {tuple(t.shape)}"
            )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (dim,):
            raise ValueError(f"{name} must be ({dim},), got shape {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


def _effective_delta(delta, delta_bias, delta_softplus):
    """Δ = softplus(delta + delta_bias) (or without softplus), float32, (batch, D, L)."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _as_groups(t: torch.Tensor) -> torch.Tensor:
    """B or C as (batch, G, N, L) float32; the 3-d form is one group."""
    return (t.unsqueeze(1) if t.dim() == 3 else t).float()


def _skip_and_gate(y, u, D, z, out_dtype):
    """y + D·u, then the optional silu(z) gate, cast to the input dtype (mamba's order of operations)."""
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(out_dtype)


# ----------------------------------------------------------------------------------------------------
# Reference: one Python step per time step


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence written out step by step: the definition the other backends must match. Slow for long L."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    delta = _effective_delta(delta, delta_bias, delta_softplus)
    Bg, Cg = _as_groups(B), _as_groups(C)
    groups = Bg.shape[1]
    shape = (batch, groups, dim // groups, length)
    delta, u4 = delta.reshape(shape), u.float().reshape(shape)
    A3 = A.float().reshape(groups, dim // groups, -1)
    h = u.new_zeros(batch, groups, dim // groups, A.shape[1], dtype=torch.float32)
    ys = []
    # unbind(-1) rather than x[..., t]: its backward is one stack, not L full-size zero-filled copies
    steps = zip(delta.unbind(-1), u4.unbind(-1), Bg.unbind(-1), Cg.unbind(-1))
    for delta_t, u_t, B_t, C_t in steps:
        dA = torch.exp(delta_t[..., None] * A3)  # Ā_t = exp(Δ_t A)               (batch, G, D/G, N)
        dBu = (delta_t * u_t)[..., None] * B_t[:, :, None, :]  # B̄_t u_t = Δ_t B_t u_t
        h = dA * h + dBu
        ys.append((h * C_t[:, :, None, :]).sum(-1))  # y_t = C_t · h_t
    y = torch.stack(ys, dim=-1).reshape(batch, dim, length)
    return _skip_and_gate(y, u, D, z, u.dtype)


# ----------------------------------------------------------------------------------------------------
# Fast PyTorch backend: blocked, chunked scan with a hand-written backward

_LOG2_E = 1.0 / math.log(2.0)
_BLOCK_ELEMENTS = 1 << 20  # (L, channels, N) work buffers of 4 MiB; the backward's four fit a 32 MiB L3 together


def _chunk_size(length: int) -> int:
    # Python steps ≈ chunk + length / chunk, smallest at chunk = √L.
    return max(1, math.isqrt(max(length - 1, 0)) + 1)


def _scan_chunks_(a: torch.Tensor, h: torch.Tensor, decay: torch.Tensor | None, reverse: bool = False) -> None:
    """In place over (n_chunks, chunk, ...) views: h holds b on entry and h_t = a_t ⊙ h_{t∓1} + b_t on return.

    The state before the first step is zero (h_{-1}, or h_L when ``reverse``). ``decay`` receives the
    running product of a inside each chunk; ``None`` writes it over ``a``.
    Steps: (1) scan inside all chunks at once from a zero state; (2) carry the true state across chunk
    boundaries, one step per chunk; (3) add each chunk's incoming state, decayed to every position.
    """
    n_chunks, chunk = h.shape[:2]
    decay = a if decay is None else decay
    # Views of every in-chunk position, made once: slicing inside the loops would cost a Python-level
    # call per slice, and these loops are where the Python overhead of the scan lives.
    a_at, h_at, decay_at = a.unbind(1), h.unbind(1), decay.unbind(1)  # [t] → (n_chunks, ...)
    order = range(chunk - 1, -1, -1) if reverse else range(chunk)
    prev = None
    for t in order:
        if prev is None:
            if decay is not a:
                decay_at[t].copy_(a_at[t])
        else:
            h_at[t].addcmul_(a_at[t], h_at[prev])
            torch.mul(decay_at[prev], a_at[t], out=decay_at[t])
        prev = t
    if n_chunks == 1:
        return
    incoming = torch.zeros_like(h_at[0])  # incoming[c]: the state entering chunk c
    h_end, decay_end, incoming_at = h_at[prev].unbind(0), decay_at[prev].unbind(0), incoming.unbind(0)
    for c in range(n_chunks - 2, -1, -1) if reverse else range(1, n_chunks):
        src = c + 1 if reverse else c - 1
        torch.addcmul(h_end[src], decay_end[src], incoming_at[src], out=incoming_at[c])
    later = slice(0, n_chunks - 1) if reverse else slice(1, n_chunks)  # the first chunk scanned starts at zero
    h[later].addcmul_(decay[later], incoming[later].unsqueeze(1))


def _block_plan(batch: int, per_group: int, per_channel: int) -> tuple[int, int]:
    """(batch items, channels) per block so that one block holds about _BLOCK_ELEMENTS elements."""
    channels = max(1, min(per_group, _BLOCK_ELEMENTS // per_channel))
    batches = max(1, min(batch, _BLOCK_ELEMENTS // (per_channel * channels)))
    return batches, channels


def _blocks(batch: int, groups: int, per_group: int, per_channel: int):
    """(group, batch slice, channel slice) for every block; a block never straddles two groups (one B_t, C_t)."""
    batches, channels = _block_plan(batch, per_group, per_channel)
    for g in range(groups):
        for b0 in range(0, batch, batches):
            for c0 in range(0, per_group, channels):
                yield g, slice(b0, min(b0 + batches, batch)), slice(c0, min(c0 + channels, per_group))


class _Workspace:
    """Flat scratch buffers shared by every block (fresh large allocations page-fault on CPU)."""

    def __init__(self, count: int, batch: int, per_group: int, per_channel: int, like: torch.Tensor):
        batches, channels = _block_plan(batch, per_group, per_channel)
        self.flat = [like.new_empty(batches * channels * per_channel) for _ in range(count)]

    def get(self, i: int, shape: tuple[int, ...]) -> torch.Tensor:
        return self.flat[i][: math.prod(shape)].view(shape)


class _SelectiveScanCore(torch.autograd.Function):
    """y_t = Σ_n C_t,n h_t,n with h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, float32, on CPU or any device.

    Inputs: u, delta (batch, D, L), A (D, N), B, C (batch, G, N, L), all float32 and contiguous; Δ already has
    its bias and softplus applied. Nothing of size (L, batch, D, N) is kept between forward and backward:
    like the CUDA kernel, the backward recomputes the states block by block.
    """

    @staticmethod
    def _block_views(u, delta, A, B, C, g, bs, cs):
        batch, dim, length = u.shape
        groups = B.shape[1]
        per_group = dim // groups
        u4 = u.view(batch, groups, per_group, length)
        d4 = delta.view(batch, groups, per_group, length)
        # time-major: (L, b, c); time leads so each scan step touches one contiguous slab per chunk
        u_t = u4[bs, g, cs].permute(2, 0, 1).contiguous()
        d_t = d4[bs, g, cs].permute(2, 0, 1).contiguous()
        A_b = A.view(groups, per_group, -1)[g, cs]  # (c, N)
        B_t = B[bs, g].permute(2, 0, 1).contiguous()  # (L, b, N)
        C_t = C[bs, g].permute(2, 0, 1).contiguous()
        return u_t, d_t, A_b, B_t, C_t

    @staticmethod
    def _states(ws, d_t, A_b, du, B_t, padded, chunk, decay_slot):
        """Slot 0 ← Ā_t = exp(Δ_t A) for t < L, zeros after; slot 1 ← the states h_t (zero padded to a whole chunk).

        Slot 0 has one step more than the padded length, so ``dA[1:]`` is Ā_{t+1}: the coefficients of
        the reverse (adjoint) scan, with the required zero at t = L-1, without a shifted copy.
        ``decay_slot`` None lets the scan overwrite Ā with its running products (forward only needs h).
        """
        length, nb, nc = d_t.shape
        n = A_b.shape[-1]
        dA = ws.get(0, (padded + 1, nb, nc, n))
        # Ā_t = exp(Δ_t A) computed as 2^(Δ_t · A log₂e): exp2 is ~3× cheaper than exp on CPU and this
        # exponential is the single most expensive operation of the scan.
        torch.mul(d_t.unsqueeze(-1), A_b * _LOG2_E, out=dA[:length]).exp2_()
        dA[length:].zero_()  # zero past the end: the reverse scan's a_{t+1} at t = L-1, and the padding
        h = ws.get(1, (padded, nb, nc, n))
        torch.mul(du.unsqueeze(-1), B_t.unsqueeze(2), out=h[:length])  # B̄_t u_t = Δ_t u_t B_t
        h[length:].zero_()
        decay = None if decay_slot is None else ws.get(decay_slot, (padded, nb, nc, n)).view(-1, chunk, nb, nc, n)
        _scan_chunks_(dA[:padded].view(-1, chunk, nb, nc, n), h.view(-1, chunk, nb, nc, n), decay)
        return dA, h

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        batch, dim, length = u.shape
        groups, n = B.shape[1], A.shape[1]
        chunk = _chunk_size(length)
        padded = -(-length // chunk) * chunk
        y = torch.empty_like(u)
        y4 = y.view(batch, groups, dim // groups, length)
        ws = _Workspace(2, batch, dim // groups, (padded + 1) * n, u)
        for g, bs, cs in _blocks(batch, groups, dim // groups, (padded + 1) * n):
            u_t, d_t, A_b, B_t, C_t = _SelectiveScanCore._block_views(u, delta, A, B, C, g, bs, cs)
            _, h = _SelectiveScanCore._states(ws, d_t, A_b, d_t * u_t, B_t, padded, chunk, None)
            y_t = torch.einsum("lbcn,lbn->lbc", h[:length], C_t)  # y_t = C_t · h_t
            y4[bs, g, cs] = y_t.permute(1, 2, 0)
        ctx.save_for_backward(u, delta, A, B, C)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B, C = ctx.saved_tensors
        grad_y = grad_y.float().contiguous()
        batch, dim, length = u.shape
        groups, n = B.shape[1], A.shape[1]
        per_group = dim // groups
        chunk = _chunk_size(length)
        padded = -(-length // chunk) * chunk
        grads = [torch.zeros_like(t) for t in (u, delta, A, B, C)]
        g_u4, g_d4 = (t.view(batch, groups, per_group, length) for t in grads[:2])
        g_A3 = grads[2].view(groups, per_group, n)
        g_B, g_C = grads[3], grads[4]
        gy4 = grad_y.view(batch, groups, per_group, length)
        ws = _Workspace(4, batch, per_group, (padded + 1) * n, u)
        for g, bs, cs in _blocks(batch, groups, per_group, (padded + 1) * n):
            u_t, d_t, A_b, B_t, C_t = _SelectiveScanCore._block_views(u, delta, A, B, C, g, bs, cs)
            nb, nc = u_t.shape[1:]
            du = d_t * u_t
            gy_t = gy4[bs, g, cs].permute(2, 0, 1).contiguous()  # (L, b, c)
            # Recompute Ā (slot 0) and h (slot 1); slot 2 takes the running products.
            dA, h = _SelectiveScanCore._states(ws, d_t, A_b, du, B_t, padded, chunk, 2)
            # ∂/∂C_t = Σ_c gy_t,c h_t,c
            g_C[bs, g] += torch.einsum("lbc,lbcn->bnl", gy_t, h[:length])
            # Adjoint states, a reverse scan: λ_t = gy_t C_t + Ā_{t+1} λ_{t+1}; Ā_{t+1} is dA shifted by one step.
            lam = ws.get(3, (padded, nb, nc, n))
            torch.mul(gy_t.unsqueeze(-1), C_t.unsqueeze(2), out=lam[:length])
            lam[length:].zero_()
            decay = ws.get(2, (padded, nb, nc, n)).view(-1, chunk, nb, nc, n)
            _scan_chunks_(dA[1:].view(-1, chunk, nb, nc, n), lam.view(-1, chunk, nb, nc, n), decay, reverse=True)
            lam = lam[:length]
            # through B̄u = Δ u B:   ∂/∂B_t = Σ_c λ_t,c Δ_t,c u_t,c ;  ∂/∂(Δu)_t,c = Σ_n λ_t,c,n B_t,n
            g_B[bs, g] += torch.einsum("lbc,lbcn->bnl", du, lam)
            g_du = torch.einsum("lbcn,lbn->lbc", lam, B_t)
            # through Ā = exp(ΔA):   ∂/∂(ΔA)_t = λ_t ⊙ h_{t-1} ⊙ Ā_t  (zero at t = 0: the initial state is zero)
            g_dA = ws.get(2, (length, nb, nc, n))
            g_dA[0].zero_()
            torch.mul(lam[1:], h[: length - 1], out=g_dA[1:]).mul_(dA[1:length])
            scratch = h[:length]  # the states are no longer needed
            g_A3[g, cs] += torch.mul(g_dA, d_t.unsqueeze(-1), out=scratch).sum((0, 1))  # Σ_{t,b} ∂/∂(ΔA) Δ
            g_d = torch.mul(g_dA, A_b, out=scratch).sum(-1)  # Σ_n ∂/∂(ΔA) A
            g_d4[bs, g, cs] = (g_d + g_du * u_t).permute(1, 2, 0)
            g_u4[bs, g, cs] = (g_du * d_t).permute(1, 2, 0)
        return tuple(grads)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The fast pure-PyTorch backend (see the module docstring); same arguments and results as the reference."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    delta = _effective_delta(delta, delta_bias, delta_softplus)
    y = _SelectiveScanCore.apply(
        u.float().contiguous(), delta.contiguous(), A.float().contiguous(),
        _as_groups(B).contiguous(), _as_groups(C).contiguous(),
    )
    return _skip_and_gate(y, u, D, z, u.dtype)


def selective_scan_cpp(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The compiled CPU kernel (``models.scan_cpu``) with the same arguments and results as the reference.

    Δ's bias and softplus and the D·u skip run inside the kernel (forward and backward); only the optional
    z gate is left to autograd (the mixer does not use it).
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    resolve_scan_backend("cpp", u.device)  # raises the explanatory error where the kernel cannot run
    y = compiled_scan(
        u.float().contiguous(), delta.float().contiguous(), A.float().contiguous(),
        _as_groups(B).contiguous(), _as_groups(C).contiguous(),
        None if D is None else D.float().contiguous(),
        None if delta_bias is None else delta_bias.float().contiguous(),
        delta_softplus,
    )
    return _skip_and_gate(y, u, None, z, u.dtype)


# ----------------------------------------------------------------------------------------------------
# CUDA kernel and the one public entry point


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba-ssm's fused kernel (recomputes states in backward, never materialises (B, D, L, N))."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    fn = _cuda_selective_scan_fn()
    if fn is None:
        resolve_scan_backend("cuda", u.device)  # raises the explanatory error
    if not u.is_cuda:
        raise ValueError(f"scan_backend='cuda' needs CUDA tensors, got tensors on {u.device}")
    # The kernel wants contiguous inputs and float32 D / delta_bias.
    return fn(
        u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
        None if D is None else D.float().contiguous(),
        None if z is None else z.contiguous(),
        None if delta_bias is None else delta_bias.float().contiguous(),
        delta_softplus,
    )


_BACKENDS = {"torch": selective_scan_torch, "reference": selective_scan_reference, "cuda": selective_scan_cuda,
             "cpp": selective_scan_cpp}


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto"):
    """Run the selective scan with ``backend`` ("auto" | "cpp" | "torch" | "reference" | "cuda"); see the module
    docstring."""
    name = resolve_scan_backend(backend, u.device)
    return _BACKENDS[name](u, delta, A, B, C, D, z, delta_bias, delta_softplus)

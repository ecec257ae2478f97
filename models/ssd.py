"""Mamba-2's state-space duality (SSD) scan and the bidirectional Mamba-2 mixer (``EncoderConfig.mixer="mamba2"``).

Reference: T. Dao and A. Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
Structured State Space Duality", ICML 2024 (arXiv:2405.21060), sections 6-7.

Mamba-2 restricts Mamba-1's decay Ā = exp(ΔA), one per channel and state index, to one scalar per head:
every head h of P channels (``headdim``) and every state index share a_t = Δ_t,h · A_h ≤ 0. Per head,

    H_t = exp(a_t) H_{t-1} + Δ_t B_t x_tᵀ        (state N × P; B_t, C_t ∈ R^N shared by the heads of a group)
    y_t = H_tᵀ C_t + D x_t

so y = (L ∘ C Bᵀ)(Δ x) + D x with the lower-triangular decay matrix L[t, s] = exp(a_{s+1} + … + a_t): the
scan is a masked, attention-like matrix product (the "duality"). The chunked algorithm (section 6) cuts the
sequence into chunks of Q steps and does
    within a chunk:   y_diag = (L_chunk ∘ C Bᵀ) (Δ x)                             Q × Q matrix products
    chunk states:     S_c = Σ_s exp(a_{s+1} + … + a_end) B_s (Δ x)_sᵀ              one product per chunk
    across chunks:    H_c = exp(Σ_chunk c-1 of a) H_{c-1} + S_{c-1}                a loop of L / Q steps
    off-diagonal:     y_off[t] = exp(a_start + … + a_t) H_cᵀ C_t
All exponents are sums of a ≤ 0 over a stretch inside one chunk, masked to -inf above the diagonal before the
exp, so every exp is in (0, 1]: nothing overflows however long the sequence. The segment sums inside a chunk
are summed directly (a cumulative sum of a masked to the steps after s) rather than taken as differences of
cumulative sums, which lose float32 digits to cancellation.

Backends (``EncoderConfig.scan_backend``): ``"torch"`` the chunked form above in pure PyTorch (autograd
differentiates the matrix products); ``"reference"`` the recurrence step by step, the definition the tests
hold the others to; ``"cuda"`` mamba-ssm's Triton kernel ``mamba_chunk_scan_combined``, imported lazily
(never at module import time: it needs a CUDA build); ``"auto"`` the kernel for CUDA tensors where it
imports, else ``"torch"``. ``"cpp"`` (the compiled Mamba-1 CPU kernel) has no SSD counterpart and is refused.

Tensor layout is mamba-ssm's: x (batch, L, heads, P), dt (batch, L, heads), A (heads,), B and C (batch, L,
groups, N) with head h in group h // (heads / groups), D and dt_bias (heads,); y has x's shape and dtype.
The PyTorch paths compute in float32 (float64 for float64 inputs, which the tests use as ground truth).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import SCAN_BACKENDS, EncoderConfig
from .scan import cuda_kernel

# Q of the PyTorch path: the Q × Q work inside chunks grows with Q, the Python loop across chunks with L / Q.
# Forward + backward of one width-192 layer on one CPU thread, L = 513, batch 4: Q = 8 / 16 / 32 / 64 took
# 0.9 / 1 / 1.4 / 2.5 × the time of Q = 16; 16 rather than 8 keeps the loop at half the steps for long clips.
TORCH_CHUNK = 16
CUDA_CHUNK = 256  # the chunk the mamba-ssm kernel is tuned for (Mamba-2's default)


# ----------------------------------------------------------------------------------------------------
# Backend selection


def _cuda_chunk_scan_fn() -> Callable | None:
    """mamba-ssm's ``mamba_chunk_scan_combined`` where CUDA and a working mamba-ssm / Triton install exist."""
    return cuda_kernel("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")


def cuda_ssd_available() -> bool:
    """True when mamba-ssm's SSD kernel can be used in this process."""
    return _cuda_chunk_scan_fn() is not None


def resolve_ssd_backend(name: str, device: torch.device | str | None = None) -> str:
    """The SSD backend that will run for a requested one: "torch", "reference" or "cuda" (see the module docstring)."""
    if name not in SCAN_BACKENDS:
        raise ValueError(f"scan_backend must be one of {SCAN_BACKENDS}, got {name!r}")
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if name == "cpp":
        raise ValueError("scan_backend='cpp' is the compiled Mamba-1 scan; the SSD (mixer='mamba2') takes "
                         "'auto', 'torch', 'reference' or 'cuda'")
    if name == "auto":
        return "cuda" if on_cuda and cuda_ssd_available() else "torch"
    if name == "cuda":
        if not cuda_ssd_available():
            raise RuntimeError("scan_backend='cuda' for the SSD needs a CUDA device and mamba-ssm with Triton "
                               "(the 'cuda' extra); use scan_backend='auto' or 'torch' on this machine")
        if not on_cuda:
            raise ValueError(f"scan_backend='cuda' needs CUDA tensors, got tensors on {device}")
    return name


# ----------------------------------------------------------------------------------------------------
# Shared input handling


def _check_inputs(x, dt, A, B, C, D, dt_bias) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (batch, L, heads, headdim), got shape {tuple(x.shape)}")
    batch, length, heads, _ = x.shape
    if dt.shape != (batch, length, heads):
        raise ValueError(f"dt must be (batch={batch}, L={length}, heads={heads}), got shape {tuple(dt.shape)}")
    if A.shape != (heads,):
        raise ValueError(f"A must be (heads={heads},), got shape {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or t.shape[:2] != (batch, length) or heads % t.shape[2]:
            raise ValueError(f"{name} must be (batch={batch}, L={length}, groups, N) with groups dividing "
                             f"heads={heads}, got shape {tuple(t.shape)}")
    if C.shape != B.shape:
        raise ValueError(f"C must have B's shape {tuple(B.shape)}, got {tuple(C.shape)}")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None and t.shape != (heads,):
            raise ValueError(f"{name} must be (heads={heads},), got shape {tuple(t.shape)}")


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for float32 and narrower inputs (half, bfloat16 under autocast), float64 for float64: the
    tests' float64 ground truth runs the same code."""
    return torch.promote_types(t.dtype, torch.float32)


def _effective_dt(dt, dt_bias, dt_softplus) -> torch.Tensor:
    """Δ = softplus(dt + dt_bias) (or without softplus), float32, (batch, L, heads)."""
    dt = dt.to(_work_dtype(dt))
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    return F.softplus(dt) if dt_softplus else dt


def _with_skip(y, x, D) -> torch.Tensor:
    """y + D·x (D per head), cast to x's dtype."""
    if D is not None:
        y = y + x.to(y.dtype) * D.to(y.dtype)[:, None]
    return y.to(x.dtype)


# ----------------------------------------------------------------------------------------------------
# Reference: one Python step per time step


def ssd_reference(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False):
    """The recurrence H_t = exp(Δ_t A) H_{t-1} + Δ_t B_t x_tᵀ, y_t = H_tᵀ C_t + D x_t step by step (float32, or
    float64 for float64 inputs)."""
    _check_inputs(x, dt, A, B, C, D, dt_bias)
    batch, length, heads, headdim = x.shape
    per_group = heads // B.shape[2]
    delta = _effective_dt(dt, dt_bias, dt_softplus)
    work = delta.dtype
    Bh = B.to(work).repeat_interleave(per_group, dim=2)  # (batch, L, heads, N): each head its group's B_t
    Ch = C.to(work).repeat_interleave(per_group, dim=2)
    A = A.to(work)
    state = x.new_zeros(batch, heads, B.shape[3], headdim, dtype=work)
    ys = []
    for x_t, d_t, B_t, C_t in zip(x.to(work).unbind(1), delta.unbind(1), Bh.unbind(1), Ch.unbind(1)):
        decay = torch.exp(d_t * A)[..., None, None]  # one scalar per (batch, head)
        state = decay * state + (d_t[..., None, None] * B_t[..., :, None]) * x_t[..., None, :]
        ys.append((state * C_t[..., :, None]).sum(-2))  # (batch, heads, P)
    return _with_skip(torch.stack(ys, dim=1), x, D)


# ----------------------------------------------------------------------------------------------------
# Chunked SSD in PyTorch: matrix products inside chunks, a short recurrence across them


def _chunked_core(x, delta, A, B, C, chunk: int) -> torch.Tensor:
    """The SSD without the D skip for x (batch, L, heads, P), Δ (batch, L, heads), A (heads,), B, C (batch, L,
    groups, N), all of one float dtype, L a multiple of ``chunk``. Layout inside: (batch, chunk index, ...)."""
    batch, length, heads, headdim = x.shape
    groups, n_state = B.shape[2:]
    per, n_chunks = heads // groups, length // chunk
    xdt = (x * delta[..., None]).view(batch, n_chunks, chunk, groups, per, headdim)  # Δ_s x_s
    a = (delta * A).view(batch, n_chunks, chunk, groups, per)  # a_s = Δ_s A ≤ 0
    cum = a.cumsum(2)  # within-chunk cumulative sums: cum[t] = a_start + … + a_t (never across chunks)
    B_c = B.view(batch, n_chunks, chunk, groups, n_state).transpose(2, 3)  # (batch, chunks, groups, Q, N)
    C_c = C.view(batch, n_chunks, chunk, groups, n_state).transpose(2, 3)

    # within chunks: L[t, s] = exp(a_{s+1} + … + a_t) for s ≤ t. The segment sums are summed directly, as the
    # cumulative sum over t of a_t masked to the steps after s, not as cum[t] - cum[s]: the difference of two
    # sums of up to Q terms loses float32 digits to cancellation (4-40× the loop's error against float64 at
    # Q = 32-64, tests/test_ssd.py). Above the diagonal the sum is masked to -inf *before* the exp (exp → 0, gradient 0).
    a_h = a.permute(0, 1, 3, 4, 2)  # (batch, chunks, groups, per, Q)
    after = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril_(-1)  # [t, s]: t > s
    segsum = a_h.unsqueeze(-1).masked_fill(~after, 0.0).cumsum(-2)  # [t, s] = Σ_{s<k≤t} a_k, 0 for t ≤ s
    decay = torch.exp(segsum.masked_fill(after.T, -math.inf))  # (batch, chunks, groups, per, Q, Q)
    scores = C_c @ B_c.transpose(-1, -2)  # C_t · B_s, shared by the heads of a group: (batch, chunks, groups, Q, Q)
    xdt_h = xdt.permute(0, 1, 3, 4, 2, 5)  # (batch, chunks, groups, per, Q, P)
    y = (decay * scores.unsqueeze(3)) @ xdt_h  # y_diag, (batch, chunks, groups, per, Q, P)

    # each chunk's final state from a zero start: Σ_s exp(a_{s+1} + … + a_end) B_s (Δx)_sᵀ (the last row of the
    # segment sums); the heads of a group share B, so their P-wide columns go side by side into one
    # (N × Q) @ (Q × per·P) product
    to_end = torch.exp(segsum[..., -1, :]).permute(0, 1, 4, 2, 3)  # (batch, chunks, Q, groups, per)
    weighted = (xdt * to_end[..., None]).transpose(2, 3).reshape(batch, n_chunks, groups, chunk, per * headdim)
    chunk_states = (B_c.transpose(-1, -2) @ weighted).view(batch, n_chunks, groups, n_state, per, headdim)

    # across chunks: the state entering chunk c, H_c = exp(chunk c-1's sum of a) H_{c-1} + chunk_states[c-1]
    chunk_decay = torch.exp(cum[:, :, -1])  # (batch, chunks, groups, per)
    # unbind, not [:, c]: the backward of one unbind is one stack, of L/Q selects L/Q zero-filled full-size tensors
    states_at, decay_at = chunk_states.unbind(1), chunk_decay[:, :, :, None, :, None].unbind(1)
    entering = [torch.zeros_like(states_at[0])]  # the first chunk starts from zero
    for c in range(1, n_chunks):
        entering.append(entering[-1] * decay_at[c - 1] + states_at[c - 1])
    H_in = torch.stack(entering, dim=1).view(batch, n_chunks, groups, n_state, per * headdim)
    # off-diagonal part: the entering state decayed to step t, exp(a_start + … + a_t) H_cᵀ C_t (the first chunk's
    # is zero; computing it anyway avoids slicing every tensor here, whose backward fills full-size zeros)
    from_start = torch.exp(cum).transpose(2, 3)  # (batch, chunks, groups, Q, per)
    y_off = (C_c @ H_in).view(batch, n_chunks, groups, chunk, per, headdim) * from_start[..., None]
    y = y + y_off.transpose(3, 4)
    return y.permute(0, 1, 4, 2, 3, 5).reshape(batch, length, heads, headdim)


def ssd_chunked(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, chunk: int = TORCH_CHUNK):
    """The chunked SSD in pure PyTorch (module docstring); same arguments and results as :func:`ssd_reference`.

    A must be ≤ 0 and Δ ≥ 0 (as the mixer makes them): the stability argument needs every a = ΔA ≤ 0.
    """
    _check_inputs(x, dt, A, B, C, D, dt_bias)
    length = x.shape[1]
    chunk = max(1, min(chunk, length))
    pad = -length % chunk  # zeros at the end: causal, so they change no real position's output
    delta = F.pad(_effective_dt(dt, dt_bias, dt_softplus), (0, 0, 0, pad))
    xf, Bf, Cf = (F.pad(t.to(delta.dtype), (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
    y = _chunked_core(xf, delta, A.to(delta.dtype), Bf, Cf, chunk)[:, :length]
    return _with_skip(y, x, D)


def ssd_cuda(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False):
    """mamba-ssm's fused Triton SSD kernel (forward and backward), chunk 256."""
    _check_inputs(x, dt, A, B, C, D, dt_bias)
    fn = _cuda_chunk_scan_fn()
    if fn is None or not x.is_cuda:
        resolve_ssd_backend("cuda", x.device)  # raises the explanatory error
    return fn(x.contiguous(), dt.contiguous(), A.float().contiguous(), B.contiguous(), C.contiguous(),
              chunk_size=CUDA_CHUNK, D=None if D is None else D.float().contiguous(),
              dt_bias=None if dt_bias is None else dt_bias.float().contiguous(), dt_softplus=dt_softplus)


_BACKENDS = {"torch": ssd_chunked, "reference": ssd_reference, "cuda": ssd_cuda}


def ssd_scan(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, backend="auto"):
    """Run the SSD with ``backend`` ("auto" | "torch" | "reference" | "cuda"); see the module docstring."""
    return _BACKENDS[resolve_ssd_backend(backend, x.device)](x, dt, A, B, C, D, dt_bias, dt_softplus)


# ----------------------------------------------------------------------------------------------------
# The bidirectional Mamba-2 mixer


class BiMamba2Mixer(nn.Module):
    """Bidirectional Mamba-2 token mixer, (B, L, D) → (B, L, D), interchangeable with ``models.ssm.BiMambaMixer``.

        x̃, g̃, (B, C, Δ)_f, (B, C, Δ)_b = W_in x + b_in             one projection, as Mamba-2 (B, C, Δ from the input)
        per direction (backward: on the time-reversed sequence), own parameters:
            x, B, C = SiLU(causal depthwise Conv1D([x̃, B, C]))    Mamba-2 convolves B and C together with x
            y = SSD(x, Δ = softplus(Δ + b_Δ), A, B, C, D)          heads of ``headdim`` channels, scalar decay each
        y = RMSNorm(g ⊙ y_f + (1 − g) ⊙ y_b),  g = σ(g̃)           Mamba-1 mixer's fusion; the norm as Mamba-2
        out = W_out y + b_out

    As in the Mamba-1 mixer, g̃ occupies the slot of Mamba's SiLU output gate, W_in / W_out are shared and the
    direction-specific parameters carry a leading direction axis (0 forward, 1 backward), so the backward
    direction's heads are just more heads (and a second B/C group) of one SSD call. Mamba-2 puts a
    normalisation before the output projection for stability (Dao & Gu 2024, section 7); its gate is the
    fusion gate here, so the norm is applied to the fused output.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        inner, n, headdim = cfg.inner_dim, cfg.d_state, cfg.headdim
        heads = inner // headdim  # EncoderConfig.validate makes sure headdim divides E
        self.inner, self.d_state, self.headdim, self.heads, self.d_conv = inner, n, headdim, heads, cfg.d_conv
        self.scan_backend = cfg.scan_backend
        # x̃ (E), g̃ (E), then per direction B, C (N each) and Δ (one per head). The Δ rows get the encoder's
        # N(0, 0.02) Linear init, small enough that b_Δ decides Δ at the start (as Mamba's W_Δ init intends).
        self.in_proj = nn.Linear(cfg.dim, 2 * inner + 2 * (2 * n + heads))
        # Depthwise causal Conv1D over [x, B, C] of each direction: rows [0, E+2N) forward, the rest backward.
        width = 2 * (inner + 2 * n)
        conv = nn.Conv1d(width, width, cfg.d_conv, groups=width)  # PyTorch's fan-in uniform init, as the Mamba-1 mixer
        self.conv_weight = nn.Parameter(conv.weight.detach().clone())
        self.conv_bias = nn.Parameter(conv.bias.detach().clone())

        # b_Δ = softplus⁻¹(Δ₀) with Δ₀ log-uniform in [dt_min, dt_max] per head: heads start with a spread of
        # memory lengths (Mamba-1's Δ init, per head instead of per channel).
        log_lo, log_hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(2, heads) * (log_hi - log_lo) + log_lo)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        # A = -exp(A_log), one scalar per head, drawn uniformly from [-16, -1] (Mamba-2's A_init_range): the
        # S4D-real ramp -[1..N] of Mamba-1 spreads decays over the state index, which a scalar decay cannot, so
        # the spread goes over the heads. Stored as log(-A) so that A stays negative (|exp(ΔA)| < 1, stable).
        self.A_log = nn.Parameter(torch.empty(2, heads).uniform_(1.0, 16.0).log())
        self.D = nn.Parameter(torch.ones(2, heads))  # the x → y skip inside the SSM, one per head (Mamba-2's default)
        for p in (self.A_log, self.D, self.dt_bias):
            p._no_weight_decay = True

        self.norm = nn.RMSNorm(inner, eps=1e-5)
        self.out_proj = nn.Linear(inner, cfg.dim)
        self.out_proj.residual_out = True

    def directional_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y_f, y_b, g̃), each (B, L, E): the two scans in the input's time order, and the gate pre-activation."""
        batch, length, _ = x.shape
        inner, n, heads = self.inner, self.d_state, self.heads
        x_in, gate, bc_f, bc_b, dt_f, dt_b = self.in_proj(x).split([inner, inner, 2 * n, 2 * n, heads, heads], dim=-1)
        # (B, L, 2, E+2N): the backward direction sees time reversed
        seq = torch.stack([torch.cat([x_in, bc_f], -1), torch.cat([x_in, bc_b], -1).flip(1)], dim=2)
        seq = seq.view(batch, length, -1).transpose(1, 2)  # (B, 2(E+2N), L) for the grouped conv
        # left padding only: output t sees inputs t-d_conv+1 .. t of its own direction, never later ones
        seq = F.silu(F.conv1d(F.pad(seq, (self.d_conv - 1, 0)), self.conv_weight, self.conv_bias, groups=seq.shape[1]))
        xs, B, C = seq.transpose(1, 2).reshape(batch, length, 2, inner + 2 * n).split([inner, n, n], dim=-1)
        y = ssd_scan(
            xs.reshape(batch, length, 2 * heads, self.headdim),  # heads [0, H) forward, [H, 2H) backward
            torch.cat([dt_f, dt_b.flip(1)], dim=-1),
            A=-torch.exp(self.A_log.float()).view(-1),
            B=B, C=C,  # (B, L, 2, N): group 0 drives the forward heads, group 1 the backward ones
            D=self.D.float().view(-1),
            dt_bias=self.dt_bias.float().view(-1),
            dt_softplus=True,
            backend=self.scan_backend,
        ).reshape(batch, length, 2, inner)
        return y[:, :, 0], y[:, :, 1].flip(1), gate  # the backward scan back in the input's time order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y_f, y_b, gate = self.directional_outputs(x)
        g = torch.sigmoid(gate)  # in_proj's bias starts at zero: g ≈ 0.5, both directions weighted equally at first
        return self.out_proj(self.norm(g * y_f + (1.0 - g) * y_b))

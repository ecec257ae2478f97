"""The bidirectional selective state-space (Audio-Mamba) block of paper section 2.2.

One block, pre-norm, on a (B, L, D) token sequence:

    x̃, g̃ = W_in Norm(x) + b_in                               shared input projection (width E each)
    for each direction (forward; backward = on the time-reversed sequence), with its own parameters:
        s = SiLU(causal depthwise Conv1D(x̃))                  local context, never from the future
        Δ, B, C = softplus(W_Δ W_x s + b_Δ), W_B s, W_C s     input-dependent ("selective") parameters
        y = selective_scan(s, Δ, A, B, C, D)                  eq. 3a / 3b: h_t = Ā_t h_{t∓1} + B̄_t s_t, y_t = C_t h_t
    y = g ⊙ y_f + (1 − g) ⊙ y_b,   g = σ(g̃)                   the paper's gated fusion
    x ← x + W_out y + b_out                                    output projection and residual
    x ← x + MLP(Norm(x))                                       the MLP sub-block

The paper generates the fusion gate together with the SSM parameters from the projected sequence; here
g̃ is the second half of the shared input projection (the slot Mamba uses for its SiLU output gate), so
each direction's conv / x_proj / dt_proj / A / D are its own while W_in and W_out are shared, as in
Audio-Mamba's bidirectional blocks. Discretisation is Ā = exp(ΔA), B̄ = ΔB (see ``models.scan``).

Initialisation happens where the parameters are made (``BiMambaMixer.__init__``); the encoder's generic
Linear init (``models.encoder``) only touches the ``nn.Linear`` in/out projections.

``EncoderConfig.mixer = "mamba2"`` puts Mamba-2's SSD mixer (``models.ssd``, a scalar decay per head) in the
same block instead; "mamba1" (the default, and what checkpoints without the field load as) is this one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig
from .layers import PreNormBlock
from .scan import selective_scan
from .ssd import BiMamba2Mixer


class BiMambaMixer(nn.Module):
    """Bidirectional selective-SSM token mixer: (B, L, D) → (B, L, D).

    Every per-direction parameter is one tensor with a leading direction axis (index 0 = forward scan,
    1 = backward scan), so both scans run as one batched computation: the backward direction's channels
    are simply E more channels that see the sequence time-reversed.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        inner, n, rank = cfg.inner_dim, cfg.d_state, cfg.resolved_dt_rank
        self.inner, self.d_state, self.dt_rank, self.d_conv = inner, n, rank, cfg.d_conv
        self.scan_backend = cfg.scan_backend
        self.in_proj = nn.Linear(cfg.dim, 2 * inner)  # x̃ and the gate pre-activation g̃, shared by both directions

        # Depthwise causal Conv1D, one kernel per channel and direction (rows [0, E) forward, [E, 2E) backward).
        conv = nn.Conv1d(2 * inner, 2 * inner, cfg.d_conv, groups=2 * inner)  # PyTorch's fan-in uniform init
        self.conv_weight = nn.Parameter(conv.weight.detach().clone())
        self.conv_bias = nn.Parameter(conv.bias.detach().clone())

        # x_proj: conv output → (Δ in low rank, B, C); N(0, 0.02) like every other projection.
        self.x_proj_weight = nn.Parameter(torch.randn(2, rank + 2 * n, inner) * 0.02)

        # Δ = softplus(W_Δ · Δ_lowrank + b_Δ). Init as in Mamba: W_Δ ~ U(±rank^-½) is small enough that b_Δ
        # decides Δ at the start, and b_Δ = softplus⁻¹(Δ₀) with Δ₀ log-uniform in [dt_min, dt_max], so the
        # channels start out with a spread of memory lengths ~1/Δ₀.
        bound = rank ** -0.5
        self.dt_proj_weight = nn.Parameter(torch.empty(2, inner, rank).uniform_(-bound, bound))
        log_lo, log_hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(2, inner) * (log_hi - log_lo) + log_lo)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

        # A init (S4D-real): A = -[1, 2, ..., N] for every channel, a range of decay rates. Stored as log(-A)
        # so A stays negative (|Ā| = exp(ΔA) < 1: a stable recurrence) whatever the optimiser does.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(2, inner, 1))
        self.D = nn.Parameter(torch.ones(2, inner))  # the skip u → y inside the SSM
        for p in (self.A_log, self.D, self.dt_bias):
            p._no_weight_decay = True

        self.out_proj = nn.Linear(inner, cfg.dim)
        self.out_proj.residual_out = True

    def directional_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y_f, y_b, g̃), each (B, L, E): the two scans in the input's time order, and the gate pre-activation."""
        batch, length, _ = x.shape
        inner = self.inner
        x_in, gate = self.in_proj(x).chunk(2, dim=-1)
        x_in = x_in.transpose(1, 2)  # (B, E, L)
        seq = torch.cat([x_in, x_in.flip(-1)], dim=1)  # (B, 2E, L): the backward direction sees time reversed
        # left padding only: output t sees inputs t-d_conv+1 .. t of its own direction, never later ones
        seq = F.silu(F.conv1d(F.pad(seq, (self.d_conv - 1, 0)), self.conv_weight, self.conv_bias, groups=2 * inner))
        params = torch.einsum("bgel,gke->bgkl", seq.view(batch, 2, inner, length), self.x_proj_weight)
        dt, B, C = params.split([self.dt_rank, self.d_state, self.d_state], dim=2)  # (B, 2, ·, L)
        delta = torch.einsum("bgrl,ger->bgel", dt, self.dt_proj_weight).reshape(batch, 2 * inner, length)
        y = selective_scan(
            seq, delta,
            A=-torch.exp(self.A_log.float()).view(2 * inner, -1),
            B=B.contiguous(), C=C.contiguous(),  # (B, 2, N, L): group 0 drives channels [0, E), group 1 the rest
            D=self.D.float().view(-1),
            delta_bias=self.dt_bias.float().view(-1),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        y_f = y[:, :inner].transpose(1, 2)
        y_b = y[:, inner:].flip(-1).transpose(1, 2)  # back to the input's time order
        return y_f, y_b, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y_f, y_b, gate = self.directional_outputs(x)
        g = torch.sigmoid(gate)  # in_proj's bias starts at zero: g ≈ 0.5, both directions weighted equally at first
        return self.out_proj(g * y_f + (1.0 - g) * y_b)


class SSMBlock(PreNormBlock):
    """Pre-norm residual block: x + BiMamba(Norm(x)), then x + MLP(Norm(x)).

    The mixer is :class:`BiMambaMixer` (``cfg.mixer == "mamba1"``, the paper's) or the Mamba-2 (SSD) mixer
    ``models.ssd.BiMamba2Mixer`` (``"mamba2"``); both map (B, L, D) → (B, L, D) and fuse the directions alike.
    """

    def __init__(self, cfg: EncoderConfig, drop_path: float = 0.0):
        mixer = BiMamba2Mixer(cfg) if cfg.mixer == "mamba2" else BiMambaMixer(cfg)
        super().__init__(mixer, cfg.dim, cfg.norm, cfg.mlp_ratio, cfg.dropout, drop_path)

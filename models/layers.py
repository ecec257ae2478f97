"""Small building blocks shared by both encoders: normalisation choice, the MLP sub-block, stochastic depth."""

from __future__ import annotations

import torch
from torch import nn


def make_norm(kind: str, dim: int) -> nn.Module:
    """LayerNorm or RMSNorm over the last axis ("layernorm" | "rmsnorm")."""
    if kind == "layernorm":
        return nn.LayerNorm(dim)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-5)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")


class MLP(nn.Module):
    """The position-wise MLP sub-block: Linear → GELU → Dropout → Linear → Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.fc2.residual_out = True  # scaled down at init (see models.encoder._init_weights)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample with probability ``rate`` while training."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep  # rescale so the expected output is unchanged

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class PreNormBlock(nn.Module):
    """Pre-norm residual block shared by both backbones: x + Mixer(Norm(x)), then x + MLP(Norm(x)).

    ``mixer`` is the bidirectional SSM (Audio-Mamba) or self-attention; ``mlp_ratio`` 0 drops the MLP.
    """

    def __init__(self, mixer: nn.Module, dim: int, norm: str, mlp_ratio: float, dropout: float,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.mixer = mixer
        self.drop = nn.Dropout(dropout)
        self.norm2 = make_norm(norm, dim) if mlp_ratio > 0 else None
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout) if mlp_ratio > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.drop(self.mixer(self.norm1(x))))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

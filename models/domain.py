"""Domain-adversarial parts (section 2.5, eq. 10, Fig. 3): gradient reversal and the domain classifier."""

from __future__ import annotations

import torch
from torch import nn


class _GradReverse(torch.autograd.Function):
    """Identity on the way forward; multiplies the incoming gradient by -λ on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)  # a view, so autograd records this node even though the values are unchanged

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * -ctx.scale, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """GRL(x): x forward, −scale · ∂L/∂x backward, so minimising the domain loss through it maximises it for x."""
    return _GradReverse.apply(x, float(scale))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; ``scale`` (λ) may be changed between steps for a schedule."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class DomainClassifier(nn.Module):
    """Small MLP D(ẑ) predicting the domain (source / target) of an anomaly embedding."""

    def __init__(self, emb_dim: int, hidden: int = 64, n_domains: int = 2, dropout: float = 0.0):
        super().__init__()
        if n_domains < 2:
            raise ValueError(f"n_domains must be >= 2, got {n_domains}")
        self.net = nn.Sequential(
            nn.Linear(emb_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_domains)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

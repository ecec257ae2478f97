"""Heads on top of the encoder: the pre-training classifier (section 2.4) and the anomaly head (section 2.3)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ClassificationHead(nn.Module):
    """Linear classifier on the pooled feature, trained with cross-entropy over machine types (eq. 7)."""

    def __init__(self, dim: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(pooled))


class AnomalyHead(nn.Module):
    """Multi-level feature fusion → ℓ2-normalisation → two-layer MLP (eq. 4-6).

        ĥ = Σ_m β_m h⁽ᵐ⁾,  β = softmax(α)                              (4)
        h̃ = (h⁽⁰⁾ + ĥ) / ‖h⁽⁰⁾ + ĥ‖₂                                  (5)
        z = W₂ ReLU(BN(Dropout_p(W₁ h̃ + b₁))) + b₂                     (6)

    ``layer_indices`` pick the M intermediate layers from the encoder's per-block features (negative indices
    count from the last block); an empty list fuses nothing and h̃ is the normalised global feature alone.
    """

    def __init__(self, dim: int, layer_indices: Sequence[int], emb_dim: int = 128, hidden: int = 512,
                 dropout: float = 0.1):
        super().__init__()
        self.layer_indices = [int(i) for i in layer_indices]
        if len(set(self.layer_indices)) != len(self.layer_indices):
            raise ValueError(f"layer_indices must not repeat a layer, got {self.layer_indices}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        # α = 0: every selected layer starts with the same weight 1/M.
        self.alpha = nn.Parameter(torch.zeros(len(self.layer_indices))) if self.layer_indices else None
        self.fc1 = nn.Linear(dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, emb_dim)

    def fusion_weights(self) -> torch.Tensor:
        """β = softmax(α), one weight per selected layer (eq. 4)."""
        if self.alpha is None:
            return torch.zeros(0, device=self.fc1.weight.device)
        return torch.softmax(self.alpha, dim=0)

    def fused_feature(self, pooled: torch.Tensor, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        """h̃ of eq. 5: the unit-norm (B, D) vector the MLP sees."""
        fused = pooled
        if self.alpha is not None:
            n = len(layers)
            bad = [i for i in self.layer_indices if not -n <= i < n]
            if bad:
                raise ValueError(f"layer_indices {bad} out of range for an encoder with {n} layers")
            stacked = torch.stack([layers[i] for i in self.layer_indices], dim=0)  # (M, B, D)
            fused = pooled + torch.einsum("m,mbd->bd", self.fusion_weights(), stacked)
        return F.normalize(fused, p=2.0, dim=-1)

    def forward(self, pooled: torch.Tensor, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        h = self.fused_feature(pooled, layers)
        return self.fc2(F.relu(self.bn(self.drop(self.fc1(h)))))

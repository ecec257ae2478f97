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


class PatchStatisticsMap(nn.Module):
    """Patch statistics (:meth:`Encoder.patch_statistics`) → an embedding the margin objective classifies,
    so that the tokenizer's projection can be trained through the statistics the default score reads.

        e = W (s − μ) / σ + b

    μ and σ are fixed buffers: the statistics' mean and standard deviation over the training clips under the
    *pre-trained* tokenizer, so the map starts on inputs of unit scale whatever the projection's scale, and
    moving the projection is what changes them. W is Xavier-uniform from a seeded generator, b = 0 (the
    same map on every run of a seed, whatever else was drawn before).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, emb_dim: int = 128, seed: int = 0):
        super().__init__()
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"mean and std must be vectors of one length, got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float().clamp_min(1e-6))
        self.linear = nn.Linear(len(mean), emb_dim)
        nn.init.xavier_uniform_(self.linear.weight, generator=torch.Generator().manual_seed(seed))
        nn.init.zeros_(self.linear.bias)

    def forward(self, stats: torch.Tensor) -> torch.Tensor:
        return self.linear((stats.float() - self.mean) / self.std)

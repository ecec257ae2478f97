"""The DCASE 2023/2025 Task 2 autoencoder baseline (the "Baseline (AE)" rows of Tables 2-3).

Each input vector is 5 consecutive log-mel frames concatenated (5 × 128 = 640 values); a dense autoencoder
(640 → 128 ×4 → 8 → 128 ×4 → 640, BatchNorm + ReLU after every hidden layer) reconstructs it. A clip's
anomaly score is either the mean squared reconstruction error of its vectors ("MSE" mode) or, in the
baseline's "MAHALA" mode, mᵀ Σ_d⁻¹ m with m the mean residual *frame* (n_mels values) of the clip and Σ_d
the covariance of the training residual frames of domain d (source / target), the smaller of the two.
This follows the official code (nttcslab dcase2023_task2_baseline_ae, 2025t2 branch) exactly: Σ_d is
summed from per-batch centred scatter matrices and divided by the number of *vectors* − 1, and m is not
centred.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping

import torch
from torch import nn


@dataclass
class AEConfig:
    n_mels: int = 128  # mel bins per frame
    n_frames: int = 5  # consecutive frames concatenated into one input vector
    hidden: int = 128  # width of every hidden dense layer
    n_hidden_layers: int = 4  # dense layers before the bottleneck (and after it, mirrored)
    bottleneck: int = 8  # code size
    bn_momentum: float = 0.01  # the baseline's BatchNorm settings (ported from Keras: momentum 0.99 there)
    bn_eps: float = 1e-3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{f.name} must be a positive integer, got {value!r}")
        if not 0.0 < self.bn_momentum <= 1.0 or self.bn_eps <= 0:
            raise ValueError(f"bn_momentum must be in (0, 1] and bn_eps > 0, got {self.bn_momentum}, {self.bn_eps}")

    @property
    def input_dim(self) -> int:
        return self.n_mels * self.n_frames

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "AEConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown AEConfig field(s): {', '.join(unknown)}")
        return cls(**d)


def frame_context_vectors(logmel: torch.Tensor, n_frames: int = 5) -> torch.Tensor:
    """(B, M, T) or (M, T) log-mel → (B, T - n_frames + 1, n_frames·M) vectors, frame-major.

    Vector t is [frame t, frame t+1, …, frame t+n_frames-1], each frame's M mel values in order, as the
    baseline builds them.
    """
    if logmel.dim() == 2:
        logmel = logmel.unsqueeze(0)
    if logmel.dim() != 3:
        raise ValueError(f"logmel must be (batch, mels, frames) or (mels, frames), got shape {tuple(logmel.shape)}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    batch, mels, frames = logmel.shape
    if frames < n_frames:
        raise ValueError(f"a clip of {frames} frames is shorter than n_frames={n_frames}")
    windows = logmel.unfold(-1, n_frames, 1)  # (B, M, T', n_frames)
    return windows.permute(0, 2, 3, 1).reshape(batch, frames - n_frames + 1, n_frames * mels)


class DCASEAutoencoder(nn.Module):
    """Dense autoencoder on frame-context vectors: (B, input_dim) → reconstruction (B, input_dim)."""

    def __init__(self, cfg: AEConfig | None = None):
        super().__init__()
        cfg = cfg or AEConfig()
        self.config = cfg

        def dense(n_in: int, n_out: int) -> list[nn.Module]:
            return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, momentum=cfg.bn_momentum, eps=cfg.bn_eps), nn.ReLU()]

        widths = [cfg.input_dim] + [cfg.hidden] * cfg.n_hidden_layers
        encoder = [m for a, b in zip(widths[:-1], widths[1:]) for m in dense(a, b)]
        encoder += dense(cfg.hidden, cfg.bottleneck)
        back = [cfg.bottleneck] + [cfg.hidden] * cfg.n_hidden_layers
        decoder = [m for a, b in zip(back[:-1], back[1:]) for m in dense(a, b)]
        decoder.append(nn.Linear(cfg.hidden, cfg.input_dim))  # linear output: log-mel values are unbounded
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.config.input_dim:
            raise ValueError(f"expected (batch, {self.config.input_dim}) vectors, got shape {tuple(x.shape)}")
        return self.decoder(self.encoder(x))


def reconstruction_errors(model: DCASEAutoencoder, logmel: torch.Tensor) -> torch.Tensor:
    """x − x̂ for every frame-context vector of every clip: (B, M, T) → (B, T', input_dim)."""
    vectors = frame_context_vectors(logmel, model.config.n_frames)
    batch, n_vectors, dim = vectors.shape
    return vectors - model(vectors.reshape(batch * n_vectors, dim)).view(batch, n_vectors, dim)


def mse_scores(errors: torch.Tensor) -> torch.Tensor:
    """Clip anomaly scores in MSE mode: mean squared reconstruction error, (B, T', F) → (B,)."""
    return errors.pow(2).mean(dim=(1, 2))


@dataclass
class MahalanobisModel:
    """Per-domain inverse covariances of residual frames: domain names and precisions (K, M, M)."""

    domains: list[str]
    precisions: torch.Tensor

    def to_dict(self) -> dict:
        """Plain dict of str lists and tensors (loadable with ``torch.load(weights_only=True)``)."""
        return {"domains": list(self.domains), "precisions": self.precisions}

    @classmethod
    def from_dict(cls, d: Mapping) -> "MahalanobisModel":
        if "precisions" not in d or "means" in d:
            raise ValueError("Mahalanobis statistics of an earlier version (per-vector Gaussians): retrain the AE")
        return cls(domains=list(d["domains"]), precisions=d["precisions"])


class ResidualCovariance:
    """Accumulates the per-domain scatter of residual frames batch by batch, as the baseline does."""

    def __init__(self, n_mels: int):
        self.n_mels = n_mels
        self.scatter: dict[str, torch.Tensor] = {}
        self.vectors: dict[str, int] = {}

    def add(self, residuals: torch.Tensor, domains: list[str]) -> None:
        """``residuals`` (B, n_frames·M) of one batch of vectors; ``domains`` the domain of each vector."""
        for d in sorted(set(domains)):
            sel = torch.tensor([x == d for x in domains])
            rows = residuals[sel].detach().double().reshape(-1, self.n_mels)
            rows = rows - rows.mean(dim=0)  # centred on the batch's own mean
            self.scatter[d] = self.scatter.get(d, 0) + rows.T @ rows
            self.vectors[d] = self.vectors.get(d, 0) + int(sel.sum())

    def finish(self, domains: tuple[str, ...] = ("source", "target")) -> MahalanobisModel:
        """Covariance = scatter / (vectors − 1); a domain without training vectors takes the source's."""
        if "source" not in self.scatter:
            raise ValueError("Mahalanobis: no source-domain training vectors")
        precisions = []
        for d in domains:
            key = d if d in self.scatter else "source"
            if self.vectors[key] < 2:
                raise ValueError(f"Mahalanobis: domain {key!r} needs at least 2 training vectors, got {self.vectors[key]}")
            precisions.append(torch.linalg.inv(self.scatter[key] / (self.vectors[key] - 1)))
        return MahalanobisModel(list(domains), torch.stack(precisions).float())


def mahalanobis_scores(errors: torch.Tensor, model: MahalanobisModel, per_domain: bool = False) -> torch.Tensor:
    """Clip anomaly scores in MAHALA mode: (B, T', n_frames·M) residuals → (B,) (or (B, K) with ``per_domain``).

    m = the mean of all of a clip's residual frames (M values); the score for domain k is mᵀ Σ_k⁻¹ m, and
    the clip's score the smallest over domains.
    """
    m_dim = model.precisions.shape[-1]
    if errors.dim() != 3 or errors.shape[-1] % m_dim:
        raise ValueError(f"errors must be (batch, vectors, n_frames·{m_dim}), got shape {tuple(errors.shape)}")
    m = errors.reshape(errors.shape[0], -1, m_dim).mean(dim=1).to(model.precisions)  # (B, M)
    dist = torch.einsum("bf,kfg,bg->bk", m, model.precisions, m)
    return dist if per_domain else dist.min(dim=1).values

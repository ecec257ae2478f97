"""The DCASE 2023/2025 Task 2 autoencoder baseline (the "Baseline (AE)" rows of Tables 2-3).

Each input vector is 5 consecutive log-mel frames concatenated (5 × 128 = 640 values); a dense autoencoder
(640 → 128 ×4 → 8 → 128 ×4 → 640, BatchNorm + ReLU after every hidden layer) reconstructs it. A clip's
anomaly score is either the mean squared reconstruction error of its vectors ("MSE" mode) or, in the
baseline's "MAHALA" mode, the Mahalanobis distance of the reconstruction-error vectors under per-domain
(source / target) Gaussians fitted on the training errors, taking the smaller of the two domains.
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
    """Per-domain Gaussians of reconstruction errors: names, means (K, F) and precision matrices (K, F, F)."""

    domains: list[str]
    means: torch.Tensor
    precisions: torch.Tensor

    def to_dict(self) -> dict:
        """Plain dict of str lists and tensors (loadable with ``torch.load(weights_only=True)``)."""
        return {"domains": list(self.domains), "means": self.means, "precisions": self.precisions}

    @classmethod
    def from_dict(cls, d: Mapping) -> "MahalanobisModel":
        return cls(domains=list(d["domains"]), means=d["means"], precisions=d["precisions"])


def fit_mahalanobis(errors_by_domain: Mapping[str, torch.Tensor], shrinkage: float = 1e-6) -> MahalanobisModel:
    """Fit mean and covariance of the training reconstruction errors separately for each domain.

    ``errors_by_domain`` maps a domain name (e.g. "source", "target") to its error vectors, (n, F) or
    (B, T', F). The covariance gets ``shrinkage`` × its mean variance added to the diagonal before inversion
    (in float64) so a domain with few clips still yields a usable precision matrix.
    """
    if not errors_by_domain:
        raise ValueError("errors_by_domain must name at least one domain")
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    names, means, precisions = [], [], []
    for name, errors in errors_by_domain.items():
        e = errors.detach().reshape(-1, errors.shape[-1]).double()
        if e.shape[0] < 2:
            raise ValueError(f"domain {name!r} needs at least 2 error vectors to fit a covariance, got {e.shape[0]}")
        mean = e.mean(dim=0)
        centered = e - mean
        cov = centered.T @ centered / (e.shape[0] - 1)
        cov += torch.eye(cov.shape[0], dtype=cov.dtype) * (shrinkage * cov.diagonal().mean() + 1e-12)
        names.append(str(name))
        means.append(mean)
        precisions.append(torch.linalg.inv(cov))
    dtype = next(iter(errors_by_domain.values())).dtype
    return MahalanobisModel(names, torch.stack(means).to(dtype), torch.stack(precisions).to(dtype))


def mahalanobis_scores(errors: torch.Tensor, model: MahalanobisModel, per_domain: bool = False) -> torch.Tensor:
    """Clip anomaly scores in MAHALA mode: (B, T', F) errors → (B,) (or (B, K) with ``per_domain``).

    For each domain k: the mean over the clip's vectors of the squared Mahalanobis distance
    (e − μ_k)ᵀ Σ_k⁻¹ (e − μ_k); the clip's score is the smallest over domains (the clip is judged by the
    domain it most resembles).
    """
    if errors.dim() != 3 or errors.shape[-1] != model.means.shape[-1]:
        raise ValueError(f"errors must be (batch, vectors, {model.means.shape[-1]}), got shape {tuple(errors.shape)}")
    means = model.means.to(errors)
    precisions = model.precisions.to(errors)
    centered = errors.unsqueeze(1) - means[None, :, None, :]  # (B, K, T', F)
    dist = (torch.einsum("bktf,kfg->bktg", centered, precisions) * centered).sum(-1).mean(dim=-1)  # (B, K)
    return dist if per_domain else dist.min(dim=1).values

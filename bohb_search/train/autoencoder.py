"""The DCASE autoencoder baseline, trained and scored through the stage-2 trainer interface."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from data.datasets import FinetuneData, to_tensor
from models import (
    AEConfig,
    DCASEAutoencoder,
    MahalanobisModel,
    fit_mahalanobis,
    frame_context_vectors,
    reconstruction_errors,
)

from ..scoring.scores import autoencoder_scores
from .base import AnomalyTrainer, batches
from .configs import FinetuneConfig


class AETrainer(AnomalyTrainer):
    """Trains the DCASE 2025 AE baseline on frame-context vectors of the normal training clips.

    Each epoch visits every clip of the balanced set once and reconstructs ``ae_vectors_per_clip``
    randomly placed 5-frame windows of it (all ~1,000 windows of every clip would be ~2.6 GB per
    machine in float32). Validation and scoring use every window of a clip. Uses ``lr``,
    ``weight_decay``, ``batch_size``, ``max_epochs``, ``patience`` and ``ae_score`` of the config.
    """

    kind = "ae"

    def __init__(self, cfg: FinetuneConfig, data: FinetuneData, device: str | torch.device = "auto",
                 ae_cfg: AEConfig | None = None):
        super().__init__(cfg, data, device)
        self.ae_cfg = ae_cfg or AEConfig(n_mels=data.feature_cfg.n_mels)
        self.ae = DCASEAutoencoder(self.ae_cfg).to(self.device)
        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.mahalanobis: MahalanobisModel | None = None

    def _train_epoch(self) -> dict:
        cfg = self.cfg
        self.ae.train()
        total, n = 0.0, 0
        for idx in batches(self.data.n_train, cfg.batch_size, self.generator):
            x = to_tensor(self.data.train_base[self.data.train_index[idx]], self.device).squeeze(1)
            vecs = frame_context_vectors(x, self.ae_cfg.n_frames)  # (B, V, 640)
            pick = torch.randint(0, vecs.shape[1], (len(idx), cfg.ae_vectors_per_clip), generator=self.generator)
            sample = torch.gather(vecs, 1, pick.to(self.device)[..., None].expand(-1, -1, vecs.shape[-1]))
            flat = sample.reshape(-1, vecs.shape[-1])
            loss = F.mse_loss(self.ae(flat), flat)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite AE loss at epoch {self.epoch + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(idx)
            n += len(idx)
        if self.cfg.ae_score == "mahalanobis":
            self.mahalanobis = self.fit_mahalanobis()
        return {"loss_total": total / max(n, 1)}

    @torch.no_grad()
    def errors(self, features: np.ndarray, batch_size: int = 16) -> torch.Tensor:
        """Per-clip mean reconstruction-error vector (N, 640) — the input of the Mahalanobis score."""
        self.ae.eval()
        out = []
        for i in range(0, len(features), batch_size):
            x = to_tensor(features[i : i + batch_size], self.device).squeeze(1)
            out.append(reconstruction_errors(self.ae, x).cpu())
        return torch.cat(out)

    def fit_mahalanobis(self) -> MahalanobisModel:
        rows, dom = self._unique_training_rows()
        err = self.errors(self.data.train_base[rows])
        by_domain = {name: err[dom == i] for name, i in (("source", 0), ("target", 1)) if (dom == i).sum() >= 2}
        return fit_mahalanobis(by_domain, shrinkage=1e-3)

    @torch.no_grad()
    def score(self, features: np.ndarray) -> np.ndarray:
        err = self.errors(features)
        if self.cfg.ae_score == "mahalanobis":
            self.mahalanobis = self.mahalanobis or self.fit_mahalanobis()
        return autoencoder_scores(err, self.cfg.ae_score, self.mahalanobis).numpy()

    def _model_state(self) -> dict:
        return {"ae": copy.deepcopy(self.ae.state_dict()),
                "mahalanobis": None if self.mahalanobis is None else self.mahalanobis.to_dict()}

    def _load_model_state(self, state: dict) -> None:
        self.ae.load_state_dict(state["ae"])
        m = state.get("mahalanobis")
        self.mahalanobis = None if m is None else MahalanobisModel.from_dict(m)

    def _extra_state(self) -> dict:
        return {"ae_config": self.ae_cfg.to_dict(), "optimizer": self.optimizer.state_dict()}

    def _load_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def export(self) -> dict:
        if self.cfg.ae_score == "mahalanobis" and self.mahalanobis is None:
            self.mahalanobis = self.fit_mahalanobis()
        return {
            "model_kind": "ae",
            "ae_config": self.ae_cfg.to_dict(),
            "ae": self.ae.state_dict(),
            "score": self.cfg.ae_score,
            "ae_stats": None if self.mahalanobis is None else self.mahalanobis.to_dict(),
            "finetune_config": self.cfg.to_dict(),
        }

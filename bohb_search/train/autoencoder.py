"""The DCASE autoencoder baseline, trained as the official code trains it, through the stage-2 trainer interface.

Recipe (nttcslab/dcase2023_task2_baseline_ae, branch 2025t2; :class:`~bohb_search.train.configs.AEBaselineConfig`):
every 5-frame vector of every normal training clip — all clips as they are, no domain balancing —
except a random 10 % held out and never trained on; each epoch one shuffled pass in batches of 256
vectors (a batch of one vector is skipped: BatchNorm); Adam lr 1e-3; 100 epochs; the last epoch's
weights are kept. Vectors are gathered from the cached log-mels batch by batch, never all materialised.
After training, the MAHALA covariances are accumulated over the training vectors in shuffled batches
of 256 (eval mode), per domain.

Differences from the official code, all deliberate: clips are padded/cropped to ``--seconds`` (the
official code reads each file's length, the same for every clip of a DCASE machine); the covariance is
inverted in float64 (float32 there); decision thresholds are fitted on per-clip training scores (the
official code fits them on per-batch losses, on another scale than the test scores for MAHALA); the
labelled validation part, when there is one, is scored every epoch for the history only.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from data.datasets import FinetuneData, to_tensor
from models import AEConfig, DCASEAutoencoder, MahalanobisModel, ResidualCovariance, reconstruction_errors

from ..scoring.scores import autoencoder_scores
from .base import AnomalyTrainer, batches, epoch_batches
from .configs import AEBaselineConfig

COVARIANCE_BATCH = 256  # vectors per batch when the MAHALA covariances are accumulated


class AETrainer(AnomalyTrainer):
    """The DCASE AE baseline: every training vector once per epoch, a fixed budget, the last epoch kept."""

    kind = "ae"
    select_best = False

    def __init__(self, cfg: AEBaselineConfig, data: FinetuneData, device: str | torch.device = "auto",
                 ae_cfg: AEConfig | None = None):
        super().__init__(cfg, data, device)
        self.ae_cfg = ae_cfg or AEConfig(n_mels=data.feature_cfg.n_mels, n_frames=cfg.n_frames)
        self.ae = DCASEAutoencoder(self.ae_cfg).to(self.device)
        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=cfg.lr)
        self.mahalanobis: MahalanobisModel | None = None
        self.features = data.train_base  # (N, M, T) float16: every unique normal training clip
        self.clip_domains = np.where(np.asarray(data.base_domain) == 1, "target", "source")
        self.vectors_per_clip = self.features.shape[-1] - cfg.n_frames + 1
        if self.vectors_per_clip < 1:
            raise ValueError(f"clips of {self.features.shape[-1]} frames are shorter than {cfg.n_frames} frames")
        n = len(self.features) * self.vectors_per_clip
        order = np.random.default_rng(cfg.seed).permutation(n)
        n_val = int(round(cfg.validation_split * n))
        self.train_vectors = np.sort(order[n_val:])  # ids: clip * vectors_per_clip + offset
        self.heldout_vectors = np.sort(order[:n_val])
        self.vectors_seen = np.zeros(n, dtype=np.int64)  # per vector id: how often it was trained on
        self._build_validation()

    def gather(self, ids: np.ndarray) -> torch.Tensor:
        """Frame-context vectors (B, n_frames·M) for vector ids, frame-major as the baseline builds them."""
        clip, offset = np.divmod(ids, self.vectors_per_clip)
        frames = offset[:, None] + np.arange(self.cfg.n_frames)
        x = self.features[clip[:, None], :, frames]  # (B, n_frames, M)
        return torch.from_numpy(x.reshape(len(ids), -1).astype(np.float32)).to(self.device)

    def batches_per_epoch(self) -> int:
        return epoch_batches(len(self.train_vectors), self.cfg.batch_size, self.cfg.min_steps_per_epoch)

    def _train_epoch(self) -> dict:
        cfg = self.cfg
        self.ae.train()
        n = len(self.train_vectors)
        n_batches = epoch_batches(n, cfg.batch_size, cfg.min_steps_per_epoch)
        total, steps = 0.0, 0
        for b, idx in enumerate(batches(n, cfg.batch_size, self.generator, n_batches)):
            if self.batch_limit is not None and b >= self.batch_limit:
                break
            if len(idx) <= 1:  # BatchNorm cannot normalise a batch of one (the official loader skips it too)
                continue
            ids = self.train_vectors[idx]
            x = self.gather(ids)
            loss = F.mse_loss(self.ae(x), x)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite AE loss at epoch {self.epoch + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            np.add.at(self.vectors_seen, ids, 1)
            total += loss.item()
            steps += 1
        self.mahalanobis = None  # the weights changed: the covariances are refitted when needed
        return {"loss_total": total / max(steps, 1), "optimizer_steps": steps}

    @torch.no_grad()
    def fit_mahalanobis(self) -> MahalanobisModel:
        """Per-domain covariance of the residual frames of the training vectors (eval mode, shuffled batches)."""
        self.ae.eval()
        acc = ResidualCovariance(self.ae_cfg.n_mels)
        order = np.random.default_rng(self.cfg.seed + 1).permutation(self.train_vectors)
        for start in range(0, len(order), COVARIANCE_BATCH):
            ids = order[start : start + COVARIANCE_BATCH]
            x = self.gather(ids)
            clip = ids // self.vectors_per_clip
            acc.add((x - self.ae(x)).cpu(), list(self.clip_domains[clip]))
        return acc.finish()

    def _stats_for(self, method: str) -> MahalanobisModel | None:
        if method == "mahalanobis" and self.mahalanobis is None:
            self.mahalanobis = self.fit_mahalanobis()
        return self.mahalanobis

    @torch.no_grad()
    def scores(self, features: np.ndarray, methods: tuple[str, ...], batch_size: int = 16) -> dict[str, np.ndarray]:
        """Clip scores by each method, computed a few clips at a time (residuals of all vectors of
        a thousand clips would take gigabytes)."""
        self.ae.eval()
        stats = {m: self._stats_for(m) for m in methods}
        out: dict[str, list] = {m: [] for m in methods}
        for i in range(0, len(features), batch_size):
            err = reconstruction_errors(self.ae, to_tensor(features[i : i + batch_size], self.device).squeeze(1)).cpu()
            for m in methods:
                out[m].append(autoencoder_scores(err, m, stats[m]).numpy())
        return {m: np.concatenate(v) if v else np.zeros(0, dtype=np.float32) for m, v in out.items()}

    def score(self, features: np.ndarray, machines=None) -> np.ndarray:
        return self.scores(features, (self.cfg.score,))[self.cfg.score]

    def _model_state(self) -> dict:
        return {"ae": copy.deepcopy(self.ae.state_dict())}

    def _load_model_state(self, state: dict) -> None:
        self.ae.load_state_dict(state["ae"])
        self.mahalanobis = None

    def _extra_state(self) -> dict:
        return {"ae_config": self.ae_cfg.to_dict(), "optimizer": self.optimizer.state_dict(),
                "vectors_seen": torch.from_numpy(self.vectors_seen)}

    def _load_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.vectors_seen = state["vectors_seen"].numpy().copy()

    def export(self) -> dict:
        """Weights, both scores' statistics and the training clips' scores in both modes (for thresholds)."""
        train_scores = self.scores(self.features, ("mse", "mahalanobis"))
        return {
            "model_kind": "ae",
            "ae_config": self.ae_cfg.to_dict(),
            "ae": self.ae.state_dict(),
            "score": self.cfg.score,
            "ae_stats": self._stats_for("mahalanobis").to_dict(),
            "ae_train_scores": {m: [float(v) for v in s] for m, s in train_scores.items()},
            "ae_train_machines": [str(m) for m in self.data.base_machine],
            "baseline_config": self.cfg.to_dict(),
        }

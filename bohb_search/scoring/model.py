"""A trained detector as users deploy it: checkpoint → log-mel → anomaly score (+ decision).

The checkpoint written by ``finetune`` / ``final-train`` is self-contained: feature config, encoder
config and weights, anomaly head, SVDD centre, the k-NN reference bank, and one decision threshold
per machine (gamma fit on training-clip scores). Loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.audio import AudioConfig, BadAudioError, fit_length, load_any_length
from data.features import FeatureConfig, LogMelExtractor
from models import (
    AEConfig,
    AnomalyHead,
    DCASEAutoencoder,
    EncoderConfig,
    MahalanobisModel,
    build_encoder,
    load_checkpoint,
    load_weights,
    reconstruction_errors,
)

from .scores import autoencoder_scores, embedding_scores

MODEL_KIND = "anomaly_model"


@dataclass
class ScoredFile:
    path: str
    score: float  # mean over windows of the training clip length
    max_window_score: float
    windows: int
    decision: int | None  # 1 = anomalous (score above the machine's threshold), None = no threshold


class AnomalyModel:
    """Scores log-mel clips with a fine-tuned encoder + head, or with the AE baseline."""

    def __init__(self, bundle: dict, device: str | torch.device = "cpu"):
        if bundle.get("kind") != MODEL_KIND:
            raise ValueError(f"not an anomaly-model checkpoint (kind={bundle.get('kind')!r})")
        self.bundle = bundle
        self.device = torch.device(device)
        self.model_kind: str = bundle["model_kind"]
        self.feature_cfg = FeatureConfig.from_dict(bundle["feature_config"])
        self.machines: list[str] = list(bundle["machines"])
        self.thresholds: dict[str, float] = dict(bundle.get("thresholds", {}))
        self.score_method: str = bundle.get("score", "cosine")
        if self.model_kind == "ae":
            self.ae = DCASEAutoencoder(AEConfig.from_dict(bundle["ae_config"]))
            load_weights(self.ae, bundle["ae"], "autoencoder weights")
            self.ae.to(self.device).eval()
            stats = bundle.get("ae_stats")
            self.mahalanobis = MahalanobisModel.from_dict(stats) if stats else None
        else:
            self.encoder_cfg = EncoderConfig.from_dict(bundle["encoder_config"])
            self.encoder = build_encoder(self.encoder_cfg)
            load_weights(self.encoder, bundle["encoder"], "encoder weights")
            self.encoder.to(self.device).eval()
            h = bundle["head_config"]
            self.head = AnomalyHead(self.encoder_cfg.dim, list(h["layers"]), h["emb_dim"], h["hidden"], h["dropout"])
            load_weights(self.head, bundle["head"], "anomaly-head weights")
            self.head.to(self.device).eval()
            self.center = bundle["center"].float()
            self.bank = {k: v.float() for k, v in bundle.get("knn_bank", {}).items()}
            self.knn_k = int(bundle.get("knn_k", 1))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "AnomalyModel":
        return cls(load_checkpoint(path), device)

    @torch.no_grad()
    def score_features(self, features: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, n_mels, T) log-mel (float16/32) → (N,) anomaly scores, higher = more anomalous."""
        out = []
        for i in range(0, len(features), batch_size):
            x = torch.from_numpy(np.asarray(features[i : i + batch_size], dtype=np.float32)).to(self.device)
            if self.model_kind != "ae":
                x = x[..., : self.encoder_cfg.n_frames]  # the tileable frame count the encoder was built for
            if self.model_kind == "ae":
                out.append(self._score_ae(x))
            else:
                o = self.encoder(x.unsqueeze(1))
                z = self.head(o.pooled, o.layers).float().cpu()
                out.append(embedding_scores(z, self.score_method, self.center, self.bank, self.knn_k))
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def _score_ae(self, x: torch.Tensor) -> torch.Tensor:
        return autoencoder_scores(reconstruction_errors(self.ae, x).cpu(), self.score_method, self.mahalanobis)

    # ---- recordings of any length ---------------------------------------------------------
    def score_files(self, paths: list[str | Path], machine: str | None = None, channel: int | str = 0,
                    on_bad_file: str = "fail") -> tuple[list[ScoredFile], list[tuple[str, str]]]:
        """Score WAV files of any length: cut into windows of the training clip length (hop = half a
        window; a shorter file is repeated up to one window), score each window, average."""
        audio = AudioConfig(**{**self.feature_cfg.audio.to_dict(), "channel": channel})
        extractor = LogMelExtractor(self.feature_cfg)
        win = audio.num_samples
        hop = max(1, win // 2)
        thr = self.thresholds.get(machine) if machine else (
            next(iter(self.thresholds.values())) if len(self.thresholds) == 1 else None)
        results, skipped = [], []
        for p in paths:
            try:
                wave = load_any_length(p, audio)
            except BadAudioError as err:
                if on_bad_file == "fail":
                    raise
                skipped.append((str(p), err.reason))
                continue
            if len(wave) < win:
                wave = fit_length(wave, win, audio.pad_mode)
            starts = list(range(0, len(wave) - win + 1, hop))
            if starts[-1] + win < len(wave):  # cover the tail too
                starts.append(len(wave) - win)
            windows = torch.from_numpy(np.stack([wave[s : s + win] for s in starts]))
            with torch.no_grad():
                feats = extractor(windows).numpy()
            s = self.score_features(feats)
            mean = float(np.mean(s))
            results.append(ScoredFile(str(p), mean, float(np.max(s)), len(starts),
                                      None if thr is None else int(mean > thr)))
        return results, skipped

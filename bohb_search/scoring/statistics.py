"""The statistics yardstick's score (``baseline --kind stats``): per-band statistics over time of the log-mel
(:mod:`models.statistics`), standardised per machine on its training clips, Euclidean k-NN over per-domain
banks. How the pooling is chosen is in :mod:`bohb_search.train.statistics`."""

from __future__ import annotations

import numpy as np
import torch

from models.statistics import band_statistics

from .banks import EmbeddingScorer
from .config import ScoreConfig, StatsBaselineConfig


def stats_embeddings(features: np.ndarray, pooling: str, twfr_r: float, batch_size: int = 64) -> torch.Tensor:
    """(N, n_mels, T) float16/32 log-mel → (N, k·n_mels) float32 band statistics."""
    out = [band_statistics(torch.from_numpy(np.asarray(features[i : i + batch_size], dtype=np.float32)), pooling, twfr_r)
           for i in range(0, len(features), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)


def fit_stats_scorer(z: torch.Tensor, domains, machine: str, cfg: StatsBaselineConfig) -> EmbeddingScorer:
    """The k-NN score of one machine's statistics: Euclidean after standardisation on its training clips."""
    return EmbeddingScorer(ScoreConfig(score="knn", knn_k=cfg.knn_k), euclidean=True).fit(z, domains, [machine] * len(z))

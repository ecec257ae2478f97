"""How embeddings become anomaly scores (torch-free, so the command line and the search spaces read it).

``FinetuneConfig`` inherits these fields, so a score is chosen, searched and recorded under the same
names everywhere (``--score knn --knn-k 3 --density-k 1``), and ``evaluate --score …`` re-scores a saved
model with another setting without retraining.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

SCORES = ("cosine", "knn")
EMBEDDINGS = ("head", "patch_stats")


@dataclass
class ScoreConfig:
    """An anomaly score of embeddings; every statistic it uses comes from the training clips only."""

    score: Literal["cosine", "knn"] = "cosine"  # 1 − cos to the centre (paper), or k-NN over separate source/target banks, min over banks
    knn_k: int = 1  # k-NN: neighbours averaged per bank
    source_bank: Literal["all", "kmeans"] = "all"  # k-NN: every source training clip, or k-means centres of them
    n_centres: int = 16  # k-NN with source_bank kmeans: centres per machine
    target_augment: Literal["none", "interpolate", "mix"] = "none"  # k-NN: enlarge the target bank by interpolating target embeddings, or mixing each with a near source one
    augment_ratio: float = 0.2  # target bank grown to this share of the source clip count (when target_augment is set)
    density_k: int = 0  # local density normalisation: distance / mean distance of the bank point to its K nearest other bank points; 0 = off
    standardise: bool = False  # per bank: standardise by the mean and std of the training clips' leave-one-out scores
    embedding: Literal["head", "patch_stats"] = "head"  # what the k-NN compares: the anomaly head's embedding (1 − cos), or the time statistics of the tokenizer's patch projection (Euclidean after per-machine standardisation on the training clips); the cosine score always uses the head

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.source_bank not in ("all", "kmeans"):
            raise ValueError(f"source_bank must be 'all' or 'kmeans', got {self.source_bank!r}")
        if self.target_augment not in ("none", "interpolate", "mix"):
            raise ValueError(f"target_augment must be 'none', 'interpolate' or 'mix', got {self.target_augment!r}")
        for name, low in (("knn_k", 1), ("n_centres", 1), ("density_k", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.augment_ratio, (int, float)) and 0 < self.augment_ratio <= 10):
            raise ValueError(f"augment_ratio must be in (0, 10], got {self.augment_ratio!r}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")
        if self.score == "cosine":
            self.embedding = "head"  # the cosine score is the head embedding's distance to its centre, by definition
        if not isinstance(self.standardise, bool):
            raise ValueError(f"standardise must be true or false, got {self.standardise!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, cfg) -> "ScoreConfig":
        """The score settings of any config that carries them (a FinetuneConfig, a dict)."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        defaults = cls()
        return cls(**{f.name: get(f.name, getattr(defaults, f.name)) for f in fields(cls)})

    @property
    def label(self) -> str:
        """A short name for tables: ``cosine``, ``knn``, ``knn-k3-kmeans16-interp-dens1-std``,
        ``patchstats-knn`` …"""
        if self.score == "cosine":
            return "cosine"
        parts = ["patchstats-knn" if self.embedding == "patch_stats" else "knn"]
        if self.knn_k != 1:
            parts.append(f"k{self.knn_k}")
        if self.source_bank == "kmeans":
            parts.append(f"kmeans{self.n_centres}")
        if self.target_augment != "none":
            parts.append({"interpolate": "interp", "mix": "mix"}[self.target_augment])
        if self.density_k:
            parts.append(f"dens{self.density_k}")
        if self.standardise:
            parts.append("std")
        return "-".join(parts)


@dataclass(frozen=True)
class DecisionConfig:
    """How a model decides normal / anomalous: the DCASE baseline's gamma fit of the training clips' scores."""

    threshold_percentile: float = 0.9  # decision threshold: percentile in (0, 1) of a gamma distribution fitted to the training clips' scores (0.9, as the DCASE baseline)

    def __post_init__(self):
        v = self.threshold_percentile
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"threshold_percentile must be in (0, 1) (0.9 = the DCASE baseline's 90th percentile), "
                             f"got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


STATS_POOLINGS = ("auto", "meanstd", "max", "meanstd_max", "twfr")  # see models.statistics


@dataclass
class StatsBaselineConfig:
    """The no-training statistics yardstick (``baseline --kind stats``): every clip becomes statistics over
    time of its log-mel bands (``models.statistics``), standardised per machine on its training clips and
    scored by the Euclidean distance to the nearest training clip of each domain (min over the domains)."""

    pooling: Literal["auto", "meanstd", "max", "meanstd_max", "twfr"] = "auto"  # per band over time: meanstd | max | meanstd_max | twfr (GWRP with decay twfr_r, TWFR-GMM) | auto: per machine, the best of the four on the validation half of the labelled test split (meanstd_max without labels)
    twfr_r: float = 0.9  # twfr: decay r of the ranked frames' weights, in [0, 1]: 1 = mean, 0 = max
    knn_k: int = 1  # neighbours averaged per domain bank

    def __post_init__(self):
        for name, kind in (("pooling", str), ("twfr_r", (int, float)), ("knn_k", int)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(f"baseline {name}: invalid value {value!r}")
        if self.pooling not in STATS_POOLINGS:
            raise ValueError(f"baseline pooling must be one of {', '.join(STATS_POOLINGS)}, got {self.pooling!r}")
        if not 0.0 <= self.twfr_r <= 1.0:
            raise ValueError(f"baseline twfr_r must be in [0, 1], got {self.twfr_r!r}")
        if self.knn_k < 1:
            raise ValueError(f"baseline knn_k must be >= 1, got {self.knn_k!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StatsBaselineConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown baseline field(s): {', '.join(unknown)}")
        return cls(**d)

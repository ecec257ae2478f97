"""Training and validation tensors for both stages, assembled from the manifest and the feature cache.

Features are read from the on-disk cache (computed there once by ``data.features``); these classes
only index into one float16 array, so the balanced set's repeated target clips cost no memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

from .balance import balanced_training_set
from .features import FeatureConfig, extract_features
from .manifest import ManifestError, read_manifest

DOMAIN_IDS = {"source": 0, "target": 1}


class DataError(ValueError):
    """Data that cannot be trained on (no clips for a machine, no test labels, …); one line."""


@dataclass
class FeatureTable:
    """Manifest rows with their log-mel features (row i of ``features`` ↔ row i of ``manifest``)."""

    manifest: pd.DataFrame
    features: np.ndarray  # (N, n_mels, n_frames) float16
    feature_cfg: FeatureConfig
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def rows(self, mask: np.ndarray | pd.Series) -> "FeatureTable":
        mask = np.asarray(mask)
        idx = np.flatnonzero(mask) if mask.dtype == bool else mask
        return FeatureTable(self.manifest.iloc[idx].reset_index(drop=True), self.features[idx], self.feature_cfg)


def read_manifests(roots: Sequence[str | Path]) -> pd.DataFrame:
    frames = []
    for root in roots:
        try:
            df = read_manifest(root)
        except ManifestError as err:
            raise DataError(str(err)) from None
        if df.empty:
            raise DataError(f"{root}: no DCASE clips found (expected <machine>/train|test/*.wav)")
        frames.append(df.assign(root=str(root)))
    return pd.concat(frames, ignore_index=True)


def load_feature_table(
    manifest: pd.DataFrame,
    feature_cfg: FeatureConfig,
    cache_dir: str | Path | None = None,
    on_bad_file: Literal["fail", "skip"] = "fail",
    progress: bool = True,
) -> FeatureTable:
    """Features for every manifest row (from the cache where present); skipped bad files are dropped."""
    res = extract_features(manifest["path"].tolist(), feature_cfg, cache_dir=cache_dir,
                           on_bad_file=on_bad_file, progress=progress)
    kept = manifest.iloc[res.index].reset_index(drop=True)
    return FeatureTable(kept, res.features, feature_cfg, res.skipped)


def feature_stats(features: np.ndarray, max_clips: int = 512) -> tuple[float, float]:
    """Global mean/std of log-mel values (dB) over up to ``max_clips`` clips, for input normalisation."""
    sub = features[:: max(1, len(features) // max_clips)].astype(np.float32)
    return float(sub.mean()), float(sub.std() + 1e-6)


# ------------------------------------------------------------------------------------------------
# Stage 1


@dataclass
class PretrainData:
    """Normal training clips only (never test audio), split into train/validation, with class labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: list[str]


def pretrain_labels(manifest: pd.DataFrame, target: Literal["machine", "machine_section_attr"]) -> pd.Series:
    if target == "machine":
        return manifest["machine"].astype(str)
    if target == "machine_section_attr":
        attrs = manifest["attributes"].fillna("").astype(str)
        return manifest["machine"].astype(str) + "/" + manifest["section"].astype(str) + "/" + attrs
    raise ValueError(f"pretrain target must be 'machine' or 'machine_section_attr', got {target!r}")


def make_pretrain_data(table: FeatureTable, target: str = "machine", val_fraction: float = 0.1,
                       seed: int = 0) -> PretrainData:
    m = table.manifest
    mask = ((m["split"] == "train") & (m["label"] == "normal")).to_numpy()
    if not mask.any():
        raise DataError("pretraining needs normal training clips (split 'train', label 'normal'); none found")
    sub = table.rows(mask)
    labels = pretrain_labels(sub.manifest, target)
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), dtype=bool)
    for c in range(len(classes)):  # stratified hold-out: every class is validated
        members = np.flatnonzero(y == c)
        n_val = int(round(val_fraction * len(members)))
        if len(members) > 1 and n_val == 0 and val_fraction > 0:
            n_val = 1
        val[rng.permutation(members)[:n_val]] = True
    return PretrainData(sub.features[~val], y[~val], sub.features[val], y[val], classes)


# ------------------------------------------------------------------------------------------------
# Stage 2


@dataclass
class FinetuneData:
    """Everything one fine-tuning run needs, as arrays.

    ``train_index`` indexes ``train_base`` (the domain-balanced set repeats target clips);
    validation is the labelled dev test split when it exists (DCASE practice), otherwise held-out
    normals against held-out pseudo outliers (filled in by the trainer, which owns the perturbations).
    """

    machines: list[str]
    feature_cfg: FeatureConfig
    train_base: np.ndarray  # (N_clips, F, T) float16: unique normal training clips
    train_index: np.ndarray  # (N_balanced,) rows of train_base
    train_domain: np.ndarray  # (N_balanced,) 0 source / 1 target
    outlier_pool: np.ndarray | None  # (P, F, T) normals of OTHER machine types (pseudo outliers, kind a)
    val_x: np.ndarray | None
    val_y: np.ndarray | None  # 0 normal / 1 anomaly
    val_domain: np.ndarray | None
    val_source: str  # "dev test split (labelled)" or "held-out normals vs pseudo outliers"
    heldout_normals: np.ndarray | None = None
    test_table: FeatureTable | None = None  # test clips of these machines (for evaluation and submission)
    train_table: FeatureTable | None = None  # the unique training clips (for the gamma threshold, kNN bank)

    @property
    def n_train(self) -> int:
        return len(self.train_index)


def make_finetune_data(
    table: FeatureTable,
    machines: Sequence[str],
    seed: int = 0,
    outlier_pool_size: int = 512,
    heldout_fraction: float = 0.1,
    validation: Literal["auto", "test", "heldout"] = "auto",
) -> FinetuneData:
    """Assemble fine-tuning data for one machine (machine-specific) or several (generalized)."""
    m = table.manifest
    machines = list(machines)
    missing = sorted(set(machines) - set(m["machine"]))
    if missing:
        raise DataError(f"--machine: no clips for {', '.join(missing)} (found: {', '.join(sorted(m['machine'].unique()))})")
    is_train_normal = (m["split"] == "train") & (m["label"] == "normal")
    mine = m["machine"].isin(machines)
    train_rows = np.flatnonzero((is_train_normal & mine).to_numpy())
    if len(train_rows) == 0:
        raise DataError(f"no normal training clips for {', '.join(machines)}")
    train_table = table.rows(train_rows)
    balanced = balanced_training_set(train_table.manifest, machines, seed=seed)
    train_domain = balanced["domain"].map(DOMAIN_IDS).fillna(0).astype(np.int64).to_numpy()
    train_index = balanced["source_row"].to_numpy()

    # pseudo outliers (a): normals of other machine types. For the generalized model every machine
    # is "normal", so it relies on perturbations only.
    rng = np.random.default_rng(seed)
    others = np.flatnonzero((is_train_normal & ~mine).to_numpy())
    pool = None
    if len(others):
        pick = rng.choice(others, size=min(outlier_pool_size, len(others)), replace=False)
        pool = table.features[np.sort(pick)]

    test_rows = np.flatnonzero((mine & (m["split"] == "test")).to_numpy())
    test_table = table.rows(test_rows) if len(test_rows) else None
    labelled = None
    if test_table is not None:
        tm = test_table.manifest
        ok = tm["label"].isin(["normal", "anomaly"]) & tm["domain"].isin(["source", "target"])
        if ok.any() and tm.loc[ok, "label"].nunique() == 2:
            labelled = test_table.rows(ok.to_numpy())
    if validation == "test" and labelled is None:
        raise DataError(f"validation 'test' needs a labelled test split for {', '.join(machines)}")
    if labelled is not None and validation in ("auto", "test"):
        lm = labelled.manifest
        return FinetuneData(
            machines, table.feature_cfg, train_table.features, train_index, train_domain, pool,
            val_x=labelled.features, val_y=(lm["label"] == "anomaly").astype(np.int64).to_numpy(),
            val_domain=lm["domain"].map(DOMAIN_IDS).astype(np.int64).to_numpy(),
            val_source="dev test split (labelled)", test_table=test_table, train_table=train_table,
        )
    # no labels: hold out a fraction of the unique normal clips (never trained on)
    n = len(train_table.features)
    n_hold = max(1, int(round(heldout_fraction * n))) if n > 1 else 0
    hold = np.zeros(n, dtype=bool)
    hold[rng.permutation(n)[:n_hold]] = True
    keep = ~hold[train_index]
    return FinetuneData(
        machines, table.feature_cfg, train_table.features, train_index[keep], train_domain[keep], pool,
        val_x=None, val_y=None, val_domain=None,
        val_source="held-out normals vs pseudo outliers",
        heldout_normals=train_table.features[hold], test_table=test_table, train_table=train_table,
    )


def to_tensor(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """float16 cache rows → float32 tensor (B, 1, F, T) on ``device``."""
    return torch.from_numpy(np.asarray(x, dtype=np.float32)).unsqueeze(1).to(device)

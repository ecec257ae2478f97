"""Training and validation tensors for both stages, assembled from the manifest and the feature cache.

Features are read from the on-disk cache (computed there once by ``data.features``); these classes
only index into one float16 array, so the balanced set's repeated target clips cost no memory.
"""

from __future__ import annotations

import hashlib
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


def check_data_roots(roots: Sequence[str | Path], what: str = "data root") -> None:
    """Refuse a data root given twice, or one inside another (their clips would be read twice: a training
    set counted double, test clips scored twice), naming ``what`` (``--data``, or a file and its key)."""
    if isinstance(roots, (str, Path)):
        raise DataError(f"{what}: expected a list of data-root folders, got the single value {str(roots)!r}")
    seen: dict[Path, str] = {}
    for root in roots:
        resolved = Path(root).resolve()
        for other, given in seen.items():
            if resolved == other:
                also = "" if str(root) == given else f" (also as {given})"
                raise DataError(f"{what} {root}: the same data root given twice{also}; give each data root once")
            if other in resolved.parents or resolved in other.parents:
                inner, outer = (root, given) if other in resolved.parents else (given, root)
                raise DataError(f"{what} {inner}: lies inside the data root {outer}, so its clips would be read "
                                f"twice; give one of them")
        seen[resolved] = str(root)


def read_manifests(roots: Sequence[str | Path]) -> pd.DataFrame:
    check_data_roots(roots)
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


VALIDATION_SHARE = 0.5  # of the labelled test split: the rest is the report part


def split_test_clips(manifest: pd.DataFrame) -> np.ndarray:
    """``"validation"`` or ``"report"`` for every test row (``"train"`` for training rows): the labelled
    test split cut once, the same way on every machine and every run.

    Stratified by machine × section × domain × label; within a stratum the clips are ordered by a hash
    of their file name and the first half (rounded down) validates, the rest is reported on. No seed,
    no order dependence, and no dependence on what else is in ``manifest``: training rows (``split ==
    "train"``) are never counted in a stratum (a training normal shares machine × section × domain × label
    with the test normals and would move the cut), so a clip is on the same side in training, search,
    ``evaluate`` and every table, whether the caller passes the test rows or the whole manifest.
    """
    parts = np.full(len(manifest), "report", dtype=object)
    keys = manifest[["machine", "section", "domain", "label"]].astype(str).agg("|".join, axis=1).to_numpy()
    digest = manifest["file"].astype(str).map(lambda f: hashlib.sha1(f.encode()).hexdigest()).to_numpy()
    training = (manifest["split"] == "train").to_numpy() if "split" in manifest else np.zeros(len(manifest), bool)
    parts[training] = "train"
    for key in np.unique(keys[~training]):
        rows = np.flatnonzero((keys == key) & ~training)
        rows = rows[np.argsort(digest[rows], kind="stable")]
        parts[rows[: int(len(rows) * VALIDATION_SHARE)]] = "validation"
    return parts


NO_ATTRIBUTES = "-"  # the attribute part of a class key for clips whose names carry no attributes


def attribute_string(row_attributes: str, attrs: dict | None) -> str:
    """The attribute part of a class key: the file name's attributes, else those of ``attributes_00.csv``,
    else ``-`` (DCASE 2020/2021 names, ``noAttribute`` machines of DCASE 2024/2025)."""
    text = "" if row_attributes is None or row_attributes != row_attributes else str(row_attributes)
    if text and text != "noAttribute":
        return text
    if isinstance(attrs, dict) and attrs:
        return "_".join(f"{k}_{v}" for k, v in sorted(attrs.items()))
    return NO_ATTRIBUTES


def class_keys(manifest: pd.DataFrame) -> np.ndarray:
    """``machine|section|attributes|domain`` per clip: what is known about a normal clip, the classes of the
    margin objective (the domain stays part of the class). Clips without attributes get ``-``; the
    trainer may split those into pseudo classes."""
    n = len(manifest)
    raw = manifest["attributes"] if "attributes" in manifest else pd.Series([""] * n, index=manifest.index)
    attrs = manifest["attrs"] if "attrs" in manifest else pd.Series([None] * n, index=manifest.index)
    parts = zip(manifest["machine"].astype(str), manifest["section"].astype(str),
                (attribute_string(r, a) for r, a in zip(raw, attrs)), manifest["domain"].astype(str))
    return np.array(["|".join(p) for p in parts], dtype=object)


def labelled_mask(manifest: pd.DataFrame) -> np.ndarray:
    """Rows with a known label and domain (what metrics can be computed on)."""
    return (manifest["label"].isin(["normal", "anomaly"]) & manifest["domain"].isin(["source", "target"])).to_numpy()


@dataclass
class FinetuneData:
    """Everything one fine-tuning run needs, as arrays.

    ``train_index`` indexes ``train_base`` (the domain-balanced set repeats target clips). Model
    selection (``selection``):

    * ``"validation part"``: the labelled dev test split exists; its validation half (see
      :func:`split_test_clips`) selects, the report half is left for the tables;
    * ``"whole test split"``: as asked (``select_on_all``), the clips that select are also reported on;
    * ``"held-out normals"``: no labels; held-out normal training clips of each domain against pseudo
      outliers made from them (made by the trainer, which owns the perturbations);
    * ``"fixed budget"``: too few held-out normals to select on; every epoch is trained, the last kept.
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
    selection: str  # "validation part", "whole test split", "held-out normals" or "fixed budget"
    base_domain: np.ndarray | None = None  # (N_clips,) 0/1 domain of every row of train_base
    base_machine: np.ndarray | None = None  # (N_clips,) machine of every row of train_base
    base_key: np.ndarray | None = None  # (N_clips,) class key (machine|section|attributes|domain) of every row
    pool_key: np.ndarray | None = None  # (P,) class key of every clip of outlier_pool
    val_machine: np.ndarray | None = None  # machine of each validation clip
    val_section: np.ndarray | None = None
    heldout_normals: np.ndarray | None = None
    heldout_domain: np.ndarray | None = None  # 0/1 per held-out normal
    heldout_machine: np.ndarray | None = None
    test_table: FeatureTable | None = None  # test clips of these machines (for evaluation and submission)
    train_table: FeatureTable | None = None  # the unique training clips (threshold, score banks)
    note: str = ""  # one line on how the model is selected, for reports

    def __post_init__(self):
        n = len(self.train_base)
        if self.base_domain is None:  # from the balanced set's rows (every clip appears there)
            self.base_domain = np.zeros(n, dtype=np.int64)
            self.base_domain[self.train_index] = self.train_domain
        if self.base_machine is None:
            self.base_machine = np.full(n, self.machines[0], dtype=object)

    @property
    def n_train(self) -> int:
        return len(self.train_index)

    @property
    def early_stopping(self) -> bool:
        return self.selection != "fixed budget"

    @property
    def val_source(self) -> str:
        return self.note or self.selection


def make_finetune_data(
    table: FeatureTable,
    machines: Sequence[str],
    seed: int = 0,
    outlier_pool_size: int = 512,
    heldout_fraction: float = 0.1,
    heldout_floor: int = 16,
    validation: Literal["auto", "test", "heldout"] = "auto",
    select_on_all: bool = False,
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
    pool = pool_key = None
    if len(others):
        pick = np.sort(rng.choice(others, size=min(outlier_pool_size, len(others)), replace=False))
        pool = table.features[pick]
        pool_key = class_keys(m.iloc[pick])

    test_rows = np.flatnonzero((mine & (m["split"] == "test")).to_numpy())
    test_table = table.rows(test_rows) if len(test_rows) else None
    labelled = None
    if test_table is not None:
        tm = test_table.manifest
        ok = labelled_mask(tm)
        if ok.any() and tm.loc[ok, "label"].nunique() == 2:
            labelled = test_table.rows(ok)
    if validation == "test" and labelled is None:
        raise DataError(f"validation 'test' needs a labelled test split for {', '.join(machines)}")
    common = dict(test_table=test_table, train_table=train_table,
                  base_domain=train_table.manifest["domain"].map(DOMAIN_IDS).fillna(0).astype(np.int64).to_numpy(),
                  base_machine=train_table.manifest["machine"].astype(str).to_numpy(),
                  base_key=class_keys(train_table.manifest), pool_key=pool_key)
    why_not_labels, labelled_split = "no labelled test split", None
    if labelled is not None and validation in ("auto", "test") and not select_on_all:
        part = split_test_clips(labelled.manifest) == "validation"
        if labelled.manifest.loc[part, "label"].nunique() < 2:
            # a split of a handful of clips: its validation half holds no normal/anomaly pair to rank
            why_not_labels = (f"the validation half of the labelled test split ({int(part.sum())} of "
                              f"{len(part)} clips) lacks normals or anomalies")
            if validation == "test":
                raise DataError(f"validation 'test': {why_not_labels} for {', '.join(machines)}; "
                                f"use --select-on-all or more test clips")
            labelled_split, labelled = labelled, None
        else:
            labelled = labelled.rows(part)
    if labelled is not None and validation in ("auto", "test"):
        lm = labelled.manifest
        selection = "whole test split" if select_on_all else "validation part"
        return FinetuneData(
            machines, table.feature_cfg, train_table.features, train_index, train_domain, pool,
            val_x=labelled.features, val_y=(lm["label"] == "anomaly").astype(np.int64).to_numpy(),
            val_domain=lm["domain"].map(DOMAIN_IDS).astype(np.int64).to_numpy(), selection=selection,
            val_machine=lm["machine"].astype(str).to_numpy(), val_section=lm["section"].astype(str).to_numpy(),
            note=(f"{selection} of the labelled test split ({len(lm)} clips)" if not select_on_all else
                  f"whole labelled test split ({len(lm)} clips) — tables report on the same clips"),
            **common)
    # no labels: hold out normal training clips of every machine and domain (never trained on)
    tm = train_table.manifest
    hold = np.zeros(len(tm), dtype=bool)
    for _, rows in tm.groupby(["machine", "domain"]).indices.items():
        n_hold = int(round(heldout_fraction * len(rows)))
        if len(rows) >= 3:
            n_hold = max(1, n_hold)
        hold[rng.permutation(rows)[:n_hold]] = True
    n_held = int(hold.sum())
    if n_held < heldout_floor:
        return FinetuneData(
            machines, table.feature_cfg, train_table.features, train_index, train_domain, pool,
            val_x=None, val_y=None, val_domain=None, selection="fixed budget",
            note=(f"fixed budget, no early stopping: {why_not_labels} and only {n_held} normal clips could be "
                  f"held out (fewer than {heldout_floor})"), **common)
    keep = ~hold[train_index]
    held = tm[hold]
    return FinetuneData(
        machines, table.feature_cfg, train_table.features, train_index[keep], train_domain[keep], pool,
        val_x=None, val_y=None, val_domain=None, selection="held-out normals",
        heldout_normals=train_table.features[hold],
        heldout_domain=held["domain"].map(DOMAIN_IDS).fillna(0).astype(np.int64).to_numpy(),
        heldout_machine=held["machine"].astype(str).to_numpy(),
        note=f"{n_held} held-out normal training clips ({', '.join(f'{d} {n}' for d, n in held['domain'].value_counts().items())}) against pseudo outliers"
             + ("" if labelled_split is None else f" ({why_not_labels})"),
        **common)


def to_tensor(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """float16 cache rows → float32 tensor (B, 1, F, T) on ``device``."""
    return torch.from_numpy(np.asarray(x, dtype=np.float32)).unsqueeze(1).to(device)

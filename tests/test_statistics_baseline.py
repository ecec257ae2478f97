"""The real-data benchmark's first-shot split and the no-training statistics yardstick (``baseline --kind stats``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from data.config import AudioConfig, FeatureConfig, RunOptions
from data.firstshot import FirstShotError, first_shot_training_mask, write_first_shot_tree
from data.manifest import read_manifest
from models.statistics import band_statistics, gwrp, time_statistics
from tests.conftest import REPO, run_cli

VALVE = REPO.parent / "shared" / "data" / "dcase2023_valve"


def _valve_like_manifest() -> pd.DataFrame:
    rows = []
    for domain, patterns in (("source", ("pat_00", "pat_01")), ("target", ("pat_02", "pat_03"))):
        for label in ("normal", "anomaly"):
            for i in range(50):
                pat = patterns[i % 2]
                rows.append({"machine": "valve", "section": 0, "domain": domain, "split": "test", "label": label,
                             "attributes": pat, "file": f"section_00_{domain}_test_{label}_{i:04d}_{pat}.wav"})
    return pd.DataFrame(rows)


def test_first_shot_split_is_deterministic_disjoint_and_covers_every_pattern():
    m = _valve_like_manifest()
    chosen = set(m.loc[first_shot_training_mask(m, 30, 5), "file"])
    shuffled = m.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert set(shuffled.loc[first_shot_training_mask(shuffled, 30, 5), "file"]) == chosen  # no order dependence
    picked = m[m["file"].isin(chosen)]
    assert (picked["label"] == "normal").all()
    assert picked.groupby("domain").size().to_dict() == {"source": 30, "target": 5}
    assert picked.groupby("attributes").size().to_dict() == {"pat_00": 15, "pat_01": 15, "pat_02": 3, "pat_03": 2}
    with pytest.raises(FirstShotError, match="cannot take 50"):
        first_shot_training_mask(m, 50, 5)


def test_the_valve_benchmark_split_is_fixed_and_disjoint(tmp_path):
    if not VALVE.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{VALVE} missing in CI")
        pytest.skip(f"{VALVE} not present")
    out = tmp_path / "valve-first-shot"
    table = write_first_shot_tree(VALVE, out)
    train = table[table["split"] == "train"]
    # the documented split (README, BENCHMARKS "detection"): pinned, so it can never move under a benchmark
    digest = hashlib.sha1("\n".join(sorted(Path(p).name for p in train["original"])).encode()).hexdigest()
    assert digest == PINNED_VALVE_SPLIT, digest
    assert len(train) == 35 and not set(train["original"]) & set(table.loc[table["split"] == "test", "original"])
    manifest = read_manifest(out)
    counts = manifest.groupby(["split", "domain", "label"]).size().to_dict()
    assert counts == {("train", "source", "normal"): 30, ("train", "target", "normal"): 5,
                      ("test", "source", "normal"): 20, ("test", "target", "normal"): 45,
                      ("test", "source", "anomaly"): 50, ("test", "target", "anomaly"): 50}
    assert write_first_shot_tree(VALVE, out).equals(table)  # the same split again: reused
    with pytest.raises(FirstShotError, match="holds something else"):
        write_first_shot_tree(VALVE, out, 20, 5)


PINNED_VALVE_SPLIT = "6671e2ba719ce0d847b98b0824501bdac0d1da41"


def test_time_pooling_limits():
    x = torch.randn(3, 8, 50)
    assert torch.allclose(gwrp(x, 1.0), x.mean(-1), atol=1e-6)
    assert torch.allclose(gwrp(x, 0.0), x.amax(-1))
    mid = gwrp(x, 0.9)
    assert (mid <= x.amax(-1) + 1e-6).all() and (mid >= x.mean(-1) - 1e-6).all()
    assert time_statistics(x, "meanstd_max").shape == (3, 8, 3)
    stats = band_statistics(x, "meanstd")
    assert torch.allclose(stats[:, :8], x.mean(-1)) and torch.allclose(stats[:, 8:], x.std(-1, unbiased=False))


def _clip(rng: np.random.Generator, click: bool, sr: int = 16_000, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    wave = 0.1 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(len(t))
    if click:  # about 2 log-mel frames (hop 156 samples) of broadband knock
        start = int(rng.integers(sr // 4, len(t) - sr // 4))
        wave[start : start + 300] += 0.8 * rng.standard_normal(300)
    return wave.astype(np.float32)


def _write_dataset(root: Path, rng: np.random.Generator) -> None:
    def write(split, domain, label, i, click):
        path = root / "pump" / split / f"section_00_{domain}_{split}_{label}_{i:04d}_a_1.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _clip(rng, click), 16_000, subtype="FLOAT")

    for domain, n in (("source", 12), ("target", 4)):
        for i in range(n):
            write("train", domain, "normal", i, False)
        for i in range(6):
            write("test", domain, "normal", i, False)
            write("test", domain, "anomaly", i, True)


def test_stats_yardstick_ranks_a_click_above_normals_and_is_fitted_on_training_clips_only(tmp_path):
    from bohb_search.scoring.model import AnomalyModel
    from bohb_search.scoring.config import StatsBaselineConfig
    from bohb_search.train.runs import run_stats_baseline
    from data.datasets import load_feature_table

    root = tmp_path / "data"
    _write_dataset(root, np.random.default_rng(0))
    features = FeatureConfig(audio=AudioConfig(seconds=2.0))
    opts = RunOptions(cache_dir=tmp_path / "cache", quiet=True)
    path = run_stats_baseline(StatsBaselineConfig(), [root], tmp_path / "stats", ["pump"], feature_cfg=features, opts=opts)
    model = AnomalyModel.load(path)
    fitted = model.bundle["stats"]["pump"]
    assert fitted["selection"].startswith("chosen on validation part")
    assert set(fitted["validation_scores"]) == {"meanstd", "meanstd_max", "max", "twfr"}
    manifest = read_manifest(root)
    table = load_feature_table(manifest, features, cache_dir=tmp_path / "cache", progress=False)
    m = table.manifest
    train = (m["split"] == "train").to_numpy()
    # the stored statistics are exactly those of the training clips, in the same order as their domains
    expect = band_statistics(torch.from_numpy(table.features[train].astype(np.float32)), fitted["pooling"],
                             fitted["twfr_r"])
    got = fitted["train_embeddings"]
    assert got.shape == expect.shape and len(fitted["train_domains"]) == int(train.sum())
    assert torch.allclose(torch.sort(got, 0).values, torch.sort(expect, 0).values, atol=1e-4)
    test = ~train
    scores = model.score_features(table.features[test], "pump")
    anomalous = (m.loc[test, "label"] == "anomaly").to_numpy()
    assert scores[anomalous].min() > scores[~anomalous].max()
    # clips are scored one by one: a clip's score does not depend on what is scored with it
    one = model.score_features(table.features[test][:1], "pump")
    assert one[0] == pytest.approx(scores[0], rel=1e-5)


def test_baseline_kind_stats_refuses_the_ae_settings(tmp_path):
    res = run_cli("baseline", "--kind", "stats", "--data", str(tmp_path), "--machine", "pump", "--out",
                  str(tmp_path / "o"), "--lr", "0.1")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: --lr is a setting of the other baseline, not of --kind stats"]
    assert not (tmp_path / "o").exists()

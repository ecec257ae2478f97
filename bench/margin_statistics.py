"""Does classifying what is known about the normal clips keep what the anomalies change? An angular-margin
classifier trained on the representation that detects best here — the pre-trained tokenizer's patch
statistics — scored beside those statistics themselves, on the detection benchmark's data.

    .venv/bin/python -m bench.margin_statistics --data results/bench/det/data --seeds 0 1 2

Per seed: the patch statistics of the seed's pre-trained encoder (``bench.detection`` made it; every 16
log-mel frames, as the default score) of every clip, standardised per machine with its training clips. A
linear map to 128 dimensions is trained with the margin objective's loss (:class:`SubClusterAdaCos`, 16
centres per class) on the classes ``machine|section|attributes|domain`` of the training clips of all machines
(:func:`class_keys`), with the objective's class weights (power 0.5) and mixup (probability 0.5, labels
mixed), for ``--epochs`` epochs; no test clip and no score enters training. Rows (report half only): the
statistics scored by the default k-NN (``patchstats-knn-std``), the classifier's embedding scored by cosine
k-NN with and without per-bank standardisation, and their score-level ensemble (each standardised on its own
leave-one-out training scores, then averaged: what ``evaluate --model A --model B`` does). This isolates the
classification *task* from the encoder: if the task kept the anomalies, the embedding would score at least
as well as its input. Seconds per seed. Writes the "margin-statistics" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench._report import machine_line, update_section
from bench.detection import evaluate_part, summarize, training_sizes
from bench.patch_statistics import patch_statistics_of, pretrained_encoder
from bohb_search.evaluate.tables import to_markdown
from bohb_search.scoring.banks import EmbeddingScorer
from bohb_search.scoring.config import ScoreConfig
from data.datasets import class_keys, load_feature_table, split_test_clips
from data.features import FeatureConfig
from data.manifest import read_manifest
from models import SubClusterAdaCos

FRAME_STRIDE = 16  # the default score's
EMB_DIM, N_SUBCLUSTERS, CLASS_WEIGHT_POWER, MIXUP_PROB = 128, 16, 0.5, 0.5  # the margin objective's defaults


def train_margin_map(z: torch.Tensor, keys: np.ndarray, seed: int, epochs: int) -> torch.nn.Linear:
    """A linear map trained to classify ``keys`` with sub-cluster AdaCos (class weights, mixup)."""
    classes = sorted(set(keys))
    y = torch.tensor([classes.index(k) for k in keys])
    counts = np.bincount(y.numpy(), minlength=len(classes)).astype(float)
    w = torch.tensor((counts.sum() / (len(classes) * counts)) ** CLASS_WEIGHT_POWER, dtype=torch.float32)
    w = w / w[y].mean()
    torch.manual_seed(seed)
    net = torch.nn.Linear(z.shape[1], EMB_DIM)
    head = SubClusterAdaCos(EMB_DIM, len(classes), N_SUBCLUSTERS, seed=seed)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    onehot = torch.nn.functional.one_hot(y, len(classes)).float()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(z), generator=gen).split(64):
            xb, yb = z[idx], onehot[idx]
            lam = torch.rand(len(idx), generator=gen)
            lam = torch.where(torch.rand(len(idx), generator=gen) < MIXUP_PROB, lam, torch.ones_like(lam))[:, None]
            partner = torch.randperm(len(idx), generator=gen)
            xb, yb = lam * xb + (1 - lam) * xb[partner], lam * yb + (1 - lam) * yb[partner]
            loss = -(yb * w * head(net(xb), yb)).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def scores(cfg: ScoreConfig, z: torch.Tensor, m: pd.DataFrame, train: np.ndarray, test: np.ndarray):
    """Test-clip scores, raw and standardised per machine by the leave-one-out training scores."""
    scorer = EmbeddingScorer(cfg).fit(z[train], m.loc[train, "domain"].to_numpy(), m.loc[train, "machine"].to_numpy())
    machines = m.loc[test, "machine"].to_numpy()
    raw = scorer.score(z[test], machines).numpy()
    loo, groups, _ = scorer.training_scores()
    loo, groups = loo.numpy(), np.asarray(groups)
    std = raw.copy()
    for machine in np.unique(machines):
        t = loo[groups == machine]
        std[machines == machine] = (raw[machines == machine] - t.mean()) / max(t.std(), 1e-12)
    return raw, std


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("results/bench/det/data"))
    p.add_argument("--runs", type=Path, default=Path("results/bench/det/runs"), help="bench.detection's runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--cache-dir", type=Path, default=Path("results/bench/det/cache"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    manifest = read_manifest(args.data)
    table = load_feature_table(manifest, FeatureConfig(), cache_dir=args.cache_dir, progress=False)
    m, x = table.manifest, table.features
    parts = split_test_clips(m)
    train = (m["split"] == "train").to_numpy().copy()  # writable: torch indexes with it
    test = (m["split"] == "test").to_numpy().copy()
    rows = []
    for seed in args.seeds:
        z = patch_statistics_of(pretrained_encoder(args.runs / f"seed{seed}" / "pretrain" / "encoder.pt"), x,
                                FRAME_STRIDE)
        zs = z.clone()
        for machine in m["machine"].unique():
            own = (m["machine"] == machine).to_numpy().copy()
            ref = z[own & train]
            zs[own] = (z[own] - ref.mean(0)) / ref.std(0).clamp_min(1e-6)
        net = train_margin_map(zs[train], class_keys(m[train]), seed, args.epochs)
        with torch.no_grad():
            e = net(zs)
        stats_raw, stats_std = scores(ScoreConfig(score="knn", embedding="patch_stats", standardise=True), z, m,
                                      train, test)
        result = {"patch statistics, patchstats-knn-std (the default score)": stats_raw}
        for label, cfg in (("knn", ScoreConfig(score="knn")), ("knn-std", ScoreConfig(score="knn", standardise=True))):
            raw, std = scores(cfg, e, m, train, test)
            result[f"margin classifier on them, {label}"] = raw
            result[f"ensemble of the two, {label}"] = (stats_std + std) / 2
        for system, s in result.items():
            rows.append({"system": system, "seed": seed,
                         **evaluate_part(m[test].assign(score=s, part=parts[test]))})
    summary = summarize(pd.DataFrame(rows), cols=("official_score", "auc_source", "auc_target", "min_machine_auc"))
    md_table = to_markdown(summary)
    print(md_table)
    n_source, n_target, _ = training_sizes(m)
    md = (f"`python -m bench.margin_statistics --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs}` on "
          f"{machine_line()}; the detection benchmark's data ({m['machine'].nunique()} machines; per machine "
          f"{n_source} source + {n_target} target training clips; {len(set(class_keys(m[train])))} classes), "
          f"report half. Wall time {(time.perf_counter() - t_start) / 60:.1f} min.\n\n{md_table}")
    if not args.no_write:
        update_section("margin-statistics", md)


if __name__ == "__main__":
    main()

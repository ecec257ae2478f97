"""What the patch-statistics score sees, by tokenizer geometry: k-NN over the time statistics of the
tokenizer's patch projection (``ScoreConfig(embedding="patch_stats")``) on the detection benchmark's data,
for several pixel-unshuffle factors r, patch sizes p and time strides, with randomly initialised
tokenizers (several seeds) and, optionally, pre-trained encoders, beside the no-training log-mel probe.

    .venv/bin/python -m bench.patch_statistics --data results/bench/det/data --seeds 0 1 2 \\
        [--pretrained results/bench/det/runs/seed0/pretrain/encoder.pt ...]

No training: every figure takes seconds. The scorer is the project's (``EmbeddingScorer``: per-machine
standardisation on the training clips, Euclidean 1-NN per domain bank, min over banks); every number is on
the report half of the labelled test split, as in ``bench.detection``. It answers one question: how much of
the anomaly information a linear patch projection keeps, as a function of the patch's size in the log-mel
(r·p pixels square) and of how densely it is slid along time. Writes the "patch-statistics" section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench._report import machine_line, update_section
from bench.detection import evaluate_part, logmel_statistics_scores, summarize, training_sizes
from bohb_search.evaluate.tables import to_markdown
from bohb_search.scoring.banks import EmbeddingScorer
from bohb_search.scoring.config import ScoreConfig
from bohb_search.train.setup import load_pretrained
from data.config import RunOptions
from data.datasets import load_feature_table, split_test_clips
from data.features import FeatureConfig
from data.manifest import read_manifest
from models import build_encoder, encoder_preset

# (unshuffle r, patch p): r·p is the patch's side in log-mel pixels; the paper's r = 4, p = 16 is 64
GEOMETRIES = [(4, 16), (2, 16), (4, 8), (2, 8), (4, 4)]
FRAME_STRIDES = [64, 16, 4]  # log-mel frames between two positions of the sliding projection (= r·p: side by side)


def pretrained_encoder(path: Path):
    """The encoder of a ``pretrain`` checkpoint (encoder.pt), in eval mode."""
    ecfg, weights, _ = load_pretrained(path)
    enc = build_encoder(ecfg)
    enc.load_state_dict(weights)
    return enc.eval()


def patch_statistics_of(encoder, x: np.ndarray, frame_stride: int) -> torch.Tensor:
    """(N, 2·F·D) patch statistics of log-mels ``x`` (cropped to the encoder's frames), in batches of 64."""
    encoder.eval()
    x = x[..., : encoder.config.n_frames]
    with torch.no_grad():
        return torch.cat([encoder.patch_statistics(torch.from_numpy(x[i : i + 64].astype(np.float32)), frame_stride)
                          for i in range(0, len(x), 64)])


def patch_stat_scores(encoder, manifest: pd.DataFrame, x: np.ndarray, parts: np.ndarray, frame_stride: int,
                      score: ScoreConfig) -> pd.DataFrame:
    """Scores of every test clip by ``score`` over the encoder's patch statistics (fitted on training clips)."""
    z = patch_statistics_of(encoder, x, frame_stride)
    train = (manifest["split"] == "train").to_numpy().copy()  # writable: torch indexes with it
    test = (manifest["split"] == "test").to_numpy().copy()
    scorer = EmbeddingScorer(score).fit(z[train], manifest.loc[train, "domain"].to_numpy(),
                                        manifest.loc[train, "machine"].to_numpy())
    s = scorer.score(z[test], manifest.loc[test, "machine"].to_numpy()).numpy()
    return manifest[test].assign(score=s, part=parts[test])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("results/bench/det/data"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random initialisations per geometry")
    p.add_argument("--pretrained", type=Path, nargs="*", default=[], help="pre-trained encoder.pt files to add")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--cache-dir", type=Path, default=Path("results/bench/det/cache"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    fcfg = FeatureConfig()
    manifest = read_manifest(args.data)
    table = load_feature_table(manifest, fcfg, cache_dir=args.cache_dir, progress=False)
    m, x = table.manifest, table.features
    parts = split_test_clips(m)
    train_x = x[(m["split"] == "train").to_numpy()].astype(np.float32)
    mean, std = float(train_x.mean()), float(train_x.std())
    score = ScoreConfig(score="knn", embedding="patch_stats")
    rows = []
    probe = logmel_statistics_scores(args.data, sorted(m["machine"].unique()), RunOptions(cache_dir=args.cache_dir))
    rows.append({"tokenizer": "log-mel band statistics (no projection)", "stride": "-", "seed": 0,
                 **evaluate_part(probe)})
    for r, patch in GEOMETRIES:
        for seed in args.seeds:
            torch.manual_seed(seed)
            cfg = encoder_preset("tiny", dim=args.dim, depth=1, unshuffle=r, patch=patch, n_mels=fcfg.n_mels,
                                 n_frames=(fcfg.n_frames // (r * patch)) * r * patch)
            enc = build_encoder(cfg.__class__.from_dict({**cfg.to_dict(), "input_mean": mean, "input_std": std}))
            for stride in FRAME_STRIDES:
                if stride > r * patch:
                    continue
                out = patch_stat_scores(enc, m, x, parts, stride, score)
                rows.append({"tokenizer": f"random, r={r} p={patch} ({r * patch}×{r * patch} px)",
                             "stride": f"{stride} frames", "seed": seed, **evaluate_part(out)})
    for path in args.pretrained:
        enc = pretrained_encoder(path)
        ecfg = enc.config
        for stride in FRAME_STRIDES:
            if stride > ecfg.unshuffle * ecfg.patch:
                continue
            out = patch_stat_scores(enc, m, x, parts, stride, score)
            rows.append({"tokenizer": f"pre-trained, r={ecfg.unshuffle} p={ecfg.patch} "
                                      f"({ecfg.unshuffle * ecfg.patch}×{ecfg.unshuffle * ecfg.patch} px)",
                         "stride": f"{stride} frames", "seed": str(path), **evaluate_part(out)})
    summary = summarize(pd.DataFrame(rows), by=["tokenizer", "stride"], count="runs",
                        cols=("official_score", "auc_source", "auc_target", "min_machine_auc")).reset_index()
    md_table = to_markdown(summary.set_index("tokenizer"))
    print(md_table)
    n_source, n_target, _ = training_sizes(m)
    md = (f"`python -m bench.patch_statistics --seeds {' '.join(map(str, args.seeds))}"
          f"{' --pretrained ' + ' '.join(map(str, args.pretrained)) if args.pretrained else ''}` on {machine_line()}; "
          f"the detection benchmark's data ({m['machine'].nunique()} machines; per machine {n_source} "
          f"source + {n_target} target training clips), report half, score "
          f"`--score knn --embedding patch_stats` (1-NN, no normalisation), tokenizer width {args.dim}. "
          f"Wall time {(time.perf_counter() - t_start) / 60:.1f} min.\n\n{md_table}")
    if not args.no_write:
        update_section("patch-statistics", md)


if __name__ == "__main__":
    main()

"""Exploratory: what if stage 2 trained the tokenizer itself, under either objective, through the patch
statistics the default score uses? The frozen pre-trained tokenizer beside the same tokenizer trained with
the margin task (with and without perturbation classes) and with the pOE task, each then scored by the
default ``patchstats-knn-std``, on the detection benchmark's data.

    .venv/bin/python -m bench.tokenizer_objectives --seeds 0 1 2 --epochs 60

Why: in "detection" both objectives tie on the best score because stage 2 never touches the tokenizer
(``finetune`` freezes it), and "margin-statistics" shows a margin *map on top of* the statistics discards the
faults. Here the tokenizer's projection is what learns, and the statistics stay the score.

Per seed, starting each time from the seed's pre-trained encoder (``bench.detection`` made it): the
projection of :class:`PixelUnshufflePatchEmbed` (eq. 2; nothing else of the encoder) and a linear map from its
patch statistics (every 16 log-mel frames, standardised with the frozen tokenizer's training-clip mean and
std) to 128 dimensions are trained for ``--epochs`` epochs (AdamW, lr 1e-3, batches of 32 training clips of
all 7 machines, one tokenizer for all of them, the generalized setting) with

* ``margin``: sub-cluster AdaCos (16 centres) over ``machine|section|attributes|domain`` (:func:`class_keys`);
* ``margin + perturbation classes``: the same, with a third of each batch perturbed by one of the project's
  nine log-mel perturbations (:data:`PERTURBATIONS`, in turn), a clip perturbed in way j being class
  (its class, j) — issue 11's item 4;
* ``poe``: eq. 9 (:func:`poe_loss`, δ = 0.5) around the EMA centre of eq. 8 (momentum 0.99), the same perturbed
  third being the pseudo outliers; one centre for all machines (the paper's generalized model);
* ``poe, a centre per machine``: the same with one centre per machine type (eq. 9 per machine, weighted by its
  share of the batch), as each machine-specific model of the paper has its own.

No test clip and no score enters training; the epoch count is fixed (not selected). Rows: report half only.
Minutes per seed and variant on one core. Writes the "tokenizer-objectives" section of BENCHMARKS.md.
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
from bench.patch_statistics import patch_stat_scores, patch_statistics_of, pretrained_encoder
from bohb_search.evaluate.tables import to_markdown
from bohb_search.scoring.config import ScoreConfig
from bohb_search.train.losses import init_center, poe_loss, update_center
from bohb_search.train.perturbations import PERTURBATIONS, PseudoOutlierConfig
from data.datasets import class_keys, load_feature_table, split_test_clips
from data.features import FeatureConfig
from data.manifest import read_manifest
from models import SubClusterAdaCos

FRAME_STRIDE = 16  # the default score's
EMB_DIM, N_SUBCLUSTERS, DELTA, CENTER_MOMENTUM = 128, 16, 0.5, 0.99  # the objectives' defaults
PERTURBED_SHARE, LR, BATCH = 1 / 3, 1e-3, 32
VARIANTS = ("margin", "margin + perturbation classes", "poe", "poe, a centre per machine")


def default_score(encoder, m: pd.DataFrame, x: np.ndarray, parts: np.ndarray) -> dict:
    """The report-half metrics of ``patchstats-knn-std`` with ``encoder``'s tokenizer."""
    score = ScoreConfig(score="knn", embedding="patch_stats", standardise=True)
    return evaluate_part(patch_stat_scores(encoder, m, x, parts, FRAME_STRIDE, score))


def train_tokenizer(encoder, x_train: torch.Tensor, keys: np.ndarray, variant: str, seed: int, epochs: int):
    """Train ``encoder``'s patch projection (in place) under ``variant``; returns the encoder."""
    z0 = patch_statistics_of(encoder, x_train.numpy(), FRAME_STRIDE)
    mu, sd = z0.mean(0), z0.std(0).clamp_min(1e-6)
    kinds = list(PERTURBATIONS) if variant != "margin" else []
    base = sorted(set(keys))
    classes = base + [f"{k}|{j}" for k in base for j in kinds] if variant.startswith("margin") else []
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[k] for k in keys]) if classes else None
    torch.manual_seed(seed)
    net = torch.nn.Linear(z0.shape[1], EMB_DIM)
    head = SubClusterAdaCos(EMB_DIM, len(classes), N_SUBCLUSTERS, seed=seed) if classes else None
    for p in encoder.parameters():
        p.requires_grad_(False)
    proj = list(encoder.embed.proj.parameters())
    for p in proj:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(list(net.parameters()) + proj, lr=LR, weight_decay=1e-4)
    # pOE's centre groups: one for all clips, or one per machine type (the first field of the class key)
    group = (np.array([k.split("|")[0] for k in keys]) if variant == "poe, a centre per machine"
             else np.zeros(len(keys), dtype=object))
    gen, cfg, centers = torch.Generator().manual_seed(seed), PseudoOutlierConfig(), {}
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train), generator=gen).split(BATCH):
            xb = x_train[idx].clone()
            yb = y[idx].clone() if y is not None else None
            perturbed = torch.zeros(len(idx), dtype=torch.bool)
            if kinds:
                pick = torch.nonzero(torch.rand(len(idx), generator=gen) < PERTURBED_SHARE).flatten().tolist()
                for n, i in enumerate(pick):
                    kind = kinds[n % len(kinds)]
                    xb[i : i + 1] = PERTURBATIONS[kind](xb[i : i + 1], gen, cfg)
                    perturbed[i] = True
                    if yb is not None:
                        yb[i] = index[f"{keys[int(idx[i])]}|{kind}"]
            e = net((encoder.patch_statistics(xb, FRAME_STRIDE) - mu) / sd)
            if head is not None:
                loss = torch.nn.functional.nll_loss(head(e), yb)
            else:
                loss = e.new_zeros(())
                for g in np.unique(group[idx.numpy()]):
                    sel = torch.from_numpy(group[idx.numpy()] == g)
                    normals = e[sel & ~perturbed].detach()
                    if g not in centers:
                        if not len(normals):
                            continue  # no normal of this group seen yet: no centre to push its outliers from
                        centers[g] = init_center(normals)
                    loss = loss + poe_loss(e[sel], perturbed[sel], centers[g], DELTA) * sel.float().mean()
                    if len(normals):
                        centers[g] = update_center(centers[g], normals, CENTER_MOMENTUM)
            if not loss.requires_grad:  # a pOE batch whose groups have no centre yet: nothing to learn from
                continue
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in proj:
        p.requires_grad_(False)
    return encoder.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("results/bench/det/data"))
    p.add_argument("--runs", type=Path, default=Path("results/bench/det/runs"), help="bench.detection's runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--cache-dir", type=Path, default=Path("results/bench/det/cache"))
    p.add_argument("--out", type=Path, help="write the per-seed rows to this CSV (to gather several processes)")
    p.add_argument("--gather", type=Path, nargs="*", default=[], help="CSVs of --out runs to summarise instead")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    manifest = read_manifest(args.data)
    table = load_feature_table(manifest, FeatureConfig(), cache_dir=args.cache_dir, progress=False)
    m, x = table.manifest.reset_index(drop=True), table.features
    parts = split_test_clips(m)
    train = (m["split"] == "train").to_numpy().copy()
    rows = []
    if args.gather:
        # each process also scored the frozen tokenizer of its seed: keep one row per system and seed
        rows = pd.concat([pd.read_csv(f) for f in args.gather]).drop_duplicates(["system", "seed"]).to_dict("records")
    for seed in [] if args.gather else args.seeds:
        pre = args.runs / f"seed{seed}" / "pretrain" / "encoder.pt"
        rows.append({"system": "frozen pre-trained tokenizer (what finetune does)", "seed": seed, "minutes": 0.0,
                     **default_score(pretrained_encoder(pre), m, x, parts)})
        enc = pretrained_encoder(pre)
        x_train = torch.from_numpy(np.ascontiguousarray(x[train][..., : enc.config.n_frames]).astype(np.float32))
        for variant in args.variants:
            t0 = time.perf_counter()
            enc = train_tokenizer(pretrained_encoder(pre), x_train, class_keys(m[train]), variant, seed, args.epochs)
            rows.append({"system": f"tokenizer trained, {variant}", "seed": seed,
                         "minutes": (time.perf_counter() - t0) / 60, **default_score(enc, m, x, parts)})
            print(rows[-1]["system"], seed, {k: round(rows[-1][k], 3) for k in ("official_score", "auc_target")},
                  flush=True)
    runs = pd.DataFrame(rows)
    if args.out:
        runs.to_csv(args.out, index=False)
    summary = summarize(runs, cols=("official_score", "auc_source", "auc_target", "min_machine_auc"))
    summary["minutes per seed"] = [f"{v:.1f}" for v in runs.groupby("system", sort=False)["minutes"].mean()]
    md_table = to_markdown(summary)
    print(md_table)
    n_source, n_target, _ = training_sizes(m)
    seeds = sorted(runs["seed"].unique())
    md = (f"`python -m bench.tokenizer_objectives --seeds {' '.join(map(str, seeds))} --epochs {args.epochs}` on "
          f"{machine_line()}; the detection benchmark's data ({m['machine'].nunique()} machines; per machine "
          f"{n_source} source + {n_target} target training clips), score `patchstats-knn-std`, report half. "
          f"Wall time of this invocation {(time.perf_counter() - t_start) / 60:.1f} min.\n\n{md_table}")
    if not args.no_write:
        update_section("tokenizer-objectives", md)


if __name__ == "__main__":
    main()

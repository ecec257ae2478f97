"""Detection quality on the 7-machine synthetic benchmark: the faithful DCASE AE baseline (MSE, MAHALA)
beside the paper's system (pOE + GRL) and the angular-margin objective with each anomaly score, several
seeds, report half of the test split only.

    .venv/bin/python -m bench.detection --data results/bench/det/data --seeds 0 1 2 [--systems ae paper margin]

The data set is made once by ``data synth --train-source 100 --train-target 10 --test-per-cell 50`` (or the
sizes given). Per seed: the AE baseline per machine (its official recipe, 100 epochs), one pre-training
on every machine's normal training clips, and one fine-tuning per machine, selected on the validation
half of the labelled test split with ``--select-score``; each fine-tuned model is then re-scored with every
score of ``SCORES`` (no retraining; the margin objective with ``MARGIN_SCORES``). With both objectives, their
score-level ensemble (each model standardised on its own training clips) is scored with ``--select-score`` too.
Each objective also trains one generalized model over every machine (``GENERALIZED_SCORES``; off with
``--no-generalized``; ``--generalized-only SYSTEM …`` trains only those of the systems named).
``margin-tokenizer`` is the margin objective with ``train_tokenizer`` (and perturbation classes): it changes the
patch statistics, so it is selected with ``patchstats-knn-std`` and re-scored with ``TOKENIZER_SCORES``;
``--tokenizer-finetune`` sets its budget. With both ``paper`` and ``margin-tokenizer`` generalized, the ensemble of
those two models is scored with ``patchstats-knn-std``; ``--poe-seed-ensemble`` adds its like-for-like bar, a
second paper-system generalized model on a second pre-training seed and the ensemble of the two pOE models.
A probe row (``--no-probe`` to skip) scores the clips by k-NN over per-band log-mel statistics with no training
at all: a lower bound on what a learned embedding should keep. Every number is computed on the report half,
which no model and no epoch was selected on. Finished runs are reused, so the benchmark can be resumed.

Writes ``runs.csv`` (system × seed × machine), ``summary.csv`` / ``summary.md`` (mean ± std over seeds) and the
"detection" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench._report import machine_line, update_section
from bohb_search.evaluate.metrics import evaluate_scores
from bohb_search.evaluate.run import run_evaluate
from bohb_search.evaluate.tables import to_markdown
from data.atomic import atomic_write_csv
from bohb_search.scoring.config import ScoreConfig
from bohb_search.train.configs import AEBaselineConfig, FinetuneConfig, PretrainConfig
from bohb_search.scoring.config import StatsBaselineConfig
from bohb_search.train.runs import run_ae_baseline, run_finetune, run_pretrain, run_stats_baseline
from data.config import DEV_MACHINES, RunOptions
from data.features import FeatureConfig
from data.manifest import read_manifest
from models import encoder_preset

# the scores every fine-tuned model is re-scored with (label -> ScoreConfig fields)
SCORES: dict[str, dict] = {
    "cosine": {"score": "cosine"},
    "knn": {"score": "knn"},
    "knn-kmeans16": {"score": "knn", "source_bank": "kmeans", "n_centres": 16},
    "knn-interp": {"score": "knn", "target_augment": "interpolate"},
    "knn-mix": {"score": "knn", "target_augment": "mix"},
    "knn-dens1": {"score": "knn", "density_k": 1},
    "knn-std": {"score": "knn", "standardise": True},
    "knn-dens1-std": {"score": "knn", "density_k": 1, "standardise": True},
    "knn-kmeans16-interp-dens1-std": {"score": "knn", "source_bank": "kmeans", "target_augment": "interpolate",
                                      "density_k": 1, "standardise": True},
    # the tokenizer's patch statistics instead of the head's embedding (Euclidean, per-machine standardised)
    "patchstats-knn": {"score": "knn", "embedding": "patch_stats"},
    "patchstats-knn-std": {"score": "knn", "embedding": "patch_stats", "standardise": True},
    "patchstats-knn-dens1-std": {"score": "knn", "embedding": "patch_stats", "density_k": 1, "standardise": True},
    "patchstats-knn-k3-interp-std": {"score": "knn", "embedding": "patch_stats", "knn_k": 3,
                                     "target_augment": "interpolate", "standardise": True},
}
for _fields in SCORES.values():  # explicit, so fine-tuning with --select-score never takes another default
    _fields.setdefault("embedding", "head")

# the margin objective is re-scored with fewer of them (each re-scoring embeds every clip again): the
# paper's cosine, plain k-NN, the normalised k-NN variants and the best patch-statistics row (the
# tokenizer is frozen in stage 2 under either objective, so that row must equal the pOE model's)
MARGIN_SCORES = ["cosine", "knn", "knn-dens1-std", "knn-kmeans16-interp-dens1-std", "patchstats-knn-std"]
# the generalized models (one per objective and seed, trained on every machine at once)
GENERALIZED_SCORES = ["cosine", "knn", "knn-dens1-std", "patchstats-knn-std"]
# the margin objective with --train-tokenizer: it changes the patch statistics, so it is selected with the
# score that reads them and re-scored with that and the head's best score only
TOKENIZER_SELECT_SCORE = "patchstats-knn-std"
TOKENIZER_SCORES = ["knn-dens1-std", "patchstats-knn-std"]
# system name -> (objective, extra FinetuneConfig fields, row label)
SYSTEMS = {
    "paper": ("poe", {}, "paper system (poe)"),
    "margin": ("margin", {}, "margin objective"),
    "margin-tokenizer": ("margin", {"train_tokenizer": True, "perturbation_classes": True},
                         "margin objective, tokenizer trained"),
}
# systems with an encoder other than the paper's: name -> (EncoderConfig overrides, PretrainConfig overrides,
# score the fine-tuning selects with, scores the model is re-scored with). "temporal": 128-mel × 8-frame tokens
# (128 per 10 s instead of 32) read by statistics pooling (pre-training with --perturbation-classes scored lower
# on valve's validation half, 0.46 vs 0.66 at the selected epoch of seed 0, so it is left out)
GEOMETRIES = {
    "temporal": ({"patch": 32, "patch_time": 2, "pool": "stats"}, {}, "knn-std",
                 ["cosine", "knn", "knn-std", "knn-dens1-std"]),
}
GEOMETRIES["temporal-scratch"] = GEOMETRIES["temporal"]
SYSTEMS["temporal"] = ("poe", {}, "temporal encoder (statistics pooling), poe")
SYSTEMS["temporal-scratch"] = ("poe", {}, "temporal encoder (statistics pooling), poe, no pre-training")
PROBE = "log-mel band statistics, k-NN (no training)"
STATS = "statistics yardstick (baseline --kind stats: pooling per machine on the validation half)"
# --benchmark valve: the real DCASE 2023 valve test set with its fixed first-shot split (data first-shot)
VALVE_SOURCE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dcase2023_valve"
# --poe-seed-ensemble: the second paper-system model's pre-training and fine-tuning seed is the run's + this
SECOND_SEED = 1000


def evaluate_part(scores: pd.DataFrame) -> dict:
    """Official metrics of the report half, with the per-machine AUCs and the diagnostics."""
    part = scores[scores["part"] == "report"]
    r = evaluate_scores(part)
    out = {"official_score": r.official_score, "total_hmean": r.total_hmean,
           "auc_source": r.summary.loc["AUC (source)", "hmean"], "auc_target": r.summary.loc["AUC (target)", "hmean"],
           "pauc": r.summary.loc["pAUC", "hmean"], "n_clips": len(part)}
    pm = r.per_section.set_index("machine")
    out["min_machine_auc"] = float(np.nanmin(pm[["auc_source", "auc_target"]].to_numpy()))
    out.update({f"{m}:{k}": float(pm.loc[m, k]) for m in pm.index
                for k in ("auc_source", "auc_target", "pauc", "auc_source_within", "auc_target_within",
                          "domain_auc_normals")})
    return out


def logmel_statistics_scores(data: Path, machines: list[str], opts: RunOptions) -> pd.DataFrame:
    """A probe of how much the data reveals without any learning: the statistics yardstick with its pooling
    fixed to the mean and standard deviation over time of every log-mel band (256 values; ``baseline --kind stats
    --pooling meanstd``): standardised with the machine's training clips, scored by the Euclidean distance to the
    nearest training clip of each domain (min over the two domains). Deterministic; the same on every seed. It
    bounds what a learned embedding that averages time should at least keep."""
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for machine in machines:
            out = Path(tmp) / machine
            model = run_stats_baseline(StatsBaselineConfig(pooling="meanstd"), [data], out, [machine], opts=opts)
            run_evaluate(model, [data], out / "eval", opts=opts)
            frames.append(pd.read_csv(out / "eval" / "scores.csv", dtype={"section": str}))
    return pd.concat(frames, ignore_index=True)


def run_generalized(args, seed: int, root: Path, name: str, ft: FinetuneConfig, pre: Path, machines: list[str],
                    opts: RunOptions, labels: list[str]) -> list[dict]:
    """One model of the objective over every machine at once (the paper's generalized variant), re-scored
    with ``labels``."""
    model = root / f"{name}-generalized" / "model.pt"
    if not model.exists():
        run_finetune(ft, [args.data], model.parent, machines, pretrained=pre, opts=opts)
    system = SYSTEMS[name][2]
    return [{"system": f"{system}, generalized, {label}", "seed": seed,
             **evaluated_part([model], model.parent / f"eval-{label}", args, opts, label)} for label in labels]


def run_seed(args, seed: int, machines: list[str], opts: RunOptions, timings: dict) -> list[dict]:
    rows = []
    root = args.out / f"seed{seed}"
    if args.probe:
        probe = args.out / f"probe-logmel-statistics-{'-'.join(sorted(machines))}.csv"
        if not probe.exists():
            atomic_write_csv(logmel_statistics_scores(args.data, machines, opts), probe, index=False)
        rows.append({"system": PROBE, "seed": seed,
                     **evaluate_part(pd.read_csv(probe, dtype={"section": str}))})
    if "ae" in args.systems:
        t0 = time.perf_counter()
        per_score: dict[str, list[pd.DataFrame]] = {"mse": [], "mahalanobis": []}
        for m in machines:
            model = root / "ae" / m / "model.pt"
            if not model.exists():
                run_ae_baseline(AEBaselineConfig(seed=seed, max_epochs=args.ae_epochs), [args.data], model.parent,
                                [m], seconds=args.seconds, opts=opts)
            for score in per_score:
                ev = root / "ae" / m / f"eval-{score}"
                if not (ev / "scores.csv").exists():
                    run_evaluate(model, [args.data], ev, opts=opts, score=score)
                per_score[score].append(pd.read_csv(ev / "scores.csv", dtype={"section": str}))
        for score, frames in per_score.items():
            rows.append({"system": f"DCASE AE ({'MSE' if score == 'mse' else 'MAHALA'})", "seed": seed,
                         **evaluate_part(pd.concat(frames))})
        timings.setdefault("ae", []).append(time.perf_counter() - t0)
    if "stats" in args.systems:
        # the no-training yardstick users run (`baseline --kind stats`); deterministic, so one fit serves all seeds
        frames = []
        for m in machines:
            model = args.out / "stats" / m / "model.pt"
            if not model.exists():
                run_stats_baseline(StatsBaselineConfig(), [args.data], model.parent, [m], opts=opts)
            ev = model.parent / "eval"
            if not (ev / "scores.csv").exists():
                run_evaluate(model, [args.data], ev, opts=opts)
            frames.append(pd.read_csv(ev / "scores.csv", dtype={"section": str}))
        rows.append({"system": STATS, "seed": seed, **evaluate_part(pd.concat(frames))})
    objectives = [(name, SYSTEMS[name][0]) for name in SYSTEMS if name in args.systems]
    paper_pre = None  # the paper geometry's encoder, shared by every system without a geometry of its own
    if any(name not in GEOMETRIES for name, _ in objectives):
        t0 = time.perf_counter()
        paper_pre = pretrain(args, seed, root / "pretrain", opts)
        timings.setdefault("pretrain", []).append(time.perf_counter() - t0)
    for name, objective in objectives:
        # the same encoder and fine-tuning settings; only the stage-2 objective differs (or the geometry)
        t0 = time.perf_counter()
        tokenizer = name == "margin-tokenizer"
        select = TOKENIZER_SELECT_SCORE if tokenizer else args.select_score
        geometry = GEOMETRIES.get(name)
        encoder, pre = None, paper_pre
        if geometry:
            encoder = encoder_preset("tiny", dim=args.dim, depth=args.depth, **geometry[0])
            select = geometry[2]
            pre = (None if name.endswith("-scratch") else
                   pretrain(args, seed, root / "pretrain-temporal", opts, geometry[0], geometry[1]))
        ft = FinetuneConfig.from_dict({**json.loads(args.finetune), **(json.loads(args.tokenizer_finetune) if tokenizer
                                                                         else {}),
                                       "seed": seed, "objective": objective, **SYSTEMS[name][1], **SCORES[select]})
        labels = (TOKENIZER_SCORES if tokenizer else geometry[3] if geometry else list(SCORES) if objective == "poe"
                  else [s for s in SCORES if s in MARGIN_SCORES + [select]])
        specific = name not in args.generalized_only
        per_score = {s: [] for s in labels} if specific else {}
        for m in machines if specific else []:
            model = root / name / m / "model.pt"
            if not model.exists():
                run_finetune(ft, [args.data], model.parent, [m], pretrained=pre,
                             encoder_cfg=encoder if pre is None else None, opts=opts)
            for label in labels:
                fields = SCORES[label]
                ev = root / name / m / f"eval-{label}"
                if not (ev / "scores.csv").exists():
                    run_evaluate(model, [args.data], ev, opts=opts, score=ScoreConfig.of(fields).to_dict())
                per_score[label].append(pd.read_csv(ev / "scores.csv", dtype={"section": str}))
        system = SYSTEMS[name][2]
        for label, frames in per_score.items():
            rows.append({"system": f"{system}, {label}", "seed": seed, **evaluate_part(pd.concat(frames))})
        if specific:
            timings.setdefault(f"finetune {name}", []).append(time.perf_counter() - t0)
        if args.generalized and not geometry:
            t0 = time.perf_counter()
            rows += run_generalized(args, seed, root, name, ft, pre, machines, opts,
                                    TOKENIZER_SCORES if tokenizer else list(dict.fromkeys(GENERALIZED_SCORES + [select])))
            timings.setdefault(f"generalized {name}", []).append(time.perf_counter() - t0)
    if {"paper", "margin"} <= set(args.systems) - set(args.generalized_only):
        # issue 11's ensemble: the two objectives' scores, each standardised on its own training clips
        label, frames = args.select_score, []
        for m in machines:
            ev = root / "ensemble" / m / f"eval-{label}"
            if not (ev / "scores.csv").exists():
                run_evaluate([root / name / m / "model.pt" for name in ("paper", "margin")], [args.data], ev, opts=opts,
                             score=ScoreConfig.of(SCORES[label]).to_dict())
            frames.append(pd.read_csv(ev / "scores.csv", dtype={"section": str}))
        rows.append({"system": f"ensemble poe + margin, {label}", "seed": seed, **evaluate_part(pd.concat(frames))})
    if args.generalized and {"paper", "margin-tokenizer"} <= set(args.systems):
        # two generalized models whose patch statistics differ: the paper's (the pre-trained tokenizer, frozen)
        # and the margin objective's with the tokenizer trained, scored with the statistics both are read by
        rows.append({"system": f"ensemble poe + margin (tokenizer trained), generalized, {TOKENIZER_SELECT_SCORE}",
                     "seed": seed, **evaluated_part(
                         [root / f"{name}-generalized" / "model.pt" for name in ("paper", "margin-tokenizer")],
                         root / "ensemble-tokenizer-generalized" / f"eval-{TOKENIZER_SELECT_SCORE}", args, opts)})
    if args.poe_seed_ensemble and args.generalized and "paper" in args.systems:
        rows += poe_seed_ensemble(args, seed, root, machines, opts, timings)
    return rows


def pretrain(args, seed: int, out: Path, opts: RunOptions, encoder: dict | None = None,
             extra: dict | None = None) -> Path:
    """The stage-1 encoder of one seed (reused when its run finished; an interrupted run is resumed: its
    ``encoder.pt`` is only the best epoch so far); ``encoder`` / ``extra`` override the encoder geometry and
    the pre-training settings."""
    pre = out / "encoder.pt"
    history = out / "history.csv"
    if not (pre.exists() and history.exists() and len(pd.read_csv(history)) >= args.pretrain_epochs):
        run_pretrain(PretrainConfig(epochs=args.pretrain_epochs, lr=args.pretrain_lr, batch_size=32, seed=seed,
                                    target=args.pretrain_target, **(extra or {})),
                     [args.data], out, encoder_preset("tiny", dim=args.dim, depth=args.depth, **(encoder or {})),
                     FeatureConfig(), opts)
    return pre


def evaluated_part(models: list[Path], ev: Path, args, opts: RunOptions, label: str = TOKENIZER_SELECT_SCORE) -> dict:
    """The report-half metrics of ``models`` re-scored with ``SCORES[label]`` — with several, their score-level
    ensemble (each standardised on its own training clips) — evaluated into ``ev`` once."""
    if not (ev / "scores.csv").exists():
        run_evaluate(models, [args.data], ev, opts=opts, score=ScoreConfig.of(SCORES[label]).to_dict())
    return evaluate_part(pd.read_csv(ev / "scores.csv", dtype={"section": str}))


def poe_seed_ensemble(args, seed: int, root: Path, machines: list[str], opts: RunOptions,
                      timings: dict) -> list[dict]:
    """The like-for-like bar for any two-model ensemble: a second paper-system generalized model on a second
    pre-training (seed + ``SECOND_SEED``; the patch statistics come from the tokenizer, which stage 2 freezes,
    so a second fine-tuning on the same encoder would add nothing), and the ensemble of the two pOE models.
    Both rows are paper-system rows; ``margin_goal_line`` holds the best ensemble to the pOE ensemble in its
    like-for-like verdict, and keeps the single pOE rows as the bar of the issue's goal."""
    t0 = time.perf_counter()
    second = seed + SECOND_SEED
    pre_b = pretrain(args, second, root / "pretrain-b", opts)
    model_b = root / "paper-b-generalized" / "model.pt"
    if not model_b.exists():
        ft = FinetuneConfig.from_dict({**json.loads(args.finetune), "seed": second, "objective": "poe",
                                       **SCORES[args.select_score]})
        run_finetune(ft, [args.data], model_b.parent, machines, pretrained=pre_b, opts=opts)
    label = TOKENIZER_SELECT_SCORE
    rows = [{"system": f"paper system (poe), pre-training seed + {SECOND_SEED}, generalized, {label}", "seed": seed,
             **evaluated_part([model_b], model_b.parent / f"eval-{label}", args, opts)},
            {"system": f"paper system (poe) ×2, two pre-training seeds, ensemble, generalized, {label}", "seed": seed,
             **evaluated_part([root / "paper-generalized" / "model.pt", model_b],
                             root / "ensemble-poe-seeds-generalized" / f"eval-{label}", args, opts)}]
    timings.setdefault("poe seed ensemble", []).append(time.perf_counter() - t0)
    return rows


def summarize(runs: pd.DataFrame, by="system", count: str = "seeds",
              cols=("official_score", "auc_source", "auc_target", "pauc", "min_machine_auc")) -> pd.DataFrame:
    """Mean ± std over seeds of each metric, one row per ``by`` group; ``count`` names the seeds column."""
    g = runs.groupby(by, sort=False)
    out = pd.DataFrame({count: g["seed"].nunique()})
    for c in cols:
        out[c] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(g[c].mean(), g[c].std(ddof=1).fillna(0.0))]
    return out


def training_sizes(manifest: pd.DataFrame) -> tuple[int, int, int]:
    """Per machine: source and target training clips, labelled test clips (the synth set is balanced)."""
    train = manifest[manifest["split"] == "train"]
    n = manifest["machine"].nunique()
    return (int((train["domain"] == "source").sum() / n), int((train["domain"] == "target").sum() / n),
            int((manifest["split"] == "test").sum() / n))


def goal_line(runs: pd.DataFrame) -> str:
    """Issue 10's goal, checked on the means: the best paper-system row's official score at least the
    faithful AE's best + 0.05, its target AUC (hmean) at least 0.60, no machine below 0.5 in either domain."""
    means = runs.groupby("system", sort=False)[["official_score", "auc_target", "min_machine_auc"]].mean()
    ae = means[means.index.str.startswith("DCASE AE")]
    paper = means[means.index.str.startswith("paper system")]
    if ae.empty or paper.empty:
        return ""
    best = paper["official_score"].idxmax()
    row, bar = paper.loc[best], ae["official_score"].max() + 0.05
    met = row["official_score"] >= bar and row["auc_target"] >= 0.60 and row["min_machine_auc"] >= 0.5
    return (f"Goal (best paper-system row ≥ best faithful AE + 0.05 = {bar:.3f}, target AUC ≥ 0.60, no machine "
            f"below 0.5): best row \"{best}\" has {row['official_score']:.3f}, target AUC {row['auc_target']:.3f}, "
            f"lowest machine AUC {row['min_machine_auc']:.3f}: **{'met' if met else 'not met'}**.")


def margin_goal_line(runs: pd.DataFrame) -> str:
    """Issue 11's goal, on the means: the best margin-objective or ensemble row beats the best single-model
    pOE row on the official score and on target AUC (hmean). When the run has a pOE ensemble
    (``--poe-seed-ensemble``), the best ensemble is also held to it, like for like (two models against two), in
    a second verdict: whether what an ensemble gains is the objective's or the ensemble's."""
    means = runs.groupby("system", sort=False)[["official_score", "auc_target"]].mean()
    poe = means[means.index.str.startswith("paper system")]
    poe_ensemble = poe[poe.index.str.contains("ensemble")]
    poe_single = poe.drop(poe_ensemble.index)
    challenger = means[means.index.str.startswith(("margin objective", "ensemble"))]
    if poe_single.empty or challenger.empty:
        return ""

    def best(rows):
        return rows.loc[rows["official_score"].idxmax()]

    def compare(c, b):
        met = c["official_score"] > b["official_score"] and c["auc_target"] > b["auc_target"]
        return (f"best \"{c.name}\" {c['official_score']:.3f} / target {c['auc_target']:.3f} vs best \"{b.name}\" "
                f"{b['official_score']:.3f} / target {b['auc_target']:.3f}: **{'met' if met else 'not met'}**")

    line = f"Goal (margin or ensemble beats pOE on official score and target AUC): {compare(best(challenger), best(poe_single))}."
    ensemble = means[means.index.str.startswith("ensemble")]
    if not poe_ensemble.empty and not ensemble.empty:
        line += (" Like for like (the best ensemble against the best ensemble of pOE models): "
                 f"{compare(best(ensemble), best(poe_ensemble))}.")
    return line


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("results/bench/det/data"))
    p.add_argument("--out", type=Path, default=Path("results/bench/det/runs"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--benchmark", choices=["synthetic", "valve"], default="synthetic",
                   help="synthetic: the 7-machine synthetic set at --data; valve: the real DCASE 2023 valve test set "
                        "(../shared/data/dcase2023_valve) with its fixed first-shot split (30 source + 5 target normals "
                        "for training, written to --data by `data first-shot`), one machine, no generalized model")
    p.add_argument("--systems", nargs="+", default=["ae", "stats", "paper", "margin", "margin-tokenizer"],
                   choices=["ae", "stats", *SYSTEMS],
                   help="ae: the faithful DCASE AE; stats: the statistics yardstick (baseline --kind stats); paper: pOE + GRL fine-tuning; margin: the angular-margin objective; "
                        "margin-tokenizer: the same with --train-tokenizer and --perturbation-classes; temporal: pOE on the "
                        "temporal encoder (GEOMETRIES), temporal-scratch: the same without pre-training")
    p.add_argument("--machines", nargs="+", default=list(DEV_MACHINES))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--ae-epochs", type=int, default=100, help="official: 100")
    p.add_argument("--pretrain-epochs", type=int, default=20)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--pretrain-target", default="machine_section_attr", choices=["machine", "machine_section_attr"])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--finetune", default='{"lr": 1e-3, "batch_size": 32, "max_epochs": 20, "patience": 8}',
                   help="FinetuneConfig fields as JSON (the rest are the defaults)")
    p.add_argument("--select-score", default="knn-dens1-std", choices=list(SCORES),
                   help=f"the score the fine-tuning selects its epoch with (margin-tokenizer: {TOKENIZER_SELECT_SCORE})")
    p.add_argument("--tokenizer-finetune", default="{}",
                   help="FinetuneConfig fields as JSON that margin-tokenizer sets over --finetune (its budget)")
    p.add_argument("--cache-dir", type=Path, default=Path("results/bench/det/cache"))
    p.add_argument("--no-generalized", dest="generalized", action="store_false",
                   help="skip the generalized model (one per objective over every machine)")
    p.add_argument("--generalized-only", nargs="*", default=[], choices=list(SYSTEMS),
                   help="systems of which only the generalized model is trained (no model per machine)")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip the log-mel statistics k-NN probe")
    p.add_argument("--poe-seed-ensemble", action="store_true",
                   help="also train the paper system's generalized model on a second pre-training seed and score "
                        "the ensemble of the two pOE models (the bar for a two-model ensemble)")
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument("--section", default=None,
                   help="the BENCHMARKS.md section to write (default: detection, or detection-<benchmark>)")
    args = p.parse_args(argv)
    if args.benchmark == "valve":
        from data.firstshot import write_first_shot_tree

        write_first_shot_tree(VALVE_SOURCE, args.data)
        args.machines, args.generalized = ["valve"], False
    args.out = args.out.resolve()
    opts = RunOptions(cache_dir=args.cache_dir, quiet=True)
    manifest = read_manifest(args.data)
    t_start = time.perf_counter()
    rows, timings = [], {}
    for seed in args.seeds:
        rows += run_seed(args, seed, args.machines, opts, timings)
        print(f"seed {seed} done after {time.perf_counter() - t_start:.0f} s", flush=True)
    runs = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / "runs.csv", index=False)
    summary = summarize(runs)
    summary.to_csv(args.out / "summary.csv")
    table = to_markdown(summary)
    (args.out / "summary.md").write_text(table)
    print(table)
    n_source, n_target, n_test = training_sizes(manifest)
    sizes = (f"{len(args.machines)} machines; per machine {n_source} source + {n_target} target training clips, "
             f"{n_test} labelled test clips of which the report half is scored")
    minutes = {k: f"{np.mean(v) / 60:.1f} min" for k, v in timings.items()}
    md = (f"`python -m bench.detection{'' if args.benchmark == 'synthetic' else f' --benchmark {args.benchmark} --data {args.data}'} --seeds {' '.join(map(str, args.seeds))} --systems {' '.join(args.systems)} --select-score {args.select_score}"
          f"{'' if args.generalized else ' --no-generalized'}{' --generalized-only ' + ' '.join(args.generalized_only) if args.generalized_only else ''} "
          f"--finetune '{args.finetune}'"
          f"{'' if args.tokenizer_finetune == '{}' else f' --tokenizer-finetune {chr(39)}{args.tokenizer_finetune}{chr(39)}'}"
          f"{' --poe-seed-ensemble' if args.poe_seed_ensemble else ''}` "
          f"on {machine_line()}; {sizes}. Wall time of this invocation "
          f"{(time.perf_counter() - t_start) / 60:.0f} min (runs finished earlier are reused; per seed: "
          f"{', '.join(f'{k} {v}' for k, v in minutes.items())}).\n\n{table}\n\n{goal_line(runs)}\n\n{margin_goal_line(runs)}")
    if not args.no_write:
        update_section(args.section or ("detection" if args.benchmark == "synthetic" else f"detection-{args.benchmark}"),
                       md)


if __name__ == "__main__":
    main()

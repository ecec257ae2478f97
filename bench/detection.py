"""Detection quality on one synthetic benchmark: the full system (pre-train → pOE + GRL fine-tuning,
default hyperparameters, no search) vs the DCASE AE baseline, same data, same metrics.

    .venv/bin/python -m bench.detection [--train-source 200 --train-target 10 --test-per-cell 25 --epochs 20]

Writes the "detection" section of BENCHMARKS.md (official score and TOTAL for both systems, per
machine AUCs) and the tables under results/bench/detection/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from bench._report import machine_line, update_section
from bohb_search.evaluate.metrics import evaluate_scores
from bohb_search.evaluate.run import run_evaluate
from bohb_search.evaluate.tables import table2, table3, to_markdown, write_tables
from bohb_search.train.configs import FinetuneConfig, PretrainConfig
from bohb_search.train.runs import run_finetune, run_pretrain
from data.config import RunOptions
from data.features import FeatureConfig
from data.synth import DEV_MACHINES, SynthConfig, synthesize
from models import encoder_preset


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/bench/detection"))
    p.add_argument("--train-source", type=int, default=200)
    p.add_argument("--train-target", type=int, default=10)
    p.add_argument("--test-per-cell", type=int, default=25)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20, help="max fine-tuning / AE epochs (early stopping patience 15)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    args = p.parse_args(argv)
    out = args.out.resolve()
    data, cache = out / "data", out / "cache"
    t0 = time.perf_counter()
    scfg = SynthConfig(train_source=args.train_source, train_target=args.train_target,
                       test_per_cell=args.test_per_cell, seconds=args.seconds)
    if not (data / "synth_manifest.csv").exists():
        synthesize(data, scfg, progress=False)
    feature_cfg = FeatureConfig()
    enc = encoder_preset("tiny", dim=args.dim, depth=args.depth)
    opts = RunOptions(cache_dir=cache, quiet=True)
    pre = run_pretrain(PretrainConfig(epochs=args.pretrain_epochs, lr=1e-3, batch_size=32), [data], out / "pretrain",
                       enc, feature_cfg, opts)
    t_pre = time.perf_counter() - t0
    scores = {"Proposed (machine-specific)": [], "Baseline (AE)": []}
    for machine in DEV_MACHINES:
        ours = run_finetune(FinetuneConfig(max_epochs=args.epochs, batch_size=64, lr=1e-3), [data],
                            out / "models" / machine, [machine], pretrained=pre, opts=opts)
        run_evaluate(ours, [data], out / "evaluate" / machine, opts=opts)
        scores["Proposed (machine-specific)"].append(pd.read_csv(out / "evaluate" / machine / "scores.csv"))
        ae = run_finetune(FinetuneConfig(max_epochs=args.epochs, batch_size=64, lr=1e-3), [data],
                          out / "models" / f"{machine}-ae", [machine], pretrained=pre, model_kind="ae", opts=opts)
        run_evaluate(ae, [data], out / "evaluate" / f"{machine}-ae", opts=opts)
        scores["Baseline (AE)"].append(pd.read_csv(out / "evaluate" / f"{machine}-ae" / "scores.csv"))
    reports = {k: evaluate_scores(pd.concat(v)) for k, v in scores.items()}
    write_tables(reports, out / "tables")
    total = time.perf_counter() - t0
    ours, ae = reports["Proposed (machine-specific)"], reports["Baseline (AE)"]
    verdict = ("beats" if ours.official_score > ae.official_score else "does NOT beat")
    md = f"""## Detection quality: full system vs DCASE AE baseline (`bench/detection.py`)

`.venv/bin/python -m bench.detection --train-source {args.train_source} --train-target {args.train_target} --test-per-cell {args.test_per_cell} --epochs {args.epochs}` on {machine_line()}; whole run {total / 60:.1f} min (pre-training {t_pre:.0f} s).

Data: synthetic DCASE-2025 layout, 7 machine types × ({args.train_source} source + {args.train_target} target normal training clips, {4 * args.test_per_cell} test clips), {args.seconds:g} s. Encoder: SSM dim {args.dim}, depth {args.depth}, r = 4, pre-trained {args.pretrain_epochs} epochs (lr 1e-3, batch 32). Fine-tuning: default `FinetuneConfig` (pOE + GRL, λ_adv 0.1, δ 0.5, K = 2) with lr 1e-3, batch 64, at most {args.epochs} epochs, model of the best validation epoch — no BOHB search here. AE: the DCASE baseline architecture on the same log-mels, lr 1e-3, MSE score.

| system | official score | TOTAL (hmean) | TOTAL (amean) |
|---|---:|---:|---:|
| Proposed (machine-specific) | {ours.official_score:.3f} | {ours.total_hmean:.3f} | {ours.total_amean:.3f} |
| Baseline (AE) | {ae.official_score:.3f} | {ae.total_hmean:.3f} | {ae.total_amean:.3f} |

The full system **{verdict}** the AE baseline on this benchmark.

{to_markdown(table3(reports))}
"""
    update_section("detection", md)
    print(to_markdown(table2(reports)))
    print(md)


if __name__ == "__main__":
    main()

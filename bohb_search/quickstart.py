"""``quickstart``: the main job, end to end on a small synthetic data set, on CPU in minutes.

synthesize → summary → features (cached) → pre-train a small encoder → fine-tune (pOE + GRL) →
evaluate with the official metrics → results tables and submission files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from data.features import FeatureConfig, extract_features
from data.manifest import read_manifest, summarize
from data.synth import DEV_MACHINES, SynthConfig, synthesize

from .configs import FinetuneConfig, PretrainConfig
from .pipeline import run_evaluate, run_finetune, run_pretrain
from .reporting import table2, table3, to_markdown, write_tables


@dataclass
class QuickstartConfig:
    out: Path = Path("results/quickstart")
    machines: tuple[str, ...] = DEV_MACHINES  # synthesized (all take part in pre-training)
    finetune_machines: tuple[str, ...] = ("fan",)  # machine-specific models trained and evaluated
    train_source: int = 60
    train_target: int = 6
    test_per_cell: int = 10
    seconds: float = 10.0
    pretrain_epochs: int = 2
    finetune_epochs: int = 9
    dim: int = 64
    depth: int = 4
    seed: int = 0
    device: str = "auto"
    quiet: bool = False
    timings: dict = field(default_factory=dict)


def run_quickstart(q: QuickstartConfig) -> dict:
    from models import encoder_preset

    out = Path(q.out)
    data_dir = out / "data"
    cache = out / "feature_cache"
    t_start = time.perf_counter()

    def stage(name: str, t0: float) -> None:
        q.timings[name] = round(time.perf_counter() - t0, 1)
        print(f"[quickstart] {name}: {q.timings[name]:.1f} s", flush=True)

    t0 = time.perf_counter()
    scfg = SynthConfig(machines=tuple(q.machines), train_source=q.train_source, train_target=q.train_target,
                       test_per_cell=q.test_per_cell, seconds=q.seconds, seed=q.seed)
    if not (data_dir / "synth_manifest.csv").exists():
        synthesize(data_dir, scfg, progress=not q.quiet)
    stage("synthesize", t0)

    manifest = read_manifest(data_dir)
    print(summarize(manifest).pivot_table(index=["machine", "split", "label"], columns="domain", values="clips",
                                          aggfunc="sum", fill_value=0).to_string())

    t0 = time.perf_counter()
    feature_cfg = FeatureConfig()
    res = extract_features(manifest["path"].tolist(), feature_cfg, cache_dir=cache, progress=not q.quiet)
    print(f"[quickstart] features: {res.summary()}")
    stage("features", t0)

    t0 = time.perf_counter()
    enc = encoder_preset("tiny", dim=q.dim, depth=q.depth, n_heads=max(1, q.dim // 64))
    pre = run_pretrain([data_dir], out / "pretrain", enc,
                       PretrainConfig(epochs=q.pretrain_epochs, batch_size=64, seed=q.seed), feature_cfg,
                       cache, q.device, quiet=q.quiet)
    stage("pretrain", t0)

    reports = {}
    for machine in q.finetune_machines:
        t0 = time.perf_counter()
        cfg = FinetuneConfig(max_epochs=q.finetune_epochs, batch_size=64, unfreeze_k=min(2, q.depth), lr=3e-4,
                             seed=q.seed)
        model = run_finetune([data_dir], out / "finetune" / machine, cfg, [machine], pre, cache_dir=cache,
                             device=q.device, quiet=q.quiet)
        report = run_evaluate(model, [data_dir], out / "evaluate" / machine, system=f"Proposed ({machine})",
                              cache_dir=cache, quiet=q.quiet)
        reports[machine] = report
        stage(f"finetune+evaluate {machine}", t0)

    if reports:
        # one table over all machine-specific models (each contributes its own machine's rows)
        import pandas as pd

        from .metrics import evaluate_scores

        scores = pd.concat([pd.read_csv(out / "evaluate" / m / "scores.csv") for m in reports])
        combined = evaluate_scores(scores[scores["label"].isin(["normal", "anomaly"])])
        write_tables({"Proposed (machine-specific)": combined}, out / "tables")
        print()
        print(to_markdown(table2({"Proposed (machine-specific)": combined})))
        print()
        print(to_markdown(table3({"Proposed (machine-specific)": combined})))
    q.timings["total"] = round(time.perf_counter() - t_start, 1)
    print(f"\n[quickstart] done in {q.timings['total']:.0f} s. Outputs under {out}/: data/, pretrain/, finetune/, "
          f"evaluate/<machine>/submission/, tables/")
    return q.timings

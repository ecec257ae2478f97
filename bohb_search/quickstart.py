"""``quickstart``: the main job, end to end on a small synthetic data set, on CPU in minutes.

synthesize → features (cached) → pre-train a small encoder → a BOHB search (Ray Tune, η = 3) for one
machine and a small one for the generalized model, every trial tracked in MLflow → final retrain of
the best configurations (+ the AE baseline) → official metrics, Table 2/3-style results, submission files.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from data.features import FeatureConfig, extract_features
from data.manifest import read_manifest, summarize
from data.synth import DEV_MACHINES, SynthConfig, synthesize

from .configs import PretrainConfig
from .final import run_final_train
from .pipeline import run_pretrain
from .reporting import table2, table3, to_markdown
from .search import SearchSettings, default_space, run_search
from .tracking import resolve_tracking_uri


@dataclass
class QuickstartConfig:
    out: Path = Path("results/quickstart")
    machines: tuple[str, ...] = DEV_MACHINES  # synthesized; all take part in pre-training
    search_machine: str = "fan"  # the machine-specific search
    train_source: int = 40
    train_target: int = 4
    test_per_cell: int = 10
    seconds: float = 10.0
    pretrain_epochs: int = 10  # a small model from scratch on ~300 clips needs more, faster epochs than the paper's 5 at 1e-4
    pretrain_lr: float = 1e-3
    dim: int = 64
    depth: int = 4
    machine_trials: int = 9  # BOHB trials of the machine search (max 9 epochs, η = 3)
    machine_max_epochs: int = 9
    generalized_trials: int = 3  # the generalized search is smaller: each epoch sees every machine
    generalized_max_epochs: int = 3
    final_max_epochs: int = 9
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    tracking_uri: str | None = None
    fresh: bool = False  # start over instead of reusing outputs of an earlier quickstart
    quiet: bool = False
    timings: dict = field(default_factory=dict)


def run_quickstart(q: QuickstartConfig) -> dict:
    from models import encoder_preset

    out = Path(q.out).resolve()
    if q.fresh and out.exists():
        shutil.rmtree(out)
    data_dir = out / "data"
    cache = out / "feature_cache"
    tracking_uri = resolve_tracking_uri(q.tracking_uri or f"sqlite:///{out / 'mlflow.db'}")
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
    pretrained = run_pretrain([data_dir], out / "pretrain", enc,
                              PretrainConfig(epochs=q.pretrain_epochs, lr=q.pretrain_lr, batch_size=32, seed=q.seed),
                              feature_cfg, cache, q.device, quiet=q.quiet)
    stage("pretrain", t0)

    searches = [(q.search_machine, [q.search_machine], q.machine_trials, q.machine_max_epochs),
                ("generalized", None, q.generalized_trials, q.generalized_max_epochs)]
    best_files = []
    for name, machines, trials, max_epochs in searches:
        t0 = time.perf_counter()
        settings = SearchSettings(
            name=name, data=[str(data_dir)], machines=machines, pretrained=str(pretrained),
            space=default_space(machines is None), num_samples=trials, max_epochs=max_epochs, eta=3,
            seed=q.seed, storage_path=str(out / "searches"), tracking_uri=tracking_uri, cache_dir=str(cache),
            batch_size=q.batch_size, device=q.device)
        best_path = settings.out_dir / "best_config.json"
        if not best_path.exists():
            resume = (settings.out_dir / "search_settings.json").exists()  # an interrupted quickstart
            best = run_search(settings, resume=resume, verbose=0 if q.quiet else 1)
        else:
            best = json.loads(best_path.read_text())
        print(f"[quickstart] search {name}: best validation AUC {best['metric']['value']:.3f} "
              f"at {best['budget_epochs']} epochs ({best['trials']})")
        best_files.append(best_path)
        stage(f"search {name}", t0)

    t0 = time.perf_counter()
    reports = run_final_train(best_files, out / "final", q.final_max_epochs, baseline=True,
                              tracking_uri=tracking_uri, cache_dir=str(cache), device=q.device, quiet=q.quiet)
    stage("final-train", t0)

    print()
    print(to_markdown(table2(reports)))
    print()
    print(to_markdown(table3(reports)))
    q.timings["total"] = round(time.perf_counter() - t_start, 1)
    print(f"""
[quickstart] done in {q.timings['total']:.0f} s. Everything is under {out}/:
  data/                 the synthetic DCASE-layout data set
  pretrain/encoder.pt   the pre-trained encoder
  searches/<name>/      best_config.json, trials.csv, Ray Tune experiment (ray/)
  final/tables/         table2/table3 (.csv, .md), per_section.csv, summary.json
  final/evaluate/<name>/submission/   DCASE anomaly_score_*/decision_result_* files
  final/models/<name>/model.pt        final checkpoints (score new recordings: bohb-search score --model …)
Compare the trials in MLflow:  mlflow ui --backend-store-uri {tracking_uri}""")
    return q.timings

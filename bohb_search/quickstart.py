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

from data.config import DEV_MACHINES, RunOptions

from .train.configs import strict_from_dict

# the pipeline's modules are imported in run_quickstart, so that the command line reads
# QuickstartConfig for its flags without loading torch, Ray or MLflow


@dataclass
class QuickstartConfig:
    """A small synthetic data set and budgets that run end to end on 2 CPU cores in minutes."""

    out: Path = Path("results/quickstart")  # output folder (data, models, searches, tables, MLflow store)
    machines: tuple[str, ...] = DEV_MACHINES  # synthesized; all take part in pre-training
    search_machine: str = "fan"  # machine type of the machine-specific search
    train_source: int = 40  # source normal training clips per machine
    train_target: int = 4  # target normal training clips per machine
    test_per_cell: int = 10  # test clips per domain × label
    seconds: float = 10.0  # clip length
    pretrain_epochs: int = 10  # a small model from scratch on ~300 clips needs more, faster epochs than the paper's 5 at 1e-4
    pretrain_lr: float = 1e-3  # pre-training learning rate
    dim: int = 64  # encoder width
    depth: int = 4  # encoder blocks
    machine_trials: int = 9  # BOHB trials of the machine search
    machine_max_epochs: int = 9  # Hyperband max_t of the machine search
    generalized_trials: int = 3  # the generalized search is smaller: each epoch sees every machine
    generalized_max_epochs: int = 3  # Hyperband max_t of the generalized search
    final_max_epochs: int = 9  # epochs of the final retrain
    batch_size: int = 64  # fine-tuning batch of every trial
    min_steps_per_epoch: int = 4  # fine-tuning steps per epoch at least (a few: the quickstart is about minutes)
    seed: int = 0  # data, weights, searcher
    device: str = "auto"  # auto, cpu, cuda
    tracking_uri: str | None = None  # MLflow tracking URI (default sqlite:///<out>/mlflow.db)
    fresh: bool = False  # start over instead of reusing outputs of an earlier quickstart
    quiet: bool = False  # no progress bars
    timings: dict = field(default_factory=dict)  # seconds per stage, filled in by the run

    @classmethod
    def from_dict(cls, d: dict) -> "QuickstartConfig":
        return strict_from_dict(cls, dict(d))


def run_quickstart(q: QuickstartConfig) -> dict:
    from data.features import FeatureConfig, extract_features
    from data.manifest import read_manifest, summarize
    from data.synth import SynthConfig, synthesize
    from models import encoder_preset

    from .evaluate.tables import table2, table3, to_markdown
    from .final import FinalTrainConfig, run_final_train
    from .train.configs import PretrainConfig
    from .train.runs import run_pretrain
    from .tune.runner import default_space, run_search
    from .tune.settings import SearchSettings
    from .tune.tracking import experiment_runs_link, mlflow_ui_command, resolve_tracking_uri

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
    enc = encoder_preset("tiny", dim=q.dim, depth=q.depth)
    opts = RunOptions(cache_dir=cache, device=q.device, quiet=q.quiet)
    pretrained = run_pretrain(PretrainConfig(epochs=q.pretrain_epochs, lr=q.pretrain_lr, batch_size=32, seed=q.seed),
                              [data_dir], out / "pretrain", enc, feature_cfg, opts)
    stage("pretrain", t0)

    searches = [(q.search_machine, [q.search_machine], q.machine_trials, q.machine_max_epochs),
                ("generalized", None, q.generalized_trials, q.generalized_max_epochs)]
    best_files = []
    for name, machines, trials, max_epochs in searches:
        t0 = time.perf_counter()
        settings = SearchSettings(
            name=name, data=[str(data_dir)], machines=machines, pretrained=str(pretrained),
            space=default_space(machines is None), num_samples=trials, max_epochs=max_epochs, eta=3,
            storage_path=str(out / "searches"), tracking_uri=tracking_uri, cache_dir=str(cache),
            device=q.device, finetune={"batch_size": q.batch_size, "seed": q.seed,
                                       "min_steps_per_epoch": q.min_steps_per_epoch})
        best_path = settings.out_dir / "best_config.json"
        if not best_path.exists():
            resume = (settings.out_dir / "search_settings.json").exists()  # an interrupted quickstart
            best = run_search(settings, resume=resume, verbose=0 if q.quiet else 1)
        else:
            best = json.loads(best_path.read_text())
        print(f"[quickstart] search {name}: best validation score {best['metric']['value']:.3f} "
              f"at {best['budget_epochs']} epochs ({best['trials']})")
        best_files.append(best_path)
        stage(f"search {name}", t0)

    t0 = time.perf_counter()
    reports = run_final_train(best_files, out / "final",
                              FinalTrainConfig(max_epochs=q.final_max_epochs, with_baseline=True,
                                               tracking_uri=tracking_uri),
                              RunOptions(cache_dir=str(cache), device=q.device, quiet=q.quiet))
    stage("final-train", t0)

    print()
    print(to_markdown(table2(reports)))
    print()
    print(to_markdown(table3(reports)))
    q.timings["total"] = round(time.perf_counter() - t_start, 1)
    # the runs tables of the searches and the final models (MLflow's bare links open its GenAI view)
    links = [link for exp in [f"bohb-search/{name}" for name, *_ in searches] + ["bohb-search/final"]
             if (link := experiment_runs_link(tracking_uri, exp))]
    print(f"""
[quickstart] done in {q.timings['total']:.0f} s. Everything is under {out}/:
  data/                 the synthetic DCASE-layout data set
  pretrain/encoder.pt   the pre-trained encoder
  searches/<name>/      best_config.json, trials.csv, Ray Tune experiment (ray/)
  final/tables/         table2/table3 (.csv, .md), per_section.csv, summary.json
  final/evaluate/<name>/submission/   DCASE anomaly_score_*/decision_result_* files
  final/models/<name>/model.pt        final checkpoints (score new recordings: bohb-search score --model …)
Compare the trials in MLflow:  {mlflow_ui_command(tracking_uri)}
  then open""" + "".join(f"\n    {link}" for link in links))
    return q.timings

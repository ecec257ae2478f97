"""Running one search: BOHB (TuneBOHB + HyperBandForBOHB, η = 3, paper 3.2) or a random baseline in Ray Tune.

* The trainable is the budget-aware fine-tuning trainer (:mod:`.trainable`); features are read from
  the cache once by the driver and shared with every trial through Ray's object store
  (``tune.with_parameters``).
* Resuming after the driver died uses ``Tuner.restore`` with the repaired BOHB searcher (:mod:`.searchers`).
* Every trial is one MLflow child run (:class:`.tracking.MLflowTrialCallback`) under one parent run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from data.atomic import atomic_write_csv, atomic_write_json

from .results import best_config, trials_table
from .searchers import epoch_budget_stopper, make_searcher_and_scheduler
from .settings import METRIC, SearchError, SearchSettings
from .spaces import default_space_path, load_search_space
from .trainable import make_trainable

SETTINGS_FILE = "search_settings.json"


def ray_init(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start a local Ray on the loopback interface."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # a single-machine Ray: keep all of its traffic on the loopback interface
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)


def _settings_file(out: Path) -> Path:
    return out / SETTINGS_FILE


def run_search(settings: SearchSettings, resume: bool = False, address: str | None = None,
               verbose: int = 1, extra_callbacks: list | None = None) -> dict:
    """Run (or resume) one BOHB search; returns the best configuration (also in best_config.json)."""
    from ray import tune

    from ..train.setup import load_pretrained, prepare_finetune
    from .tracking import MLflowTrialCallback, SearchTracker, resolve_tracking_uri

    out = settings.out_dir
    settings_path = _settings_file(out)
    if settings_path.exists() and not resume:
        raise SearchError(f"{out}: a search named '{settings.name}' already exists; use --resume to continue it "
                          "or another --name")
    if resume:
        if not settings_path.exists():
            raise SearchError(f"{out}: no search named '{settings.name}' to resume")
        saved = json.loads(settings_path.read_text())
        settings = SearchSettings.from_dict({**saved, "tracking_uri": settings.tracking_uri or saved.get("tracking_uri")})
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = resolve_tracking_uri(settings.tracking_uri)
    settings = replace(settings, tracking_uri=tracking_uri)

    enc_cfg, _, _ = load_pretrained(settings.pretrained)
    space = load_search_space(settings.space, depth=enc_cfg.depth, seed=settings.seed)
    if not resume:
        shutil.copyfile(settings.space, out / "search_space.yaml")
        atomic_write_json(settings_path, settings.to_dict())

    setup = prepare_finetune(settings.data, settings.machines, settings.pretrained, cache_dir=settings.cache_dir,
                             quiet=verbose == 0)
    ray_init(address)
    trainable = tune.with_parameters(
        make_trainable(), ft_setup=setup, space=space, base_config=settings.base_finetune_config().to_dict(),
        epochs_per_iteration=settings.min_epochs, device=settings.device,
        threads=max(1, int(settings.cpus_per_trial)))
    trainable = tune.with_resources(trainable, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    experiment = f"bohb-search/{settings.name}"
    callbacks = [MLflowTrialCallback(tracking_uri, experiment, settings.name, settings.max_epochs),
                 *(extra_callbacks or [])]
    run_config = tune.RunConfig(
        name="ray", storage_path=str(out), callbacks=callbacks, verbose=verbose,
        stop=epoch_budget_stopper(settings.epoch_budget) if settings.epoch_budget else None,
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
    )
    # snapshot the experiment state at least every second (Ray's "auto" waits >= 10 s), so that a
    # driver killed mid-search loses at most the trials created in the last second
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    tracker = SearchTracker(tracking_uri, experiment, settings.name)
    tracker.log_settings(settings.to_dict())
    t0 = time.perf_counter()
    if resume and tune.Tuner.can_restore(str(out / "ray")):
        tuner = tune.Tuner.restore(str(out / "ray"), trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        searcher, scheduler = make_searcher_and_scheduler(settings, space)
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=settings.num_samples,
            max_concurrent_trials=settings.max_concurrent or None, reuse_actors=True),
            run_config=run_config)
    grid = tuner.fit()
    table = trials_table(grid, settings)
    if resume:
        # trials the driver had started after its last state snapshot do not exist in the restored
        # experiment (Tune replaced them with new trials); their runs are removed (soft delete) so that
        # MLflow keeps exactly one run per trial of the search
        known = set(table["trial_id"].astype(str))
        for trial_id, run_id in tracker.trial_runs().items():
            if trial_id not in known:
                tracker.client.set_tag(run_id, "trial_status", "ORPHANED")
                tracker.client.delete_run(run_id)
    atomic_write_csv(table, out / "trials.csv")
    best = best_config(table, space, settings)
    best["wall_seconds"] = round(time.perf_counter() - t0, 1)
    best["trials"] = {s: int(n) for s, n in table.groupby("status")["trial_id"].nunique().items()}
    atomic_write_json(out / "best_config.json", best)
    from ..evaluate.search_plots import plot_search_progress

    started = table.dropna(subset=["epoch"]) if "epoch" in table else table
    plot_search_progress(started, out / "search_progress.png", settings.max_epochs)
    tracker.finish([out / "best_config.json", out / "trials.csv", out / "search_space.yaml", settings_path,
                    out / "search_progress.png"],
                   {f"best_{METRIC}": best["metric"]["value"], "best_budget_epochs": best["budget_epochs"]})
    return best


def pretrained_cache_key(data: list[str], extra: dict) -> str:
    blob = json.dumps({"data": sorted(str(Path(d).resolve()) for d in data), **extra}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def default_space(generalized: bool) -> str:
    return str(default_space_path(generalized))

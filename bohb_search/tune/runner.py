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
import logging
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
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        # a single-machine Ray: keep all of its traffic on the loopback interface
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray 2.60 turns token auth on by itself where a token exists and says so on stderr at every start;
        # that is the setting we want, and the notice would sit above every one-line error of ours
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            lambda record: "Token authentication is enabled" not in record.getMessage())
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)  # not "Started a local Ray instance" above our own lines


def _settings_file(out: Path) -> Path:
    return out / SETTINGS_FILE


# settings a resumed search may change: where it logs, computes and caches, not what it searches
RESUMABLE_CHANGES = ("tracking_uri", "device", "cache_dir", "max_concurrent", "cpus_per_trial", "gpus_per_trial")


def resume_settings(saved: SearchSettings, given: SearchSettings, explicit=None) -> SearchSettings:
    """The saved settings of an interrupted search, with the changes a resume may make; any other setting
    the caller gave that differs from the saved one is refused (one line naming each)."""
    names = [f for f in given.to_dict() if f != "name"] if explicit is None else [f for f in explicit if f != "name"]
    new, old = given.to_dict(), saved.to_dict()
    conflicts = [f"{k} {new[k]!r} (saved: {old[k]!r})" for k in names
                 if k not in RESUMABLE_CHANGES and new.get(k) != old.get(k)]
    if conflicts:
        raise SearchError(f"search {saved.name}: --resume continues the saved search, which differs in "
                          f"{'; '.join(conflicts)}; drop those flags, or start another --name")
    changes = {k: new[k] for k in RESUMABLE_CHANGES if k in names and new[k] is not None}
    return replace(saved, **changes)


def reuse_trial_actors() -> bool:
    """Hand a finished trial's worker process to the next trial (saves starting Python and torch again) on
    one machine only. On a cluster a reused actor keeps the next trial on whichever node freed first,
    often before another node's new actor is up, so short trials pile onto one node; new actors go where
    Ray has room, and trials of minutes to hours do not miss the seconds of a start."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive")) <= 1


def check_resources(settings: SearchSettings) -> None:
    """Refuse a trial size the Ray cluster can never give (Ray would wait for it forever)."""
    import ray

    have = ray.cluster_resources()
    for key, flag, want in (("GPU", "--gpus-per-trial", settings.gpus_per_trial),
                            ("CPU", "--cpus-per-trial", settings.cpus_per_trial)):
        if want > have.get(key, 0):
            raise SearchError(f"{flag} {want:g}: the Ray cluster has {have.get('CPU', 0):g} CPU(s) and "
                              f"{have.get('GPU', 0):g} GPU(s), so no trial could ever start")


def trials_at_a_time(settings: SearchSettings) -> int:
    """How many trials the cluster runs at once (resources, ``max_concurrent`` and ``num_samples``)."""
    import ray

    have = ray.cluster_resources()
    n = [settings.num_samples, int(have.get("CPU", 0) // settings.cpus_per_trial) if settings.cpus_per_trial else 10**6]
    if settings.gpus_per_trial:
        n.append(int(have.get("GPU", 0) // settings.gpus_per_trial))
    if settings.max_concurrent:
        n.append(settings.max_concurrent)
    return max(1, min(n))


def print_estimate(settings: SearchSettings, space, setup, out=print, measure: bool = True) -> float | None:
    """Print the planned trials, the epoch budget of the scheduler's plan and an ETA from a short measured
    step of the space's default configuration; warns (stderr) when a CPU run would take over an hour.
    Returns the ETA in seconds (None when it was not measured)."""
    import torch

    from ..train.estimate import eta_lines, measure_epoch, print_lines
    from ..train.setup import build_trainer
    from .searchers import planned_iterations

    epochs = planned_iterations(settings) * settings.min_epochs
    if settings.epoch_budget:
        epochs = min(epochs, settings.epoch_budget)
    parallel = trials_at_a_time(settings)
    estimate, note = None, ""
    wants_gpu = settings.gpus_per_trial > 0 or settings.device.startswith("cuda")
    if measure and wants_gpu and not torch.cuda.is_available():
        note = " (ETA not measured: this driver has no GPU)"
    elif measure:
        device = "cpu" if settings.device == "cpu" or not wants_gpu else settings.device.replace("auto", "cuda")
        defaults = dict(space.configspace.get_default_configuration())
        cfg = space.to_finetune_config(defaults, settings.base_finetune_config())
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(settings.cpus_per_trial)))  # as a trial runs (trainable.py)
        try:
            estimate = measure_epoch(build_trainer(setup, cfg, device))
        finally:
            torch.set_num_threads(threads)
    eta = None if estimate is None else epochs * estimate.seconds_per_epoch / parallel
    plan = (f"search {settings.name}: {settings.num_samples} trials ({settings.scheduler}, max {settings.max_epochs} "
            f"epochs each), planned epoch budget {epochs} epochs, {parallel} trial(s) at a time{note}")
    print_lines(eta_lines(plan, eta, estimate), out)
    return eta


def run_search(settings: SearchSettings, resume: bool = False, address: str | None = None,
               verbose: int = 1, extra_callbacks: list | None = None, explicit=None, estimate: bool = False) -> dict:
    """Run (or resume) one BOHB search; returns the best configuration (also in best_config.json).

    Everything is checked before the search's folder is made (data, machines, pre-trained encoder,
    search space, the cluster's resources); a search that fails before its first trial leaves no
    folder behind. ``resume`` continues the saved search: ``explicit`` names the settings the caller
    set on purpose (default: all), and those that differ from the saved ones are refused, except
    where it logs and computes (:data:`RESUMABLE_CHANGES`). ``estimate`` prints the plan and a measured
    ETA first (:func:`print_estimate`).
    """
    from ..train.setup import load_pretrained, prepare_finetune
    from .tracking import resolve_tracking_uri

    out = settings.out_dir
    settings_path = _settings_file(out)
    if settings_path.exists() and not resume:
        raise SearchError(f"{out}: a search named '{settings.name}' already exists; use --resume to continue it "
                          "or another --name")
    space_file = settings.space
    if resume:
        if not settings_path.exists():
            raise SearchError(f"{out}: no search named '{settings.name}' to resume")
        saved = SearchSettings.from_dict(json.loads(settings_path.read_text()))
        settings = resume_settings(saved, settings, explicit)
        space_file = str(out / "search_space.yaml")  # the space the search began with
        if verbose:
            print(f"resuming search {settings.name} with its saved settings: {len(settings.data)} data root(s), "
                  f"machines {settings.machines or 'all (generalized)'}, {settings.num_samples} trials, max "
                  f"{settings.max_epochs} epochs, space {settings.space}", flush=True)
    tracking_uri = resolve_tracking_uri(settings.tracking_uri)
    settings = replace(settings, tracking_uri=tracking_uri)

    # everything that can be wrong is found before anything is written
    if not Path(settings.pretrained).is_file():
        raise SearchError(f"--pretrained {settings.pretrained}: no such file")
    enc_cfg, _, _ = load_pretrained(settings.pretrained)
    space = load_search_space(space_file, depth=enc_cfg.depth, seed=settings.seed)
    setup = prepare_finetune(settings.data, settings.machines, settings.pretrained, cache_dir=settings.cache_dir,
                             quiet=verbose == 0)
    ray_init(address)
    check_resources(settings)
    if estimate:
        print_estimate(settings, space, setup)
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            shutil.copyfile(settings.space, out / "search_space.yaml")
            atomic_write_json(settings_path, settings.to_dict())
        return _run(settings, space, setup, out, resume, verbose, extra_callbacks)
    except BaseException:
        if made and not (out / "ray").exists():  # failed before its first trial: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(settings: SearchSettings, space, setup, out: Path, resume: bool, verbose: int,
         extra_callbacks: list | None) -> dict:
    from ray import tune

    from .tracking import MLflowTrialCallback, SearchTracker

    settings_path = _settings_file(out)
    tracking_uri = settings.tracking_uri
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
            max_concurrent_trials=settings.max_concurrent or None, reuse_actors=reuse_trial_actors()),
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
    best["out_dir"] = str(out)
    best["tracking_uri"] = tracking_uri
    best["trials"] = {s: int(n) for s, n in table.groupby("status")["trial_id"].nunique().items()}
    atomic_write_json(out / "best_config.json", best)
    from ..evaluate.search_plots import plot_search_progress

    started = table.dropna(subset=["epoch"]) if "epoch" in table else table
    plot_search_progress(started, out / "search_progress.png", settings.max_epochs)
    tracker.finish([out / "best_config.json", out / "trials.csv", out / "search_space.yaml", settings_path,
                    out / "search_progress.png"],
                   {METRIC: best["metric"]["value"], "best_budget_epochs": best["budget_epochs"]})
    return best


def pretrained_cache_key(data: list[str], extra: dict) -> str:
    blob = json.dumps({"data": sorted(str(Path(d).resolve()) for d in data), **extra}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def default_space(generalized: bool) -> str:
    return str(default_space_path(generalized))

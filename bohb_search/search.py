"""BOHB hyperparameter search in Ray Tune (paper 3.2): TuneBOHB + HyperBandForBOHB, η = 3.

* The trainable is the budget-aware :class:`~bohb_search.training.FinetuneTrainer`: one Tune
  iteration = ``epochs_per_iteration`` epochs (``--min-epochs``), and Ray Tune checkpoints it through
  ``state_dict()`` so a trial paused by Hyperband resumes exactly where it stopped.
* Features are read from the cache once by the driver and shared with every trial through Ray's
  object store (``tune.with_parameters``); the pre-trained encoder is made once and reused.
* Resuming after the driver died uses ``Tuner.restore``; TuneBOHB's own ``to_wrapper`` fails there with
  ``KeyError`` for trials it had not recorded yet (ray issue 39900), which :class:`ResumableTuneBOHB`
  repairs by recovering the trial's configuration from its result.
* Every trial is one MLflow child run (``tracking.MLflowTrialCallback``) under one parent run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.atomic import atomic_write_csv, atomic_write_text

from .configs import FinetuneConfig
from .spaces import SearchSpace, default_space_path, load_search_space

METRIC = "best_val_auc"  # validation AUC of the best epoch so far (what final-train keeps)
SEARCHERS = ("bohb", "random")
SCHEDULERS = ("hyperband_bohb", "hyperband", "asha", "fifo")
BOHB_PICKS_FILE = "bohb_picks.csv"  # per BOHB trial: drawn from the density model (1) or at random (0)
DEFAULT_SEARCHES_DIR = Path("results/searches")


class SearchError(ValueError):
    """A search that cannot start (name taken, bad settings); one line."""


@dataclass
class SearchSettings:
    """Everything one search needs; written to ``search_settings.json`` and logged to MLflow."""

    name: str
    data: list[str]
    machines: list[str] | None  # None = generalized (all machines pooled)
    pretrained: str
    space: str
    num_samples: int = 27
    max_epochs: int = 81  # Hyperband max_t, in epochs
    min_epochs: int = 1  # epochs per Tune iteration (the smallest budget)
    eta: int = 3
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0 = as many as resources allow
    max_failures: int = 0  # retries of a failing trial (FailureConfig)
    seed: int = 0
    storage_path: str = str(DEFAULT_SEARCHES_DIR)
    tracking_uri: str | None = None
    cache_dir: str | None = None
    batch_size: int = 256
    device: str = "auto"
    base_config: dict = field(default_factory=dict)  # FinetuneConfig fields fixed for every trial
    searcher: str = "bohb"  # "bohb" (TuneBOHB) | "random" (uniform samples of the same ConfigSpace)
    scheduler: str = "hyperband_bohb"  # "hyperband_bohb" | "hyperband" | "asha" | "fifo" (no early stopping)
    epoch_budget: int = 0  # stop the whole search once this many epochs were trained over all trials (0 = off)

    def __post_init__(self):
        if self.num_samples < 1:
            raise SearchError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.min_epochs < 1 or self.max_epochs < self.min_epochs:
            raise SearchError(f"--min-epochs ({self.min_epochs}) must be >= 1 and <= --max-epochs ({self.max_epochs})")
        if self.max_epochs % self.min_epochs:
            raise SearchError(f"--max-epochs ({self.max_epochs}) must be a multiple of --min-epochs ({self.min_epochs})")
        if self.eta < 2:
            raise SearchError(f"--eta must be >= 2, got {self.eta}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise SearchError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        if self.searcher not in SEARCHERS:
            raise SearchError(f"searcher must be one of {', '.join(SEARCHERS)}, got {self.searcher!r}")
        if self.scheduler not in SCHEDULERS:
            raise SearchError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if (self.searcher == "bohb") != (self.scheduler == "hyperband_bohb"):
            raise SearchError("TuneBOHB needs the HyperBandForBOHB scheduler and vice versa")
        if self.epoch_budget < 0:
            raise SearchError(f"epoch_budget must be >= 0, got {self.epoch_budget}")

    @property
    def out_dir(self) -> Path:
        return Path(self.storage_path).resolve() / self.name

    @property
    def generalized(self) -> bool:
        return self.machines is None

    def to_dict(self) -> dict:
        return asdict(self)


# =================================================================================================
# searcher and trainable


def _resumable_bohb_class():
    from ray.tune.search.bohb import TuneBOHB

    class ResumableTuneBOHB(TuneBOHB):
        """TuneBOHB that survives ``Tuner.restore`` (ray issue 39900).

        After a restore, trials that were created after the searcher's last saved state report
        results for ids the searcher never recorded, and ``to_wrapper`` raised ``KeyError``. The
        configuration is in every (flattened) result as ``config/<name>``, so it is recovered there.
        """

        def __init__(self, *args, picks_path: str | Path | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            # trial id -> whether hpbandster drew it from its density model (True) or at random
            # (False); BOHB samples at random until a budget has 2d + 2 results, and users comparing
            # it with random search need to know whether the model ever acted
            self.picks: dict[str, bool] = {}
            self._picks_path = None if picks_path is None else str(picks_path)

        def suggest(self, trial_id: str):
            info: dict = {}
            get_config = self.bohber.get_config if getattr(self, "bohber", None) is not None else None
            if get_config is not None:
                def recording_get_config(budget):
                    config, extra = get_config(budget)
                    info.update(extra or {})
                    return config, extra

                self.bohber.get_config = recording_get_config
            try:
                config = super().suggest(trial_id)
            finally:
                if get_config is not None:
                    del self.bohber.get_config  # back to the class's method
            if config is not None and "model_based_pick" in info:
                self.picks[trial_id] = bool(info["model_based_pick"])
                if self._picks_path:
                    rows = "".join(f"{t},{int(v)}\n" for t, v in self.picks.items())
                    atomic_write_text(Path(self._picks_path), "trial_id,model_based_pick\n" + rows)
            return config

        def to_wrapper(self, trial_id: str, result: dict):
            if trial_id not in self.trial_to_params:
                self.trial_to_params[trial_id] = {
                    k: result[f"config/{k}"] for k in self._space.keys() if f"config/{k}" in result}
            return super().to_wrapper(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            self.trial_to_params.pop(trial_id, None)
            self.paused.discard(trial_id)
            self.running.discard(trial_id)

    return ResumableTuneBOHB


def _random_configspace_searcher_class():
    from ray.tune.search import Searcher

    class ConfigSpaceRandomSearch(Searcher):
        """Uniform random samples of the SAME ConfigurationSpace BOHB searches (for fair comparisons).

        ``max_concurrent`` counts *running* trials only, as TuneBOHB does: Hyperband pauses a trial at
        each rung until its bracket is full, and Ray's ConcurrencyLimiter would count that paused
        trial as live, so with ``max_concurrent=1`` a bracket never got a second trial and every trial
        ran to ``max_t`` (no early stopping at all). The scheduler reports pauses through
        ``on_pause``/``on_unpause`` (HyperBandForBOHB calls them).
        """

        def __init__(self, space, metric: str, mode: str, seed: int = 0, max_concurrent: int = 0):
            super().__init__(metric=metric, mode=mode)
            self._space = space
            self._space.seed(seed)
            self.max_concurrent = int(max_concurrent or 0)
            self.running: set[str] = set()  # suggested and not paused or finished

        def set_max_concurrency(self, max_concurrent: int) -> bool:
            # Tune then leaves this searcher unwrapped (no ConcurrencyLimiter around it)
            self.max_concurrent = int(max_concurrent or 0)
            return True

        def suggest(self, trial_id: str):
            if self.max_concurrent and len(self.running) >= self.max_concurrent:
                return None
            self.running.add(trial_id)
            return {k: _py(v) for k, v in dict(self._space.sample_configuration()).items()}

        def on_pause(self, trial_id: str):
            self.running.discard(trial_id)

        def on_unpause(self, trial_id: str):
            self.running.add(trial_id)

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
            self.running.discard(trial_id)

        def save(self, checkpoint_path: str):
            import pickle

            with open(checkpoint_path, "wb") as fh:
                pickle.dump(self._space, fh)

        def restore(self, checkpoint_path: str):
            import pickle

            with open(checkpoint_path, "rb") as fh:
                self._space = pickle.load(fh)

    return ConfigSpaceRandomSearch


def _epoch_budget_stopper(budget: int):
    from ray.tune.stopper import Stopper

    class EpochBudgetStopper(Stopper):
        """Ends the whole experiment once ``budget`` epochs were trained, summed over all trials."""

        def __init__(self):
            self.seen: dict[str, int] = {}

        def __call__(self, trial_id, result):
            self.seen[trial_id] = max(self.seen.get(trial_id, 0), int(result.get("epoch", 0)))
            return False

        def stop_all(self):
            return sum(self.seen.values()) >= budget

    return EpochBudgetStopper()


def make_searcher_and_scheduler(settings: "SearchSettings", space: SearchSpace):
    """The (search algorithm, scheduler) pair named by the settings; max_t is in Tune iterations."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB

    max_t = settings.max_epochs // settings.min_epochs
    if settings.searcher == "bohb":
        searcher = _resumable_bohb_class()(space=space.configspace, metric=METRIC, mode="max", seed=settings.seed,
                                           max_concurrent=settings.max_concurrent,
                                           picks_path=settings.out_dir / BOHB_PICKS_FILE)
    else:
        searcher = _random_configspace_searcher_class()(space.configspace, METRIC, "max", settings.seed,
                                                        max_concurrent=settings.max_concurrent)
    if settings.scheduler in ("hyperband_bohb", "hyperband"):
        # "hyperband" is the same synchronous Hyperband as BOHB's, so that random search and BOHB
        # differ only in how configurations are sampled. Ray's classic HyperBandScheduler is not used:
        # it never tells the searcher that a trial was paused at a rung, so a concurrency limit counts
        # paused trials and brackets stop filling.
        scheduler = HyperBandForBOHB(time_attr="training_iteration", max_t=max_t, reduction_factor=settings.eta,
                                     metric=METRIC, mode="max")
    elif settings.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=1,
                                  reduction_factor=settings.eta, metric=METRIC, mode="max")
    else:
        scheduler = FIFOScheduler()
    return searcher, scheduler


def make_trainable():
    """The Ray Tune class trainable (built lazily so importing this module does not import Ray)."""
    from ray import tune

    from models import load_checkpoint, save_checkpoint

    from .pipeline import build_trainer

    class FinetuneTrainable(tune.Trainable):
        """One trial: a FinetuneTrainer advanced ``epochs_per_iteration`` epochs per Tune step."""

        def setup(self, config, ft_setup=None, space=None, base_config=None, epochs_per_iteration=1,
                  device="auto", threads=1):
            import torch

            torch.set_num_threads(max(1, int(threads)))
            self._args = (ft_setup, space, base_config, device)
            self.epochs_per_iteration = epochs_per_iteration
            self._build(config)

        def _build(self, config):
            ft_setup, space, base_config, device = self._args
            cfg = space.to_finetune_config(dict(config), FinetuneConfig.from_dict(base_config))
            self.trainer = build_trainer(ft_setup, cfg, "ssm", device)
            self.restored_from_epoch = 0
            # testing hook (fault injection): trials whose lr exceeds this value raise at their first step
            limit = os.environ.get("BOHB_SEARCH_INJECT_FAULT_LR_ABOVE")
            self.inject_fault = limit is not None and cfg.lr > float(limit)

        def step(self):
            if self.inject_fault:
                raise RuntimeError(f"injected fault (lr={self.trainer.cfg.lr:g} > $BOHB_SEARCH_INJECT_FAULT_LR_ABOVE)")
            t0 = time.perf_counter()
            for _ in range(self.epochs_per_iteration):
                m = self.trainer.step()
                if m["done"]:
                    break
            m = dict(m)
            m["train_seconds"] = time.perf_counter() - t0
            m["restored_from_epoch"] = self.restored_from_epoch  # 0 = never paused; else the checkpoint's epoch
            early = bool(m.pop("done")) and self.trainer.epoch < self.trainer.cfg.max_epochs
            m["early_stopped"] = early
            if early or self.trainer.epoch >= self.trainer.cfg.max_epochs:
                # early-stopped, or the full budget reached: Tune ends the trial (needed without a
                # Hyperband scheduler, e.g. random search + FIFO, which never stops a trial itself)
                m["done"] = True
            return m

        def reset_config(self, new_config):
            """Actor reuse: a new trial in this worker process gets a fresh trainer (data stay loaded)."""
            self._build(new_config)
            return True

        def save_checkpoint(self, checkpoint_dir):
            save_checkpoint(Path(checkpoint_dir) / "trainer.pt", self.trainer.state_dict())

        def load_checkpoint(self, checkpoint):
            self.trainer.load_state_dict(load_checkpoint(Path(checkpoint) / "trainer.pt"))
            self.restored_from_epoch = self.trainer.epoch

    return FinetuneTrainable


# =================================================================================================
# running a search


def _settings_file(out: Path) -> Path:
    return out / "search_settings.json"


def _ray_init(address: str | None, num_cpus: int | None = None) -> None:
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


def trials_table(result_grid, settings: SearchSettings) -> pd.DataFrame:
    """One row per trial and budget (epoch) from Ray's ResultGrid, with config, status and error."""
    frames = []
    for res in result_grid:
        trial_id = res.metrics.get("trial_id") if res.metrics else None
        if trial_id is None and res.path:
            trial_id = Path(res.path).name
        config = {f"config/{k}": v for k, v in (res.config or {}).items()}
        df = res.metrics_dataframe
        if df is None or df.empty:
            df = pd.DataFrame([{"trial_id": trial_id}])
        df = df.copy()
        df["trial_id"] = trial_id
        last_epoch = int(df["epoch"].max()) if "epoch" in df and df["epoch"].notna().any() else 0
        if res.error is not None:
            status = "FAILED"
        elif last_epoch == 0:
            status = "NOT_STARTED"  # created, then the search ended (epoch budget) before its first result
        elif bool(df.get("early_stopped", pd.Series([False])).fillna(False).astype(bool).any()) or \
                last_epoch >= settings.max_epochs:
            status = "FINISHED"
        else:
            status = "KILLED"  # stopped by the Hyperband scheduler before max_epochs
        df["status"] = status
        df["error"] = "" if res.error is None else " ".join(str(res.error).split())[-500:]
        for k, v in config.items():
            df[k] = v if not isinstance(v, (list, dict)) else json.dumps(v)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    picks_path = settings.out_dir / BOHB_PICKS_FILE
    if picks_path.exists() and "trial_id" in table:
        picks = pd.read_csv(picks_path, dtype={"trial_id": str})
        table = table.merge(picks.drop_duplicates("trial_id", keep="last"), on="trial_id", how="left")
    keep_first = ["trial_id", "status", "epoch", "val_auc", METRIC, "error"]
    cols = [c for c in keep_first if c in table] + sorted(c for c in table if c not in keep_first)
    drop = {"config", "hostname", "node_ip", "pid", "date", "checkpoint_dir_name", "should_checkpoint"}
    return table[[c for c in cols if c not in drop]]


def best_config(table: pd.DataFrame, space: SearchSpace, settings: SearchSettings) -> dict:
    ok = table[table["status"] != "FAILED"].dropna(subset=[METRIC]) if METRIC in table else table.iloc[0:0]
    if ok.empty:
        raise SearchError(f"search {settings.name}: every trial failed; see trials.csv")
    # best metric; ties → the larger budget (more evidence)
    row = ok.sort_values([METRIC, "epoch"], ascending=[False, False]).iloc[0]
    hp = {c[len("config/"):]: _py(row[c]) for c in ok.columns if c.startswith("config/") and pd.notna(row[c])}
    cfg = space.to_finetune_config(hp, FinetuneConfig.from_dict(settings.base_config))
    hp = {k: getattr(cfg, k) for k in hp}  # typed as FinetuneConfig declares them (pandas made ints floats)
    return {
        "search": settings.name,
        "hyperparameters": hp,
        "finetune_config": cfg.to_dict(),
        "metric": {"name": METRIC, "value": float(row[METRIC]), "val_auc_at_budget": float(row.get("val_auc", math.nan))},
        "budget_epochs": int(row["epoch"]),
        "trial_id": str(row["trial_id"]),
        "space_file": str(space.path),
        "space_sha256": space.sha256,
        "data": settings.data,
        "machines": settings.machines,
        "generalized": settings.generalized,
        "pretrained": settings.pretrained,
        "seed": settings.seed,
        "max_epochs": settings.max_epochs,
        "eta": settings.eta,
    }


def _py(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def run_search(settings: SearchSettings, resume: bool = False, address: str | None = None,
               verbose: int = 1, extra_callbacks: list | None = None) -> dict:
    """Run (or resume) one BOHB search; returns the best configuration (also in best_config.json)."""
    from ray import tune

    from .pipeline import load_pretrained, prepare_finetune
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
        settings = SearchSettings(**{**saved, "tracking_uri": settings.tracking_uri or saved.get("tracking_uri")})
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = resolve_tracking_uri(settings.tracking_uri)
    settings.tracking_uri = tracking_uri

    enc_cfg, _, _ = load_pretrained(settings.pretrained)
    space = load_search_space(settings.space, depth=enc_cfg.depth, seed=settings.seed)
    if not resume:
        shutil.copyfile(settings.space, out / "search_space.yaml")
        atomic_write_text(settings_path, json.dumps(settings.to_dict(), indent=2) + "\n")

    setup = prepare_finetune(settings.data, settings.machines, settings.pretrained, cache_dir=settings.cache_dir,
                             quiet=verbose == 0)
    _ray_init(address)
    epochs_per_iteration = settings.min_epochs
    base = {**settings.base_config, "max_epochs": settings.max_epochs, "batch_size": settings.batch_size,
            "seed": settings.seed}
    settings.base_config = base
    trainable = tune.with_parameters(
        make_trainable(), ft_setup=setup, space=space, base_config=base, epochs_per_iteration=epochs_per_iteration,
        device=settings.device, threads=max(1, int(settings.cpus_per_trial)))
    trainable = tune.with_resources(trainable, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    experiment = f"bohb-search/{settings.name}"
    callbacks = [MLflowTrialCallback(tracking_uri, experiment, settings.name, settings.max_epochs),
                 *(extra_callbacks or [])]
    run_config = tune.RunConfig(
        name="ray", storage_path=str(out), callbacks=callbacks, verbose=verbose,
        stop=_epoch_budget_stopper(settings.epoch_budget) if settings.epoch_budget else None,
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
    )
    # snapshot the experiment state at least every second (Ray's "auto" waits >= 10 s), so that a
    # driver killed mid-search loses at most the trials created in the last second
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    tracker = SearchTracker(tracking_uri, experiment, settings.name)
    tracker.log_settings({k: v for k, v in settings.to_dict().items() if k != "base_config"})
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
    atomic_write_text(out / "best_config.json", json.dumps(best, indent=2, default=_py) + "\n")
    from .plots import plot_search_progress

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

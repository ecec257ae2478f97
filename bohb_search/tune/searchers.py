"""Searchers and schedulers: BOHB that survives ``Tuner.restore``, random search over the same space,
and a stopper that ends a search at a total epoch budget.

* TuneBOHB's own ``to_wrapper`` fails after ``Tuner.restore`` with ``KeyError`` for trials it had not
  recorded yet (ray issue 39900); :class:`ResumableTuneBOHB` recovers the trial's configuration from
  its result.
* Every BOHB trial records whether hpbandster drew its configuration from the density model
  (``bohb_picks.csv``): BOHB samples at random until one budget holds 2d + 2 results.
"""

from __future__ import annotations

import math
from pathlib import Path

from data.atomic import atomic_write_text, to_python

from .settings import METRIC, SearchSettings
from .spaces import SearchSpace

BOHB_PICKS_FILE = "bohb_picks.csv"  # per BOHB trial: drawn from the density model (1) or at random (0)


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
            return {k: to_python(v) for k, v in dict(self._space.sample_configuration()).items()}

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


def epoch_budget_stopper(budget: int):
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


def make_searcher_and_scheduler(settings: SearchSettings, space: SearchSpace):
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


def _successive_halving(live: int, n0: int, r0: int, halves: int, max_t: int, eta: int) -> int:
    """Iterations trained by one bracket of ``live`` trials (of ``n0`` places) starting at budget ``r0``;
    a paused trial resumes from its checkpoint, so a promotion trains only the difference."""
    total, n, r = live * r0, n0, r0
    for _ in range(halves):
        n = math.ceil(n / eta)
        live = min(live, n)
        r_next = min(r * eta, max_t)
        total += live * (r_next - r)
        r = r_next
    return total


def planned_iterations(settings: SearchSettings) -> int:
    """Tune iterations the search's scheduler plans for ``num_samples`` trials (before early stopping).

    HyperBandForBOHB (both "hyperband" schedulers) fills its largest bracket first: with max_t = 81 and
    η = 3 that bracket has 81 places starting at 1 iteration, so 27 trials train 27·3 + 9·6 + 3·18 + 1·54
    = 243 iterations (Ray keeps ceil(n/η) of the bracket's PLACES at each rung, hence all 27 reach 3).
    ASHA is planned as one such bracket of num_samples places; FIFO trains every trial to max_t.
    """
    max_t = settings.max_epochs // settings.min_epochs
    eta, remaining = settings.eta, settings.num_samples
    if settings.scheduler == "fifo":
        return remaining * max_t
    if settings.scheduler == "asha":
        halves = max(0, round(math.log(max_t) / math.log(eta)))
        return _successive_halving(remaining, remaining, 1, halves, max_t, eta)
    s_max_1 = round(math.log(max_t) / math.log(eta)) + 1  # as ray.tune.schedulers.HyperBandScheduler
    total, band = 0, 0
    while remaining > 0:
        if band == s_max_1:
            band = 0
        s = s_max_1 - band - 1
        band += 1
        r0 = int(max_t * eta ** (-s))
        if r0 == 0:
            continue
        n0 = math.ceil(s_max_1 / (s + 1) * eta**s)
        live = min(n0, remaining)
        remaining -= live
        total += _successive_halving(live, n0, r0, s, max_t, eta)
    return total

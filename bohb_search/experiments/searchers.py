"""BOHB vs random + HyperBand vs random + ASHA vs random without early stopping.

Every run has the same trainable, search space, data, ``max_epochs``/``eta`` and total epoch budget;
only the searcher, the scheduler and the seed change. The runs' best-validation-AUC-vs-budget curves
are compared, with the budget each needs to reach plain random search's final best.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from data.atomic import atomic_write_csv, atomic_write_text

from ..evaluate.search_plots import budget_curve
from .common import check_seeds, check_settings, machines_present, mean_std, plus_minus, say, small_encoder

# searcher comparison: display name -> (searcher, scheduler, folder slug)
SEARCHER_VARIANTS: dict[str, tuple[str, str, str]] = {
    "BOHB": ("bohb", "hyperband_bohb", "bohb"),
    "Random + HyperBand": ("random", "hyperband", "random_hyperband"),
    "Random + ASHA": ("random", "asha", "random_asha"),
    "Random (no early stopping)": ("random", "fifo", "random_fifo"),
}
REFERENCE_SEARCHER = "Random (no early stopping)"


def _result_order_callback():
    from ray.tune import Callback

    class ResultOrder(Callback):
        """Arrival order of every trial result at the driver (one row per reported epoch)."""

        def __init__(self):
            self.rows: list[dict] = []
            self.t0 = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.rows.append({"seq": len(self.rows), "trial_id": str(trial.trial_id),
                              "epoch": result.get("epoch"), "wall_s": time.time() - self.t0})

    return ResultOrder()


def budget_to_reach(curve: pd.DataFrame, target: float) -> float:
    """The first budget at which ``curve`` reaches ``target`` (NaN if never)."""
    hit = curve[curve["best"] >= target - 1e-12]
    return float(hit["budget"].iloc[0]) if len(hit) else math.nan


def summarize_searchers(curves: pd.DataFrame, reference: str = REFERENCE_SEARCHER) -> tuple[pd.DataFrame, float]:
    """Per searcher: final best (mean ± std over seeds), budget used, and the budget needed to reach
    the mean final best of ``reference`` (plain random search)."""
    finals = curves.groupby(["searcher", "seed"]).agg(final=("best", "last"), used=("budget", "max"))
    target = float(finals.loc[reference, "final"].mean()) if reference in finals.index.get_level_values(0) else math.nan
    rows = []
    for searcher in dict.fromkeys(curves["searcher"]):
        f = finals.loc[searcher]
        need = [budget_to_reach(g, target) for _, g in curves[curves["searcher"] == searcher].groupby("seed")]
        reached = [b for b in need if np.isfinite(b)]
        mean, std = mean_std(f["final"].tolist())
        rows.append({"searcher": searcher, "seeds": len(f), "final_best_mean": mean, "final_best_std": std,
                     "budget_used_mean": float(f["used"].mean()),
                     "budget_to_random_best_mean": float(np.mean(reached)) if reached else math.nan,
                     "reached_random_best": f"{len(reached)}/{len(need)}"})
    return pd.DataFrame(rows), target


def reference_searcher(names: Sequence[str]) -> str:
    """The searcher whose final best the others must reach: plain random search when it ran, else the
    first random searcher of the comparison (e.g. random + HyperBand when comparing samplers only)."""
    names = list(names)
    if REFERENCE_SEARCHER in names:
        return REFERENCE_SEARCHER
    return next((n for n in names if SEARCHER_VARIANTS.get(n, ("",))[0] == "random"), names[0])


def searchers_markdown(summary: pd.DataFrame, reference_value: float, reference: str = REFERENCE_SEARCHER) -> str:
    from ..evaluate.tables import to_markdown

    view = pd.DataFrame({
        "Searcher": summary["searcher"],
        "seeds": summary["seeds"],
        "final best val AUC": [plus_minus(m, s, 3) for m, s in zip(summary["final_best_mean"], summary["final_best_std"])],
        "epochs used": [f"{b:.1f}" for b in summary["budget_used_mean"]],
        f"epochs to reach {reference}'s final best ({reference_value:.3f})": [
            f"{b:.1f} ({r})" if np.isfinite(b) else f"not reached ({r})"
            for b, r in zip(summary["budget_to_random_best_mean"], summary["reached_random_best"])],
    })
    if "model_based_picks" in summary and summary["model_based_picks"].astype(str).str.len().gt(0).any():
        # BOHB only: how many of its configurations came from the density model rather than at random
        view["model-based picks"] = summary["model_based_picks"].fillna("").astype(str).replace("", "–").to_numpy()
    return to_markdown(view)


def run_compare_searchers(
    data_roots: Sequence[str | Path],
    machine: str,
    pretrained: str | Path | None,
    out_dir: str | Path,
    budget_epochs: int,
    seeds: Sequence[int] = (0, 1, 2),
    max_epochs: int = 9,
    eta: int = 3,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    device: str = "auto",
    space: str | Path | None = None,
    cpus_per_trial: float = 1.0,
    max_concurrent: int = 0,
    tracking_uri: str | None = None,
    searchers: Sequence[str] | None = None,
    base_config: dict | None = None,
    seconds: float = 10.0,
    dim: int = 64,
    depth: int = 4,
    pretrain_epochs: int = 2,
    quiet: bool = True,
) -> dict:
    """BOHB vs random + HyperBand vs random + ASHA vs random without early stopping.

    Every run has the same trainable, search space, data, ``max_epochs``/``eta`` and total budget
    (``epoch_budget = budget_epochs`` epochs summed over its trials); only the searcher, the scheduler
    and the seed change. Without ``pretrained`` an encoder (``dim``, ``depth``) is pre-trained once on
    ``data_roots`` for ``pretrain_epochs`` and shared by all runs. Writes ``curves.csv``,
    ``summary.csv``, ``summary.md`` and ``searchers.png`` into ``out_dir`` (the searches themselves under
    ``out_dir/searches``, MLflow in ``out_dir/mlflow.db`` unless ``tracking_uri``). Returns a dict with
    ``summary`` and ``curves`` (DataFrames), ``reference`` (random search's mean final best), the
    ``best_configs`` per run and the written ``paths``.
    """
    from data.config import RunOptions

    from ..train.configs import FinetuneConfig, PretrainConfig
    from ..train.runs import run_pretrain
    from ..tune.runner import default_space, run_search
    from ..tune.settings import SearchSettings

    seeds = check_seeds(seeds)
    if budget_epochs < 1:
        raise ValueError(f"--budget-epochs must be >= 1, got {budget_epochs}")
    if budget_epochs < max_epochs:
        raise ValueError(f"--budget-epochs ({budget_epochs}) must be at least --max-epochs ({max_epochs}) so that "
                         "random search without early stopping can finish one trial")
    names = list(searchers) if searchers else list(SEARCHER_VARIANTS)
    unknown = [n for n in names if n not in SEARCHER_VARIANTS]
    if unknown:
        raise ValueError(f"unknown searcher(s) {', '.join(unknown)}; choose from {', '.join(SEARCHER_VARIANTS)}")
    data_roots = [str(Path(d)) for d in data_roots]
    machines_present(data_roots, [machine])
    if base_config:
        FinetuneConfig(**base_config)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if pretrained is None:
        from data.audio import AudioConfig
        from data.features import FeatureConfig

        say(f"pre-training a shared encoder (dim {dim}, depth {depth}, {pretrain_epochs} epochs)", quiet)
        pretrained = run_pretrain(PretrainConfig(epochs=pretrain_epochs, batch_size=batch_size), data_roots,
                                  out / "pretrain", small_encoder("ssm", 4, dim, depth),
                                  FeatureConfig(audio=AudioConfig(seconds=seconds)),
                                  RunOptions(cache_dir=cache_dir, device=device, quiet=True))
    pretrained = Path(pretrained)
    if not pretrained.exists():
        raise ValueError(f"--pretrained: {pretrained} does not exist")
    space = str(space or default_space(False))
    settings_common = {"data": [str(Path(d).resolve()) for d in data_roots], "machine": machine,
                       "pretrained": str(pretrained.resolve()), "budget_epochs": budget_epochs, "seeds": list(seeds),
                       "max_epochs": max_epochs, "eta": eta, "batch_size": batch_size, "space": space,
                       "base_config": base_config or {}, "searchers": names}
    check_settings(out / "compare_settings.json", settings_common, "a searcher comparison")
    tracking_uri = tracking_uri or f"sqlite:///{out / 'mlflow.db'}"

    curves, best_configs = [], {}
    model_picks: dict[str, list[int]] = {}  # BOHB: [configurations from its density model, all configurations]
    for name in names:
        searcher, scheduler, slug = SEARCHER_VARIANTS[name]
        for seed in seeds:
            run_name = f"{slug}-s{seed}"
            run_dir = out / "searches" / run_name
            if not (run_dir / "best_config.json").exists():
                say(f"search {name}, seed {seed}: budget {budget_epochs} epochs", quiet)
                settings = SearchSettings(
                    name=run_name, data=data_roots, machines=[machine], pretrained=str(pretrained), space=space,
                    num_samples=budget_epochs, max_epochs=max_epochs, eta=eta, cpus_per_trial=cpus_per_trial,
                    max_concurrent=max_concurrent, storage_path=str(out / "searches"),
                    tracking_uri=tracking_uri, cache_dir=None if cache_dir is None else str(cache_dir),
                    device=device, finetune={**(base_config or {}), "batch_size": batch_size, "seed": seed},
                    searcher=searcher, scheduler=scheduler, epoch_budget=budget_epochs)
                order_cb = _result_order_callback()
                resume = (run_dir / "search_settings.json").exists()
                t0 = time.perf_counter()
                run_search(settings, resume=resume, verbose=0, extra_callbacks=[order_cb])
                order = pd.DataFrame(order_cb.rows, columns=["seq", "trial_id", "epoch", "wall_s"])
                if resume and (run_dir / "result_order.csv").exists():
                    old = pd.read_csv(run_dir / "result_order.csv")
                    order["seq"] += len(old)
                    order = pd.concat([old, order], ignore_index=True)
                atomic_write_csv(order, run_dir / "result_order.csv")
                say(f"search {name}, seed {seed}: {time.perf_counter() - t0:.0f} s", quiet)
            trials = pd.read_csv(run_dir / "trials.csv")
            if "model_based_pick" in trials:
                per_trial = trials.drop_duplicates("trial_id")["model_based_pick"].dropna()
                model_picks.setdefault(name, [0, 0])
                model_picks[name][0] += int(per_trial.sum())
                model_picks[name][1] += int(len(per_trial))
            order_path = run_dir / "result_order.csv"
            order = pd.read_csv(order_path) if order_path.exists() else None
            curve = budget_curve(trials, order)
            curve.insert(0, "seed", seed)
            curve.insert(0, "searcher", name)
            curves.append(curve)
            best_configs[run_name] = json.loads((run_dir / "best_config.json").read_text())
    curves_df = pd.concat(curves, ignore_index=True)
    reference_name = reference_searcher(names)
    summary, reference = summarize_searchers(curves_df, reference_name)
    summary["model_based_picks"] = [f"{model_picks[n][0]}/{model_picks[n][1]}" if n in model_picks else ""
                                    for n in summary["searcher"]]
    paths = {"curves": out / "curves.csv", "summary": out / "summary.csv", "markdown": out / "summary.md",
             "plot": out / "searchers.png"}
    atomic_write_csv(curves_df, paths["curves"])
    atomic_write_csv(summary, paths["summary"])
    note = (f"\nMachine {machine}; budget {budget_epochs} epochs per run (summed over trials), max_epochs "
            f"{max_epochs}, η = {eta}; seeds {list(seeds)}; reference = mean final best of "
            f"{reference_name} = {reference:.4f}.\n")
    atomic_write_text(paths["markdown"], searchers_markdown(summary, reference, reference_name) + note)
    from ..evaluate.search_plots import plot_budget_curves

    plot_budget_curves({n: g[["budget", "best", "seed"]].reset_index(drop=True)
                        for n, g in curves_df.groupby("searcher", sort=False)}, paths["plot"],
                       reference=reference if np.isfinite(reference) else None)
    return {"summary": summary, "curves": curves_df, "reference": reference, "reference_searcher": reference_name,
            "best_configs": best_configs,
            "paths": paths}

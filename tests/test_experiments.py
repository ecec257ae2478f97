"""The Table 1 ablation and the searcher comparison: real training, real Ray, tiny synthetic data."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest

from bohb_search.cli.experiment_cmds import add_ablate_parser, add_compare_searchers_parser
from bohb_search.evaluate.search_plots import budget_curve
from bohb_search.experiments.ablation import TABLE1_ROWS, run_ablation
from bohb_search.experiments.searchers import (
    REFERENCE_SEARCHER,
    SEARCHER_VARIANTS,
    reference_searcher,
    run_compare_searchers,
    summarize_searchers,
)

SECONDS = 2.0


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from data.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("exp") / "data"
    synthesize(root, SynthConfig(machines=("fan", "valve"), train_source=12, train_target=2, test_per_cell=4,
                                 seconds=SECONDS), workers=1, progress=False)
    return root


# ---- pure functions --------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _shutdown_ray_after_module():
    """compare-searchers runs Ray inside this process; leave no Ray behind for later tests."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()



def test_budget_curve_follows_arrival_order_and_counts_epochs():
    trials = pd.DataFrame({
        "trial_id": ["a", "a", "a", "b", "b", "c"],
        "epoch": [1, 2, 3, 1, 2, 1],
        "val_score": [0.5, 0.6, 0.55, 0.7, 0.65, 0.4],
        "best_val_score": [0.5, 0.6, 0.6, 0.7, 0.7, 0.4],
        "status": ["FINISHED"] * 5 + ["FAILED"],
        "time_total_s": [1, 2, 3, 1, 2, 1],
    })
    # b's first epoch arrived after a's second, a's third after b's second
    order = pd.DataFrame({"seq": [0, 1, 2, 3, 4], "trial_id": ["a", "a", "b", "b", "a"], "epoch": [1, 2, 1, 2, 3]})
    curve = budget_curve(trials, order)
    assert curve["budget"].tolist() == [1, 2, 3, 4, 5]  # the failed trial spends nothing
    assert curve["best"].tolist() == [0.5, 0.6, 0.7, 0.7, 0.7]
    assert curve["trial_id"].tolist() == ["a", "a", "b", "b", "a"]
    # without an order the rows go by time_total_s, a trial's epochs still counted once each
    fallback = budget_curve(trials)
    assert fallback["budget"].tolist() == [1, 2, 3, 4, 5] and fallback["best"].iloc[-1] == 0.7


def test_summary_reports_not_reached():
    rows = []
    for seed, (r, b) in enumerate([(0.8, 0.7), (0.9, 0.75)]):
        rows += [{"searcher": REFERENCE_SEARCHER, "seed": seed, "budget": 9, "best": r - 0.1},
                 {"searcher": REFERENCE_SEARCHER, "seed": seed, "budget": 18, "best": r},
                 {"searcher": "BOHB", "seed": seed, "budget": 5, "best": b},
                 {"searcher": "BOHB", "seed": seed, "budget": 18, "best": b}]
    summary, ref = summarize_searchers(pd.DataFrame(rows))
    assert ref == pytest.approx(0.85)
    s = summary.set_index("searcher")
    assert s.loc["BOHB", "reached_random_best"] == "0/2" and math.isnan(s.loc["BOHB", "budget_to_random_best_mean"])
    assert s.loc[REFERENCE_SEARCHER, "reached_random_best"] == "1/2"  # seed 1 (0.9) reaches 0.85 at 18
    assert s.loc[REFERENCE_SEARCHER, "budget_to_random_best_mean"] == 18
    assert s.loc["BOHB", "final_best_mean"] == pytest.approx(0.725)


def test_parsers_and_user_errors(tiny_set, tmp_path):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_ablate_parser(sub)
    add_compare_searchers_parser(sub)
    args = parser.parse_args(["ablate", "--data", str(tiny_set), "--machines", "fan", "valve", "--quick",
                              "--seeds", "2", "--out", str(tmp_path / "a")])
    assert args.machines == ["fan", "valve"] and args.seeds == 2 and callable(args.func)
    args = parser.parse_args(["compare-searchers", "--data", str(tiny_set), "--machine", "fan",
                              "--budget-epochs", "12", "--seeds", "3", "--out", str(tmp_path / "c")])
    assert args.budget_epochs == 12 and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["ablate", "--data", str(tiny_set), "--seeds", "0"])
    args = parser.parse_args(["ablate", "--data", str(tiny_set), "--machines", "pump", "--quick",
                              "--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="no clips for pump"):
        args.func(args)
    with pytest.raises(ValueError, match="at least --max-epochs"):
        run_compare_searchers([tiny_set], "fan", None, tmp_path / "c", budget_epochs=3, max_epochs=9)
    with pytest.raises(ValueError, match="unknown searcher"):
        run_compare_searchers([tiny_set], "fan", None, tmp_path / "c", budget_epochs=9, searchers=["grid"])
    assert not (tmp_path / "a" / "runs").exists()  # nothing trained before the errors


# ---- real runs -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_ablation_has_every_row_of_table1(tiny_set, tmp_path):
    out = tmp_path / "ablation"
    table = run_ablation([tiny_set], out, machines=("fan",), seeds=(0,), quick=True, seconds=SECONDS,
                         device="cpu")
    assert list(zip(table["component"], table["configuration"])) == [r[:2] for r in TABLE1_ROWS]
    assert (table["n_seeds"] == 1).all()
    t = table.set_index("configuration")
    pre = ["r = 4 (proposed)", "r = 1 (no unshuffle)"]
    # unshuffle rows: pre-training time per epoch, accuracy and mAP; no AUCs
    assert (t.loc[pre, "time_or_latency"] > 0).all() and t.loc[pre, "val_map"].between(0, 1).all()
    assert t.loc[pre, "val_accuracy"].between(0, 1).all() and t.loc[pre, "auc_source"].isna().all()
    # r = 1 has 16x the tokens of r = 4: its epochs are slower on any hardware
    others = table[~table["configuration"].isin(pre)]
    for m in ("auc_source", "auc_target", "pauc"):
        assert np.isfinite(others[m]).all() and others[m].between(0, 1).all(), m
    backbone = table[table["component"] == "Backbone"]
    assert (backbone["time_or_latency"] > 0).all() and backbone["time_unit"].str.startswith("ms").all()
    # the variants really are different runs: their fine-tuning configs differ as Table 1 says
    runs = pd.read_csv(out / "runs.csv")
    variants = runs.dropna(subset=["variant"]).set_index("run")["variant"]
    assert variants["ft:full"] == "pOE + GRL" and variants["ft:poe_only"] == "pOE only"
    assert variants["ft:ocsvdd_grl"] == "OC-SVDD + GRL" and variants["ft:ocsvdd_only"] == "OC-SVDD only"
    for name in ("ablation.csv", "ablation.md", "ablation.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "ablation.md").read_text()
    assert all(cfg in md for _, cfg, _ in TABLE1_ROWS)
    assert pd.read_csv(out / "ablation.csv").shape[0] == len(TABLE1_ROWS)
    # a second call with other settings into the same folder is refused, not mixed
    with pytest.raises(ValueError, match="other settings"):
        run_ablation([tiny_set], out, machines=("valve",), seeds=(0,), quick=True, seconds=SECONDS, device="cpu")


@pytest.mark.slow
def test_compare_searchers_equal_budget(tiny_set, tmp_path):
    budget, max_epochs = 4, 3
    res = run_compare_searchers([tiny_set], "fan", None, tmp_path / "cmp", budget_epochs=budget, seeds=(0,),
                                max_epochs=max_epochs, eta=3, batch_size=16, device="cpu", seconds=SECONDS,
                                dim=32, depth=2, pretrain_epochs=1, base_config={"min_steps_per_epoch": 0})
    curves = res["curves"]
    assert set(curves["searcher"]) == set(SEARCHER_VARIANTS)
    n_concurrent = 2  # 2 CPUs, 1 CPU per trial
    for name, g in curves.groupby("searcher"):
        assert g["budget"].is_monotonic_increasing and g["best"].is_monotonic_increasing, name
        assert g["budget"].iloc[0] >= 1 and g["best"].between(0, 1).all()
        # the epoch budget holds (plus at most one Tune iteration per concurrent trial)
        assert budget <= g["budget"].max() <= budget + n_concurrent, (name, g["budget"].max())
    # random search without early stopping trains each trial to max_epochs
    trials = pd.read_csv(tmp_path / "cmp" / "searches" / "random_fifo-s0" / "trials.csv")
    done = trials.groupby("trial_id")["epoch"].max()
    assert (done[trials.groupby("trial_id")["status"].first() == "FINISHED"] == max_epochs).all()
    summary = res["summary"].set_index("searcher")
    assert set(summary.index) == set(SEARCHER_VARIANTS) and (summary["seeds"] == 1).all()
    assert summary["final_best_mean"].between(0, 1).all()
    assert summary.loc[REFERENCE_SEARCHER, "reached_random_best"] == "1/1"
    for path in res["paths"].values():
        assert path.stat().st_size > 0
    md = (tmp_path / "cmp" / "summary.md").read_text()
    assert all(name in md for name in SEARCHER_VARIANTS)


def test_random_hyperband_stops_trials_early_with_one_concurrent_trial(tiny_set, tmp_path):
    """With --max-concurrent 1 a paused trial must not hold the only slot: Hyperband fills its bracket
    (3 trials at 1 epoch for max_t 3, η 3) instead of training one trial to max_t."""
    res = run_compare_searchers([tiny_set], "fan", None, tmp_path / "cmp1", budget_epochs=3, seeds=(0,),
                                max_epochs=3, eta=3, batch_size=16, device="cpu", seconds=SECONDS, dim=32,
                                depth=2, pretrain_epochs=1, max_concurrent=1, searchers=["Random + HyperBand"],
                                base_config={"min_steps_per_epoch": 0})
    trials = pd.read_csv(tmp_path / "cmp1" / "searches" / "random_hyperband-s0" / "trials.csv")
    epochs = trials.groupby("trial_id")["epoch"].max()
    assert len(epochs) >= 3 and (epochs < 3).all(), epochs.to_dict()
    assert res["curves"]["budget"].max() == 3
    # without plain random search in the run, the reference is the random searcher that ran
    assert res["reference_searcher"] == "Random + HyperBand"
    assert res["summary"].set_index("searcher").loc["Random + HyperBand", "reached_random_best"] == "1/1"
    assert "Random + HyperBand's final best" in (tmp_path / "cmp1" / "summary.md").read_text()


def test_reference_searcher():
    assert reference_searcher(list(SEARCHER_VARIANTS)) == REFERENCE_SEARCHER
    assert reference_searcher(["BOHB", "Random + HyperBand"]) == "Random + HyperBand"
    assert reference_searcher(["BOHB"]) == "BOHB"

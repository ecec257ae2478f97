"""Figures: real PNG files from synthetic tables, and one-line ValueErrors on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib import _pylab_helpers
from matplotlib.image import imread

from bohb_search.evaluate.plots import plot_roc_curves, plot_score_histograms
from bohb_search.evaluate.plotting import PNG_SIGNATURE, is_png
from bohb_search.evaluate.search_plots import budget_curve, plot_ablation, plot_budget_curves, plot_search_progress


def _assert_pngs(paths, expected):
    assert sorted(paths) == sorted(expected)
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == PNG_SIGNATURE
        img = imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.shape[2] in (3, 4)
        assert is_png(p)
    assert not list(expected[0].parent.glob(".*.tmp"))  # atomic writes leave no temp files
    assert _pylab_helpers.Gcf.get_num_fig_managers() == 0  # no figure left open in pyplot's registry


def _scores(machines=("fan", "ToyCar"), seed=0, with_unknown=True):
    """Normal scores ~ N(0, 1), anomalies ~ N(2, 1): a known separation (AUC about 0.92)."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in machines:
        for domain, n_normal in (("source", 30), ("target", 10)):
            rows += [(m, 0, domain, "normal", s) for s in rng.normal(0, 1, n_normal)]
            rows += [(m, 0, domain, "anomaly", s) for s in rng.normal(2, 1, 10)]
        if with_unknown:
            # evaluation clips without ground truth: ignored (their domain is unknown too)
            rows += [(m, 0, "unknown", "unknown", s) for s in rng.normal(50, 1, 5)]
    return pd.DataFrame(rows, columns=["machine", "section", "domain", "label", "score"])


def _trials():
    """A Hyperband bracket with eta = 3: 9 trials at 1 epoch, 3 continue to 3, 1 to 9 (21 epochs).

    Rows are stored trial by trial (as trials.csv is); ``timestamp`` gives the arrival order,
    in which the promoted trials resume (restored_from_epoch = 1, then 3) after the first rung.
    """
    rng = np.random.default_rng(1)
    rows, t = [], 0.0
    base = {f"t{i}": 0.5 + 0.02 * i for i in range(9)}  # t8 is the best trial

    def add(trial, epoch, restored):
        nonlocal t
        t += 1.0
        val = base[trial] + 0.01 * epoch + rng.normal(0, 0.001)
        rows.append({"trial_id": trial, "epoch": epoch, "val_score": val, "restored_from_epoch": restored,
                     "timestamp": 1_700_000_000 + t})

    for i in range(9):
        add(f"t{i}", 1, 0)
    for trial in ("t6", "t7", "t8"):
        for e in (2, 3):
            add(trial, e, 1)
    for e in range(4, 10):
        add("t8", e, 3)
    df = pd.DataFrame(rows)
    df["best_val_score"] = df.sort_values("timestamp").groupby("trial_id")["val_score"].cummax()
    final = df.groupby("trial_id")["epoch"].transform("max")
    df["status"] = np.where(final == 9, "FINISHED", "KILLED")
    return df.sort_values(["trial_id", "epoch"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------- ROC


def test_roc_curves_one_png_per_machine(tmp_path):
    paths = plot_roc_curves(_scores(), tmp_path)
    _assert_pngs(paths, [tmp_path / "roc_fan.png", tmp_path / "roc_ToyCar.png"])


def test_roc_curves_of_one_domain_data_draw_the_source_curve(tmp_path):
    paths = plot_roc_curves(_scores(("fan",)).query("domain == 'source'"), tmp_path)
    _assert_pngs(paths, [tmp_path / "roc_fan.png"])


def test_roc_curves_reject_bad_input_naming_the_problem(tmp_path):
    with pytest.raises(ValueError, match="missing column.*score"):
        plot_roc_curves(_scores().drop(columns="score"), tmp_path)
    with pytest.raises(ValueError, match="scores is empty"):
        plot_roc_curves(_scores().iloc[0:0], tmp_path)
    no_anomalies = pd.concat([_scores(("fan",)), _scores(("valve",), seed=1).query("label != 'anomaly'")])
    with pytest.raises(ValueError, match="machine valve has no anomalous clips"):
        plot_roc_curves(no_anomalies, tmp_path)
    assert not list(tmp_path.iterdir())  # checked before anything is written
    with pytest.raises(ValueError, match="machine fan has no normal clips"):
        plot_roc_curves(_scores(("fan",)).query("label != 'normal'"), tmp_path)
    with pytest.raises(ValueError, match="no labelled clips"):
        plot_roc_curves(_scores().assign(label="unknown"), tmp_path)
    with pytest.raises(ValueError, match="column label.*'broken'"):
        plot_roc_curves(_scores().assign(label="broken"), tmp_path)
    with pytest.raises(ValueError, match="column score has non-numeric"):
        plot_roc_curves(_scores().assign(score="high"), tmp_path)


# --------------------------------------------------------------------------------------- histograms


def test_score_histograms_one_png_per_machine(tmp_path):
    paths = plot_score_histograms(_scores(), tmp_path / "hist")
    _assert_pngs(paths, [tmp_path / "hist" / "hist_fan.png", tmp_path / "hist" / "hist_ToyCar.png"])


def test_score_histograms_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="missing column.*domain"):
        plot_score_histograms(_scores().drop(columns="domain"), tmp_path)
    with pytest.raises(ValueError, match="scores is empty"):
        plot_score_histograms(_scores().iloc[0:0], tmp_path)
    with pytest.raises(ValueError, match="column score has .*missing"):
        plot_score_histograms(_scores().assign(score=np.nan), tmp_path)


# ------------------------------------------------------------------------------------------ search


def test_search_budget_curve_follows_arrival_order_and_counts_epochs():
    trials = _trials()
    curve = budget_curve(trials)
    assert len(curve) == len(trials) == 9 + 3 * 2 + 6
    assert curve["budget"].tolist() == list(range(1, 22))  # every row spent one epoch: 6*1 + 2*3 + 9 = 21
    assert (np.diff(curve["best"]) >= 0).all()
    assert curve["best"].iloc[-1] == pytest.approx(trials["val_score"].max())
    # in arrival order the first rung (9 results) comes first: its best is the best epoch-1 value
    assert curve["best"].iloc[8] == pytest.approx(trials.query("epoch == 1")["val_score"].max())
    # by timestamp, t6 reports epochs 2 and 3 before t7 reports epoch 2 (the 12th result)
    v = trials.set_index(["trial_id", "epoch"])["val_score"]
    first_rung = trials.query("epoch == 1")["val_score"].max()
    assert curve["best"].iloc[11] == pytest.approx(max(first_rung, v["t6", 2], v["t6", 3], v["t7", 2]))
    # without a time column the order is epoch, then trial: the 12th result is t8's epoch 2
    no_time = budget_curve(trials.drop(columns="timestamp"))
    assert no_time["best"].iloc[11] == pytest.approx(max(first_rung, v["t6", 2], v["t7", 2], v["t8", 2]))
    assert no_time["budget"].tolist() == curve["budget"].tolist()
    assert no_time["best"].iloc[-1] == curve["best"].iloc[-1]
    # a trial that re-ran epochs 2-3 after a restore from epoch 1 spent those epochs again
    rerun = trials[(trials["trial_id"] == "t7") & trials["epoch"].isin([2, 3])].assign(
        timestamp=lambda d: d["timestamp"] + 100)
    assert budget_curve(pd.concat([trials, rerun]))["budget"].iloc[-1] == 23


def test_search_progress_png(tmp_path):
    paths = plot_search_progress(_trials(), tmp_path / "progress.png", max_epochs=9)
    _assert_pngs(paths, [tmp_path / "progress.png"])
    paths = plot_search_progress(_trials().drop(columns=["timestamp", "restored_from_epoch"]),
                                 tmp_path / "progress2.png")
    _assert_pngs(paths, [tmp_path / "progress2.png"])


def test_search_progress_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="missing column.*best_val_score"):
        plot_search_progress(_trials().drop(columns="best_val_score"), tmp_path / "p.png")
    with pytest.raises(ValueError, match="trials is empty"):
        plot_search_progress(_trials().iloc[0:0], tmp_path / "p.png")
    with pytest.raises(ValueError, match="no trial reported a result"):
        plot_search_progress(_trials().assign(epoch=np.nan), tmp_path / "p.png")
    with pytest.raises(ValueError, match="max_epochs=3 but trials reached epoch 9"):
        plot_search_progress(_trials(), tmp_path / "p.png", max_epochs=3)
    with pytest.raises(ValueError, match="out_path must end in .png"):
        plot_search_progress(_trials(), tmp_path / "p.pdf")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------- budget curves


def _curves():
    rng = np.random.default_rng(2)
    out = {}
    for name, gain in (("BOHB", 0.3), ("random", 0.2)):
        frames = []
        for seed in range(3):
            budget = np.cumsum(rng.integers(1, 4, 15))
            best = np.maximum.accumulate(0.5 + gain * (1 - np.exp(-budget / 15)) + rng.normal(0, 0.02, 15))
            frames.append(pd.DataFrame({"budget": budget, "best": best, "seed": seed}))
        out[name] = pd.concat(frames, ignore_index=True)
    return out


def test_budget_curves_png(tmp_path):
    curves = {**_curves(), "single search": budget_curve(_trials())}  # one seed: no band
    paths = plot_budget_curves(curves, tmp_path / "budget.png", reference=0.7)
    _assert_pngs(paths, [tmp_path / "budget.png"])


def test_budget_curves_reject_bad_input(tmp_path):
    out = tmp_path / "b.png"
    with pytest.raises(ValueError, match=r"curves\['BOHB'\] is missing column.*best"):
        plot_budget_curves({"BOHB": _curves()["BOHB"].drop(columns="best")}, out)
    with pytest.raises(ValueError, match=r"curves\['BOHB'\] is empty"):
        plot_budget_curves({"BOHB": _curves()["BOHB"].iloc[0:0]}, out)
    with pytest.raises(ValueError, match="curves must be a non-empty dict"):
        plot_budget_curves({}, out)
    with pytest.raises(ValueError, match="column best decreases"):
        plot_budget_curves({"x": pd.DataFrame({"budget": [1, 2, 3], "best": [0.6, 0.7, 0.65]})}, out)
    with pytest.raises(ValueError, match="reference must be a finite number"):
        plot_budget_curves(_curves(), out, reference=float("nan"))
    assert not out.exists()


# --------------------------------------------------------------------------------------- ablation


def _ablation():
    return pd.DataFrame({
        "component": ["pre-training", "pre-training", "loss", "loss", "loss"],
        "configuration": ["from scratch", "pre-trained", "OC-SVDD", "pOE only", "pOE + GRL"],
        "auc_source": [0.61, 0.70, 0.64, 0.72, 0.74],
        "auc_target": [0.55, 0.62, np.nan, 0.60, 0.66],
        "pauc": [0.52, 0.56, 0.53, 0.57, 0.58],
        "auc_source_std": [0.02, 0.01, 0.03, np.nan, 0.02],
    })


def test_ablation_png(tmp_path):
    paths = plot_ablation(_ablation(), tmp_path / "ablation.png")
    _assert_pngs(paths, [tmp_path / "ablation.png"])


def test_ablation_rejects_bad_input(tmp_path):
    out = tmp_path / "a.png"
    with pytest.raises(ValueError, match="missing column.*pauc"):
        plot_ablation(_ablation().drop(columns="pauc"), out)
    with pytest.raises(ValueError, match="table is empty"):
        plot_ablation(_ablation().iloc[0:0], out)
    with pytest.raises(ValueError, match=r"column auc_source must be in \[0, 1\]"):
        plot_ablation(_ablation().assign(auc_source=lambda d: d["auc_source"] * 100), out)
    with pytest.raises(ValueError, match="all NaN"):
        plot_ablation(_ablation().assign(auc_source=np.nan, auc_target=np.nan, pauc=np.nan), out)
    assert not out.exists()


# ----------------------------------------------------------------------------------------- is_png


def test_is_png_rejects_non_png_files(tmp_path):
    text = tmp_path / "a.png"
    text.write_text("not an image")
    truncated = tmp_path / "b.png"
    truncated.write_bytes(PNG_SIGNATURE + b"\x00\x00\x00\rIHDR" + b"\x00" * 5)
    assert not is_png(text)
    assert not is_png(truncated)
    assert not is_png(tmp_path / "missing.png")

"""Search and experiment figures: search progress, searchers compared, ablation bars (PNG, atomic).

* :func:`budget_curve`         - best validation score so far vs cumulative epochs spent, from a
  search's ``trials.csv`` (the one definition: the search's progress plot and the searcher
  comparison both use it);
* :func:`plot_search_progress` - best validation score vs cumulative epochs, and every trial's learning
  curve coloured by the final budget it reached (its Hyperband bracket/rung);
* :func:`plot_budget_curves`   - searchers compared: mean best-so-far over seeds with a min-max band;
* :func:`plot_ablation`        - grouped bars of an ablation table, optional ``*_std`` error bars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .plotting import new_figure, numeric_column, png_path, require_frame, save_figure

__all__ = ["budget_curve", "plot_ablation", "plot_budget_curves", "plot_search_progress"]

TRIAL_COLUMNS = ("trial_id", "epoch", "val_score", "best_val_score")
ABLATION_METRICS = ("auc_source", "auc_target", "pauc")
_METRIC_LABELS = {"auc_source": "AUC (source)", "auc_target": "AUC (target)", "pauc": "pAUC"}


# =================================================================================================
# search figures


def _trial_rows(trials, name: str = "trials", order: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows of a trials table that reported a result, in arrival order, with per-row budget spent.

    Arrival order: ``order`` (columns trial_id, epoch, seq: the order the driver received results,
    recorded by a Tune callback; results from before a resume have no seq and come first), else the
    ``timestamp`` column (wall-clock of each result), else ``time_total_s``, else epoch then the
    trial's first appearance in the table. The budget a row spent is its epoch minus the trial's
    previous epoch (or, when a trial re-ran epochs after a restore, minus ``restored_from_epoch``).
    Rows of FAILED trials are left out: a trial that raised reports nothing a searcher could use.
    """
    df = require_frame(trials, name, TRIAL_COLUMNS)
    if "status" in df:
        df = df[df["status"].astype(str) != "FAILED"]
    out = pd.DataFrame({"trial_id": df["trial_id"].astype(str).to_numpy()})
    out["epoch"] = numeric_column(df["epoch"], name, "epoch", allow_nan=True)
    out["val_score"] = numeric_column(df["val_score"], name, "val_score", allow_nan=True)
    out["best_val_score"] = numeric_column(df["best_val_score"], name, "best_val_score", allow_nan=True)
    if "restored_from_epoch" in df:
        out["restored_from_epoch"] = numeric_column(df["restored_from_epoch"], name, "restored_from_epoch",
                                                    allow_nan=True)
    else:
        out["restored_from_epoch"] = np.nan
    out["_row"] = np.arange(len(out))
    first_seen = {t: i for i, t in reversed(list(enumerate(out["trial_id"])))}
    out["_trial_order"] = out["trial_id"].map(first_seen)
    keys = ["epoch", "_trial_order", "_row"]
    for col in ("timestamp", "time_total_s"):
        if col in df:
            if col == "timestamp" and not pd.api.types.is_numeric_dtype(df[col]):
                t = pd.to_datetime(df[col], errors="coerce", utc=True)
                out["_time"] = (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
            else:
                out["_time"] = numeric_column(df[col], name, col, allow_nan=True)
            keys = ["_time", *keys]
            break
    out = out[np.isfinite(out["epoch"])]
    if out.empty:
        raise ValueError(f"{name}: no trial reported a result (column epoch is empty)")
    if (out["epoch"] <= 0).any():
        raise ValueError(f"{name}: column epoch must be positive, got {out['epoch'].min():g}")
    if order is not None and not order.empty:
        o = require_frame(order, "order", ("trial_id", "epoch", "seq"))[["trial_id", "epoch", "seq"]].copy()
        o["trial_id"] = o["trial_id"].astype(str)
        o["epoch"] = o["epoch"].astype(float)
        out = out.merge(o.drop_duplicates(["trial_id", "epoch"]), on=["trial_id", "epoch"], how="left")
        out["_unordered"] = out["seq"].isna()
        keys = ["_unordered", "seq", *keys]
        out = out.sort_values(keys, kind="stable", ascending=[False] + [True] * (len(keys) - 1))
    else:
        out = out.sort_values(keys, kind="stable")
    out = out.reset_index(drop=True)
    spent = np.empty(len(out))
    last: dict[str, float] = {}
    for i, (trial, epoch, restored) in enumerate(zip(out["trial_id"], out["epoch"], out["restored_from_epoch"])):
        prev = last.get(trial, 0.0)
        if epoch <= prev:  # the trial re-ran epochs after a restore from an earlier checkpoint
            prev = restored if np.isfinite(restored) and restored < epoch else epoch - 1
        spent[i] = epoch - prev
        last[trial] = epoch
    out["spent"] = spent
    return out.drop(columns=[c for c in out.columns if c.startswith("_") or c == "seq"])


def budget_curve(trials: pd.DataFrame, order: pd.DataFrame | None = None) -> pd.DataFrame:
    """Best validation score so far vs cumulative epochs spent, from a search's ``trials.csv``.

    One row per reported result in arrival order (see :func:`_trial_rows` for ``order``), with
    columns ``budget`` (epochs spent so far, summed over all trials), ``best``, ``val_score``,
    ``trial_id`` and ``epoch``: the input :func:`plot_budget_curves` expects (add a ``seed`` column
    to pool several searches).
    """
    rows = _trial_rows(trials, order=order)
    value = rows["best_val_score"].fillna(rows["val_score"]).to_numpy()
    if np.isnan(value).all():
        raise ValueError("trials: columns best_val_score and val_score have no values")
    return pd.DataFrame({"budget": np.cumsum(rows["spent"].to_numpy()).astype(int),
                         "best": np.fmax.accumulate(value), "val_score": rows["val_score"].to_numpy(),
                         "trial_id": rows["trial_id"].to_numpy(), "epoch": rows["epoch"].astype(int).to_numpy()})


def plot_search_progress(trials: pd.DataFrame, out_path, max_epochs: int | None = None) -> list[Path]:
    """Two panels from a search's ``trials.csv``: (a) best validation score found so far vs the
    cumulative epochs spent over all trials, (b) every trial's learning curve (val_score vs epoch),
    coloured by the final budget the trial reached - trials stopped at the same rung form a group,
    which is how Hyperband's brackets and rungs show in the table. ``max_epochs`` (the search's
    ``--max-epochs``) fixes the epoch axis and adds a top axis in full-budget units to panel (a).
    """
    path = png_path(out_path)
    if max_epochs is not None:
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, (int, np.integer)) or max_epochs < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}")
    rows = _trial_rows(trials)
    if max_epochs is not None and rows["epoch"].max() > max_epochs:
        raise ValueError(f"max_epochs={max_epochs} but trials reached epoch {rows['epoch'].max():g}")
    curve = budget_curve(trials)
    finite = np.isfinite(curve["best"].to_numpy())
    curve = curve[finite]

    fig, (ax_a, ax_b) = new_figure(11.0, 4.4, ncols=2)
    # (a) best so far vs budget
    x = np.r_[0.0, curve["budget"].to_numpy()]
    y = np.r_[np.nan, curve["best"].to_numpy()]
    ax_a.step(x, y, where="post", color="tab:blue", lw=2)
    ax_a.plot(curve["budget"], curve["best"], "o", color="tab:blue", ms=3)
    total = float(x[-1])
    ax_a.set_xlim(0, total * 1.02)
    ax_a.set_xlabel("cumulative budget spent (epochs, summed over trials)")
    ax_a.set_ylabel("best validation score so far")
    n_trials = rows["trial_id"].nunique()
    ax_a.set_title(f"(a) search progress: {n_trials} trials, {total:g} epochs")
    ax_a.grid(alpha=0.3)
    if max_epochs is not None:
        sec = ax_a.secondary_xaxis("top", functions=(lambda b: b / max_epochs, lambda u: u * max_epochs))
        sec.set_xlabel(f"full-budget equivalents (× {max_epochs} epochs)")

    # (b) learning curves coloured by final budget reached
    per_trial = {t: g.drop_duplicates("epoch", keep="last").sort_values("epoch")
                 for t, g in rows.groupby("trial_id", sort=False)}
    final = {t: float(g["epoch"].max()) for t, g in per_trial.items()}
    budgets = sorted(set(final.values()))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    colors = {b: cmap(0.85 * i / max(1, len(budgets) - 1)) for i, b in enumerate(budgets)}
    counts = {b: sum(1 for v in final.values() if v == b) for b in budgets}
    for t, g in per_trial.items():
        ok = np.isfinite(g["val_score"].to_numpy())
        ax_b.plot(g["epoch"].to_numpy()[ok], g["val_score"].to_numpy()[ok], "-o", ms=3, lw=1.3,
                  color=colors[final[t]], alpha=0.9)
    for b in budgets:  # legend in budget order, one entry per group
        ax_b.plot([], [], "-o", ms=3, lw=1.3, color=colors[b],
                  label=f"{b:g} ({counts[b]} trial{'s' if counts[b] != 1 else ''})")
    best_row = rows.loc[rows["val_score"].idxmax()] if rows["val_score"].notna().any() else None
    if best_row is not None:
        ax_b.plot([best_row["epoch"]], [best_row["val_score"]], "*", color="tab:red", ms=13, zorder=5,
                  label=f"best: {best_row['val_score']:.3f} (trial {best_row['trial_id']})")
    handles, labels = ax_b.get_legend_handles_labels()
    ax_b.legend(handles, labels, title="final budget (epochs)", fontsize=7.5, title_fontsize=8)
    if max_epochs is not None:
        ax_b.axvline(max_epochs, color="0.5", ls=":", lw=1)
        ax_b.set_xlim(0.5, max_epochs + 0.5)
    ax_b.set_xlabel("epoch")
    ax_b.set_ylabel("validation score")
    ax_b.set_title("(b) learning curves")
    ax_b.grid(alpha=0.3)
    return [save_figure(fig, path)]


def _step_values(budget: np.ndarray, best: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A best-so-far step function (value holds until the next point) evaluated on ``grid``."""
    idx = np.searchsorted(budget, grid, side="right") - 1
    out = best[np.clip(idx, 0, None)].astype(float)
    out[idx < 0] = np.nan
    return out


def plot_budget_curves(curves: Mapping[str, pd.DataFrame], out_path, reference: float | None = None) -> list[Path]:
    """Compare searchers: best validation score so far vs cumulative budget, one line per searcher.

    Each DataFrame has columns ``budget`` (cumulative epochs) and ``best`` (best validation score so
    far) and optionally ``seed``: the line is the mean over seeds of the step functions, with a
    min-max band, over the budget range that every seed covers. ``reference`` draws a horizontal
    line (e.g. the final best of plain random search).
    """
    path = png_path(out_path)
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict of searcher name -> DataFrame")
    if reference is not None:
        if isinstance(reference, bool) or not isinstance(reference, (int, float, np.number)) \
                or not math.isfinite(float(reference)):
            raise ValueError(f"reference must be a finite number, got {reference!r}")
    prepared = {}
    for searcher, df in curves.items():
        name = f"curves[{searcher!r}]"
        df = require_frame(df, name, ("budget", "best"))
        budget = numeric_column(df["budget"], name, "budget")
        best = numeric_column(df["best"], name, "best")
        if (budget < 0).any():
            raise ValueError(f"{name}: column budget must be non-negative, got {budget.min():g}")
        seeds = df["seed"].to_numpy() if "seed" in df else np.zeros(len(df), int)
        if pd.isna(seeds).any():
            raise ValueError(f"{name}: column seed has missing values")
        per_seed = []
        for seed in pd.unique(seeds):
            sel = seeds == seed
            order = np.argsort(budget[sel], kind="stable")
            b, v = budget[sel][order], best[sel][order]
            if (np.diff(v) < -1e-12).any():
                raise ValueError(f"{name}: column best decreases with budget (seed {seed}); it must be the best "
                                 "value found so far")
            per_seed.append((b, v))
        lo = max(b[0] for b, _ in per_seed)
        hi = min(b[-1] for b, _ in per_seed)
        if hi < lo:
            raise ValueError(f"{name}: the seeds' budget ranges do not overlap, no mean can be drawn")
        grid = np.unique(np.concatenate([b for b, _ in per_seed]))
        grid = grid[(grid >= lo) & (grid <= hi)]
        values = np.vstack([_step_values(b, v, grid) for b, v in per_seed])
        prepared[searcher] = (grid, values)

    fig, (ax,) = new_figure(7.0, 4.6)
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    for i, (searcher, (grid, values)) in enumerate(prepared.items()):
        color = palette(i % 10)
        mean = values.mean(axis=0)
        n = values.shape[0]
        ax.step(grid, mean, where="post", color=color, lw=2,
                label=f"{searcher} (mean of {n} seed{'s' if n != 1 else ''})" if n > 1 else str(searcher))
        if n > 1:
            ax.fill_between(grid, values.min(axis=0), values.max(axis=0), step="post", color=color, alpha=0.2, lw=0)
    if reference is not None:
        ax.axhline(float(reference), color="0.3", ls="--", lw=1.2, label=f"reference = {float(reference):.3f}")
    ax.set_xlabel("cumulative budget (epochs)")
    ax.set_ylabel("best validation score so far")
    ax.set_title("searchers compared (band: min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [save_figure(fig, path)]


# =================================================================================================
# ablation figure


def plot_ablation(table: pd.DataFrame, out_path) -> list[Path]:
    """Grouped bars of an ablation table (columns component, configuration, auc_source, auc_target,
    pauc; optional ``auc_source_std`` etc. as error bars). One group of three bars per
    configuration, configurations grouped by component in table order; NaN values get no bar
    (marked "n/a"). Values are fractions in [0, 1], as :mod:`bohb_search.metrics` reports them.
    """
    path = png_path(out_path)
    df = require_frame(table, "table", ("component", "configuration", *ABLATION_METRICS)).reset_index(drop=True)
    if df["component"].isna().any() or df["configuration"].isna().any():
        raise ValueError("table: columns component and configuration must not have missing values")
    values = {m: numeric_column(df[m], "table", m, allow_nan=True) for m in ABLATION_METRICS}
    stds = {}
    for m in ABLATION_METRICS:
        v = values[m]
        if ((v < 0) | (v > 1)).any():
            raise ValueError(f"table: column {m} must be in [0, 1] (fractions, not percent), got {np.nanmax(v):g}")
        if f"{m}_std" in df:
            s = numeric_column(df[f"{m}_std"], "table", f"{m}_std", allow_nan=True)
            if (s < 0).any():
                raise ValueError(f"table: column {m}_std must be non-negative")
            stds[m] = s
    if all(np.isnan(v).all() for v in values.values()):
        raise ValueError("table: columns auc_source, auc_target and pauc are all NaN, nothing to plot")
    dup = df.duplicated(["component", "configuration"])
    if dup.any():
        r = df[dup].iloc[0]
        raise ValueError(f"table: duplicate row for component {r['component']!r}, configuration {r['configuration']!r}")

    components = list(dict.fromkeys(df["component"].astype(str)))
    positions = np.empty(len(df))
    centers, x = {}, 0.0
    comp_col = df["component"].astype(str).to_numpy()
    for comp in components:
        idx = np.flatnonzero(comp_col == comp)
        positions[idx] = x + np.arange(len(idx))
        centers[comp] = x + (len(idx) - 1) / 2
        x += len(idx) + 0.8  # a gap between components
    width = 0.26
    n_bars = int(sum(np.isfinite(v).sum() for v in values.values()))
    fig, (ax,) = new_figure(max(6.0, 0.9 * len(df) + 0.8 * len(components) + 2.0), 4.8)
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    for k, m in enumerate(ABLATION_METRICS):
        v = values[m]
        ok = np.isfinite(v)
        xs = positions + (k - 1) * width
        err = stds[m][ok] if m in stds else None
        if err is not None:
            err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(xs[ok], v[ok], width, yerr=err, capsize=3 if err is not None else 0, color=palette(k),
               label=_METRIC_LABELS[m], error_kw={"lw": 1})
        tops = v[ok] + (err if err is not None else 0.0)
        for xi, vi, top in zip(xs[ok], v[ok], tops):
            if n_bars <= 36:
                ax.text(xi, top + 0.01, f"{vi:.3f}", ha="center", va="bottom", fontsize=6.5, rotation=90)
        for xi in xs[~ok]:
            ax.text(xi, 0.01, "n/a", ha="center", va="bottom", fontsize=6.5, rotation=90, color="0.4")
    ax.set_xticks(positions)
    ax.set_xticklabels(df["configuration"].astype(str), rotation=20, ha="right", fontsize=8)
    for comp, c in centers.items():
        ax.annotate(comp, xy=(c, 0), xycoords=("data", "axes fraction"), xytext=(0, -48),
                    textcoords="offset points", ha="center", va="top", fontsize=9, fontweight="bold")
    for comp in components[1:]:
        first = positions[np.flatnonzero(comp_col == comp)[0]]
        ax.axvline(first - 0.9, color="0.7", lw=0.8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score")
    ax.set_title("ablation" + (" (error bars: ± std)" if stds else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=3, fontsize=8, loc="upper right")
    return [save_figure(fig, path)]

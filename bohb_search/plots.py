"""Figures for evaluations, searches and ablations (PNG files, written atomically).

Every function takes plain pandas tables - the ``scores.csv`` that ``evaluate`` writes, a search's
``trials.csv``, budget curves, an ablation table - checks them (a bad input raises a one-line
``ValueError`` naming the parameter, column or machine), renders with matplotlib's Agg canvas and
returns the list of PNG paths it wrote:

* :func:`plot_roc_curves`        - ``roc_<machine>.png``: AUC (source) and AUC (target) ROC curves
  (official DCASE definition: the domain's normal clips against *all* anomalies of the machine),
  the chance diagonal and the pAUC range (FPR <= 0.1) shaded;
* :func:`plot_score_histograms`  - ``hist_<machine>.png``: normal vs anomalous scores, one panel per
  domain, shared bins;
* :func:`plot_search_progress`   - best validation AUC vs cumulative epochs spent, and every trial's
  learning curve coloured by the final budget it reached (its Hyperband bracket/rung);
* :func:`plot_budget_curves`     - searchers compared: mean best-so-far over seeds with a min-max band;
* :func:`plot_ablation`          - grouped bars of an ablation table, optional ``*_std`` error bars;
* :func:`search_budget_curve`    - the (budget, best) curve of a ``trials.csv``, the input of
  :func:`plot_budget_curves`;
* :func:`is_png`                 - PNG signature check plus a full decode.

Figures are :class:`matplotlib.figure.Figure` objects on their own ``FigureCanvasAgg``: pyplot and
its global figure registry are never used, so nothing here changes the backend of other code and no
figure outlives its function.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data.atomic import atomic_write_bytes

__all__ = [
    "PNG_SIGNATURE",
    "MAX_FPR",
    "plot_roc_curves",
    "plot_score_histograms",
    "plot_search_progress",
    "plot_budget_curves",
    "plot_ablation",
    "search_budget_curve",
    "is_png",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the pAUC range of DCASE Task 2 (false-positive rates 0 .. MAX_FPR)
MAX_FPR = 0.1
DPI = 120

SCORE_COLUMNS = ("machine", "section", "domain", "label", "score")
TRIAL_COLUMNS = ("trial_id", "epoch", "val_auc", "best_val_auc")
ABLATION_METRICS = ("auc_source", "auc_target", "pauc")
_METRIC_LABELS = {"auc_source": "AUC (source)", "auc_target": "AUC (target)", "pauc": "pAUC"}
_DOMAINS = ("source", "target")
_DOMAIN_COLORS = {"source": "tab:blue", "target": "tab:orange"}
_LABEL_COLORS = {"normal": "tab:green", "anomaly": "tab:red"}


# =================================================================================================
# helpers


def _new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig, path: Path) -> Path:
    """Render ``fig`` to PNG bytes, write them atomically, release the figure."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return atomic_write_bytes(path, buf.getvalue())
    finally:
        fig.clear()


def _require_frame(df, name: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})")
    if df.empty:
        raise ValueError(f"{name} is empty (no rows)")
    return df


def _numeric(series: pd.Series, name: str, column: str, allow_nan: bool = False) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    bad_type = np.isnan(values) & series.notna().to_numpy()
    if bad_type.any():
        raise ValueError(f"{name}: column {column} has non-numeric value(s), e.g. {series[bad_type].iloc[0]!r}")
    if np.isinf(values).any():
        raise ValueError(f"{name}: column {column} has infinite value(s)")
    if not allow_nan and np.isnan(values).any():
        raise ValueError(f"{name}: column {column} has {int(np.isnan(values).sum())} missing (NaN) value(s)")
    return values


def _out_file(out_path, name: str = "out_path") -> Path:
    path = Path(out_path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{name} must end in .png, got {str(path)!r}")
    return path


def _safe_name(machine: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", machine).strip("._") or "machine"


def _labelled_scores(scores, name: str = "scores") -> pd.DataFrame:
    """The rows of a scores table with a known label: lower-cased label/domain, float score.

    Rows labelled ``unknown`` (evaluation data without ground truth) are dropped.
    """
    df = _require_frame(scores, name, SCORE_COLUMNS)
    label = df["label"].astype(str).str.strip().str.lower()
    bad = sorted(set(label) - {"normal", "anomaly", "unknown"})
    if bad:
        raise ValueError(f"{name}: column label must be 'normal', 'anomaly' or 'unknown'; got "
                         f"{', '.join(map(repr, bad[:5]))}")
    keep = (label != "unknown").to_numpy()
    if not keep.any():
        raise ValueError(f"{name}: no labelled clips (every label is 'unknown')")
    out = pd.DataFrame({
        "machine": df["machine"].astype(str).to_numpy()[keep],
        "section": df["section"].astype(str).to_numpy()[keep],
        "domain": df["domain"].astype(str).str.strip().str.lower().to_numpy()[keep],
        "label": label.to_numpy()[keep],
    })
    bad = sorted(set(out["domain"]) - set(_DOMAINS))
    if bad:
        raise ValueError(f"{name}: column domain must be 'source' or 'target' for labelled clips; got "
                         f"{', '.join(map(repr, bad[:5]))}")
    out["score"] = _numeric(df["score"].iloc[np.flatnonzero(keep)].reset_index(drop=True), name, "score")
    return out


def _machine_files(machines: Sequence[str], out_dir, prefix: str) -> dict[str, Path]:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    files: dict[str, Path] = {}
    seen: dict[str, str] = {}
    for m in machines:
        safe = _safe_name(m)
        if safe in seen:
            raise ValueError(f"scores: machines {seen[safe]!r} and {m!r} map to the same file name {prefix}_{safe}.png")
        seen[safe] = m
        files[m] = out / f"{prefix}_{safe}.png"
    return files


# =================================================================================================
# evaluation figures


def plot_roc_curves(scores: pd.DataFrame, out_dir) -> list[Path]:
    """One ``roc_<machine>.png`` per machine with the AUC (source) and AUC (target) ROC curves.

    As the official DCASE AUC (source): the source-domain normal clips against *all* anomalous
    clips of the machine (either domain); target likewise. Sections are pooled (the DCASE 2023-2025
    machines have one section each). The shaded band is the pAUC range, FPR in [0, 0.1]; the title
    gives the pAUC over all clips of the machine (McClish-standardized, as :mod:`bohb_search.metrics`).
    Rows labelled ``unknown`` are ignored; a machine without anomalies or without normal clips of a
    domain raises ``ValueError`` naming it.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    df = _labelled_scores(scores)
    machines = sorted(df["machine"].unique())
    # check every machine before writing anything
    for m in machines:
        g = df[df["machine"] == m]
        if not (g["label"] == "anomaly").any():
            raise ValueError(f"scores: machine {m} has no anomalous clips, so its ROC curves cannot be drawn")
        for d in _DOMAINS:
            if not ((g["label"] == "normal") & (g["domain"] == d)).any():
                raise ValueError(f"scores: machine {m} has no {d}-domain normal clips, so AUC ({d}) cannot be drawn")
    files = _machine_files(machines, out_dir, "roc")
    written = []
    for m in machines:
        g = df[df["machine"] == m]
        anomalies = g[g["label"] == "anomaly"]["score"].to_numpy()
        fig, (ax,) = _new_figure(5.2, 5.0)
        ax.axvspan(0.0, MAX_FPR, color="0.85", alpha=0.6, lw=0, label=f"pAUC range (FPR ≤ {MAX_FPR:g})")
        ax.plot([0, 1], [0, 1], ls="--", color="0.45", lw=1, label="chance")
        for d in _DOMAINS:
            normals = g[(g["label"] == "normal") & (g["domain"] == d)]["score"].to_numpy()
            y = np.r_[np.zeros(len(normals), int), np.ones(len(anomalies), int)]
            s = np.r_[normals, anomalies]
            fpr, tpr, _ = roc_curve(y, s)
            auc = roc_auc_score(y, s)
            ax.plot(fpr, tpr, color=_DOMAIN_COLORS[d], lw=2,
                    label=f"{d}: AUC = {auc:.3f} ({len(normals)} normal vs {len(anomalies)} anomalous)")
        y_all = (g["label"] == "anomaly").to_numpy().astype(int)
        pauc = roc_auc_score(y_all, g["score"].to_numpy(), max_fpr=MAX_FPR)
        sections = sorted(g["section"].unique())
        title = f"{m}: ROC, pAUC = {pauc:.3f}"
        if len(sections) > 1:
            title += f"\n(sections pooled: {', '.join(sections)})"
        ax.set_title(title)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false-positive rate (normal clips of the domain)")
        ax.set_ylabel("true-positive rate (all anomalous clips)")
        ax.legend(loc="lower right", fontsize=7.5)
        ax.grid(alpha=0.3)
        written.append(_save(fig, files[m]))
    return written


def plot_score_histograms(scores: pd.DataFrame, out_dir) -> list[Path]:
    """One ``hist_<machine>.png`` per machine: normal vs anomalous score densities, a panel per domain.

    Both panels of a machine share the same bins. Rows labelled ``unknown`` are ignored; a machine
    whose clips are all unlabelled does not appear; a domain without clips shows an empty panel.
    """
    df = _labelled_scores(scores)
    machines = sorted(df["machine"].unique())
    files = _machine_files(machines, out_dir, "hist")
    written = []
    for m in machines:
        g = df[df["machine"] == m]
        # Freedman-Diaconis widths (IQR-based) stay fine-grained when a few scores lie far out
        edges = np.histogram_bin_edges(g["score"].to_numpy(), bins="fd")
        if len(edges) - 1 > 60:
            edges = np.linspace(edges[0], edges[-1], 61)
        elif len(edges) - 1 < 10:
            edges = np.linspace(edges[0], edges[-1], 11)
        fig, axes = _new_figure(9.0, 3.8, ncols=2)
        for ax, d in zip(axes, _DOMAINS):
            for label in ("normal", "anomaly"):
                s = g[(g["domain"] == d) & (g["label"] == label)]["score"].to_numpy()
                if len(s) == 0:
                    continue
                color = _LABEL_COLORS[label]
                ax.hist(s, bins=edges, density=True, color=color, alpha=0.35)
                ax.hist(s, bins=edges, density=True, color=color, histtype="step", lw=1.5,
                        label=f"{'anomalous' if label == 'anomaly' else 'normal'} (n = {len(s)})")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "no labelled clips", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{d} domain")
            ax.set_xlabel("anomaly score (higher = more anomalous)")
            ax.set_xlim(edges[0], edges[-1])
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("density")
        fig.suptitle(f"{m}: score distributions")
        written.append(_save(fig, files[m]))
    return written


# =================================================================================================
# search figures


def _trial_rows(trials, name: str = "trials") -> pd.DataFrame:
    """Rows of a trials table that reported a result, in arrival order, with per-row budget spent.

    Arrival order: the ``timestamp`` column (wall-clock of each result) when present, else
    ``time_total_s``, else epoch then the trial's first appearance in the table. The budget a row
    spent is its epoch minus the trial's previous epoch (or, when a trial re-ran epochs after a
    restore, minus ``restored_from_epoch``).
    """
    df = _require_frame(trials, name, TRIAL_COLUMNS)
    out = pd.DataFrame({"trial_id": df["trial_id"].astype(str).to_numpy()})
    out["epoch"] = _numeric(df["epoch"], name, "epoch", allow_nan=True)
    out["val_auc"] = _numeric(df["val_auc"], name, "val_auc", allow_nan=True)
    out["best_val_auc"] = _numeric(df["best_val_auc"], name, "best_val_auc", allow_nan=True)
    if "restored_from_epoch" in df:
        out["restored_from_epoch"] = _numeric(df["restored_from_epoch"], name, "restored_from_epoch",
                                              allow_nan=True)
    else:
        out["restored_from_epoch"] = np.nan
    out["_row"] = np.arange(len(out))
    first_seen = {t: i for i, t in reversed(list(enumerate(out["trial_id"])))}
    out["_trial_order"] = out["trial_id"].map(first_seen)
    for col in ("timestamp", "time_total_s"):
        if col in df:
            if col == "timestamp" and not pd.api.types.is_numeric_dtype(df[col]):
                t = pd.to_datetime(df[col], errors="coerce", utc=True)
                out["_time"] = (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
            else:
                out["_time"] = _numeric(df[col], name, col, allow_nan=True)
            keys = ["_time", "epoch", "_trial_order", "_row"]
            break
    else:
        keys = ["epoch", "_trial_order", "_row"]
    out = out[np.isfinite(out["epoch"])]
    if out.empty:
        raise ValueError(f"{name}: no trial reported a result (column epoch is empty)")
    if (out["epoch"] <= 0).any():
        raise ValueError(f"{name}: column epoch must be positive, got {out['epoch'].min():g}")
    out = out.sort_values(keys, kind="stable").reset_index(drop=True)
    spent = np.empty(len(out))
    last: dict[str, float] = {}
    for i, (trial, epoch, restored) in enumerate(zip(out["trial_id"], out["epoch"], out["restored_from_epoch"])):
        prev = last.get(trial, 0.0)
        if epoch <= prev:  # the trial re-ran epochs after a restore from an earlier checkpoint
            prev = restored if np.isfinite(restored) and restored < epoch else epoch - 1
        spent[i] = epoch - prev
        last[trial] = epoch
    out["spent"] = spent
    return out.drop(columns=[c for c in out.columns if c.startswith("_")])


def search_budget_curve(trials: pd.DataFrame) -> pd.DataFrame:
    """Best validation AUC so far vs cumulative epochs spent, from a search's ``trials.csv``.

    Returns columns ``budget`` and ``best`` (one row per reported result, in arrival order), the
    input :func:`plot_budget_curves` expects (add a ``seed`` column to pool several searches).
    """
    rows = _trial_rows(trials)
    value = rows["best_val_auc"].fillna(rows["val_auc"]).to_numpy()
    if np.isnan(value).all():
        raise ValueError("trials: columns best_val_auc and val_auc have no values")
    best = np.fmax.accumulate(value)
    return pd.DataFrame({"budget": np.cumsum(rows["spent"].to_numpy()), "best": best})


def plot_search_progress(trials: pd.DataFrame, out_path, max_epochs: int | None = None) -> list[Path]:
    """Two panels from a search's ``trials.csv``: (a) best validation AUC found so far vs the
    cumulative epochs spent over all trials, (b) every trial's learning curve (val_auc vs epoch),
    coloured by the final budget the trial reached - trials stopped at the same rung form a group,
    which is how Hyperband's brackets and rungs show in the table. ``max_epochs`` (the search's
    ``--max-epochs``) fixes the epoch axis and adds a top axis in full-budget units to panel (a).
    """
    path = _out_file(out_path)
    if max_epochs is not None:
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, (int, np.integer)) or max_epochs < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}")
    rows = _trial_rows(trials)
    if max_epochs is not None and rows["epoch"].max() > max_epochs:
        raise ValueError(f"max_epochs={max_epochs} but trials reached epoch {rows['epoch'].max():g}")
    curve = search_budget_curve(trials)
    finite = np.isfinite(curve["best"].to_numpy())
    curve = curve[finite]

    fig, (ax_a, ax_b) = _new_figure(11.0, 4.4, ncols=2)
    # (a) best so far vs budget
    x = np.r_[0.0, curve["budget"].to_numpy()]
    y = np.r_[np.nan, curve["best"].to_numpy()]
    ax_a.step(x, y, where="post", color="tab:blue", lw=2)
    ax_a.plot(curve["budget"], curve["best"], "o", color="tab:blue", ms=3)
    total = float(x[-1])
    ax_a.set_xlim(0, total * 1.02)
    ax_a.set_xlabel("cumulative budget spent (epochs, summed over trials)")
    ax_a.set_ylabel("best validation AUC so far")
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
        ok = np.isfinite(g["val_auc"].to_numpy())
        ax_b.plot(g["epoch"].to_numpy()[ok], g["val_auc"].to_numpy()[ok], "-o", ms=3, lw=1.3,
                  color=colors[final[t]], alpha=0.9)
    for b in budgets:  # legend in budget order, one entry per group
        ax_b.plot([], [], "-o", ms=3, lw=1.3, color=colors[b],
                  label=f"{b:g} ({counts[b]} trial{'s' if counts[b] != 1 else ''})")
    best_row = rows.loc[rows["val_auc"].idxmax()] if rows["val_auc"].notna().any() else None
    if best_row is not None:
        ax_b.plot([best_row["epoch"]], [best_row["val_auc"]], "*", color="tab:red", ms=13, zorder=5,
                  label=f"best: {best_row['val_auc']:.3f} (trial {best_row['trial_id']})")
    handles, labels = ax_b.get_legend_handles_labels()
    ax_b.legend(handles, labels, title="final budget (epochs)", fontsize=7.5, title_fontsize=8)
    if max_epochs is not None:
        ax_b.axvline(max_epochs, color="0.5", ls=":", lw=1)
        ax_b.set_xlim(0.5, max_epochs + 0.5)
    ax_b.set_xlabel("epoch")
    ax_b.set_ylabel("validation AUC")
    ax_b.set_title("(b) learning curves")
    ax_b.grid(alpha=0.3)
    return [_save(fig, path)]


def _step_values(budget: np.ndarray, best: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A best-so-far step function (value holds until the next point) evaluated on ``grid``."""
    idx = np.searchsorted(budget, grid, side="right") - 1
    out = best[np.clip(idx, 0, None)].astype(float)
    out[idx < 0] = np.nan
    return out


def plot_budget_curves(curves: Mapping[str, pd.DataFrame], out_path, reference: float | None = None) -> list[Path]:
    """Compare searchers: best validation AUC so far vs cumulative budget, one line per searcher.

    Each DataFrame has columns ``budget`` (cumulative epochs) and ``best`` (best validation AUC so
    far) and optionally ``seed``: the line is the mean over seeds of the step functions, with a
    min-max band, over the budget range that every seed covers. ``reference`` draws a horizontal
    line (e.g. the final best of plain random search).
    """
    path = _out_file(out_path)
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict of searcher name -> DataFrame")
    if reference is not None:
        if isinstance(reference, bool) or not isinstance(reference, (int, float, np.number)) \
                or not math.isfinite(float(reference)):
            raise ValueError(f"reference must be a finite number, got {reference!r}")
    prepared = {}
    for searcher, df in curves.items():
        name = f"curves[{searcher!r}]"
        df = _require_frame(df, name, ("budget", "best"))
        budget = _numeric(df["budget"], name, "budget")
        best = _numeric(df["best"], name, "best")
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

    fig, (ax,) = _new_figure(7.0, 4.6)
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
    ax.set_ylabel("best validation AUC so far")
    ax.set_title("searchers compared (band: min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, path)]


# =================================================================================================
# ablation figure


def plot_ablation(table: pd.DataFrame, out_path) -> list[Path]:
    """Grouped bars of an ablation table (columns component, configuration, auc_source, auc_target,
    pauc; optional ``auc_source_std`` etc. as error bars). One group of three bars per
    configuration, configurations grouped by component in table order; NaN values get no bar
    (marked "n/a"). Values are fractions in [0, 1], as :mod:`bohb_search.metrics` reports them.
    """
    path = _out_file(out_path)
    df = _require_frame(table, "table", ("component", "configuration", *ABLATION_METRICS)).reset_index(drop=True)
    if df["component"].isna().any() or df["configuration"].isna().any():
        raise ValueError("table: columns component and configuration must not have missing values")
    values = {m: _numeric(df[m], "table", m, allow_nan=True) for m in ABLATION_METRICS}
    stds = {}
    for m in ABLATION_METRICS:
        v = values[m]
        if ((v < 0) | (v > 1)).any():
            raise ValueError(f"table: column {m} must be in [0, 1] (fractions, not percent), got {np.nanmax(v):g}")
        if f"{m}_std" in df:
            s = _numeric(df[f"{m}_std"], "table", f"{m}_std", allow_nan=True)
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
    fig, (ax,) = _new_figure(max(6.0, 0.9 * len(df) + 0.8 * len(components) + 2.0), 4.8)
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
    return [_save(fig, path)]


# =================================================================================================


def is_png(path) -> bool:
    """True when ``path`` starts with the 8-byte PNG signature and matplotlib decodes it to an image."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            if fh.read(8) != PNG_SIGNATURE:
                return False
        from matplotlib.image import imread

        img = imread(p, format="png")
    except Exception:  # noqa: BLE001 - any decoder error means "not a valid PNG"
        return False
    return img.ndim in (2, 3) and img.shape[0] > 0 and img.shape[1] > 0

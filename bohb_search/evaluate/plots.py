"""Evaluation figures from the ``scores.csv`` that ``evaluate`` writes (PNG files, written atomically).

* :func:`plot_roc_curves`       - ``roc_<machine>.png``: AUC (source) and AUC (target) ROC curves
  (official DCASE definition: the domain's normal clips against *all* anomalies of the machine),
  the chance diagonal and the pAUC range (FPR <= 0.1) shaded; the AUC values come from
  :mod:`bohb_search.evaluate.metrics`;
* :func:`plot_score_histograms` - ``hist_<machine>.png``: normal vs anomalous scores, one panel per
  domain, shared bins.

A bad input raises a one-line ``ValueError`` naming the parameter, column or machine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import section_metrics
from .plotting import is_png, new_figure, numeric_column, require_frame, save_figure

__all__ = ["MAX_FPR", "is_png", "plot_roc_curves", "plot_score_histograms"]

#: the pAUC range of DCASE Task 2 (false-positive rates 0 .. MAX_FPR)
MAX_FPR = 0.1
SCORE_COLUMNS = ("machine", "section", "domain", "label", "score")
_DOMAINS = ("source", "target")
_DOMAIN_COLORS = {"source": "tab:blue", "target": "tab:orange"}
_LABEL_COLORS = {"normal": "tab:green", "anomaly": "tab:red"}


def _safe_name(machine: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", machine).strip("._") or "machine"


def _labelled_scores(scores, name: str = "scores") -> pd.DataFrame:
    """The rows of a scores table with a known label: lower-cased label/domain, float score.

    Rows labelled ``unknown`` (evaluation data without ground truth) are dropped.
    """
    df = require_frame(scores, name, SCORE_COLUMNS)
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
    out["score"] = numeric_column(df["score"].iloc[np.flatnonzero(keep)].reset_index(drop=True), name, "score")
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
    from sklearn.metrics import roc_curve

    df = _labelled_scores(scores)
    machines = sorted(df["machine"].unique())
    # check every machine before writing anything
    for m in machines:
        g = df[df["machine"] == m]
        if not (g["label"] == "anomaly").any():
            raise ValueError(f"scores: machine {m} has no anomalous clips, so its ROC curves cannot be drawn")
        if not (g["label"] == "normal").any():
            raise ValueError(f"scores: machine {m} has no normal clips, so its ROC curves cannot be drawn")
    files = _machine_files(machines, out_dir, "roc")
    written = []
    for m in machines:
        g = df[df["machine"] == m]
        anomalies = g[g["label"] == "anomaly"]["score"].to_numpy()
        fig, (ax,) = new_figure(5.2, 5.0)
        ax.axvspan(0.0, MAX_FPR, color="0.85", alpha=0.6, lw=0, label=f"pAUC range (FPR ≤ {MAX_FPR:g})")
        ax.plot([0, 1], [0, 1], ls="--", color="0.45", lw=1, label="chance")
        metrics = section_metrics(g["score"].to_numpy(), g["label"].to_numpy(), g["domain"].to_numpy(), MAX_FPR)
        for d in _DOMAINS:
            normals = g[(g["label"] == "normal") & (g["domain"] == d)]["score"].to_numpy()
            if len(normals) == 0:  # one-domain data: AUC (d) does not exist
                continue
            y = np.r_[np.zeros(len(normals), int), np.ones(len(anomalies), int)]
            fpr, tpr, _ = roc_curve(y, np.r_[normals, anomalies])
            ax.plot(fpr, tpr, color=_DOMAIN_COLORS[d], lw=2,
                    label=f"{d}: AUC = {metrics[f'auc_{d}']:.3f} ({len(normals)} normal vs {len(anomalies)} anomalous)")
        pauc = metrics["pauc"]
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
        written.append(save_figure(fig, files[m]))
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
        fig, axes = new_figure(9.0, 3.8, ncols=2)
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
        written.append(save_figure(fig, files[m]))
    return written

"""Results tables (paper Tables 2 and 3), DCASE submission files and the decision threshold.

Every number comes from :mod:`bohb_search.metrics`; this module only lays results out and writes
files.  All files are written atomically (:func:`atomic_write_text`: a temporary file in the same
folder, then ``os.replace``), so a reader never sees a half-written table or submission file.

Tables are built from ``{system_name: EvaluationReport}``:

* Table 2 - rows ``System x Metric`` (``AUC (source)``, ``AUC (target)``, ``pAUC``, ``TOTAL``),
  columns ``hmean``, ``amean``;
* Table 3 - rows ``System x Domain`` (``Source``, ``Target`` and, optionally, a ``pAUC`` row),
  columns the machine types in the paper's order (ToyCar, ToyTrain, Fan, Gearbox, Bearing, Slider,
  Valve; DCASE spells the last five in lower case), other machine types appended alphabetically.
  Machines that are in no report are left out; a machine missing from one system is empty there.

The table CSV and Markdown files show 3 decimals; ``per_section.csv`` keeps full precision so the
summary can be recomputed from it.

Only numpy, pandas, scipy and the standard library are imported (no torch, no ray).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from data.atomic import atomic_write_text  # re-exported: one atomic writer for the project

from bohb_search.metrics import SUMMARY_INDEX, EvaluationReport, normalize_section

__all__ = [
    "PAPER_MACHINES",
    "atomic_write_text",
    "machine_display_name",
    "order_machines",
    "table2",
    "table3",
    "per_section_table",
    "to_markdown",
    "write_tables",
    "fit_gamma_threshold",
    "submission_file_names",
    "write_submission",
    "read_submission_scores",
    "read_submission_dir",
]

#: machine types of paper Table 3, in its column order
PAPER_MACHINES: tuple[str, ...] = ("ToyCar", "ToyTrain", "Fan", "Gearbox", "Bearing", "Slider", "Valve")
_PAPER_BY_KEY = {name.lower(): name for name in PAPER_MACHINES}
DECIMALS = 3

_SUBMISSION_RE = re.compile(r"^(anomaly_score|decision_result)_(.+)_section_([^_]+)_test\.csv$")


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def machine_display_name(machine: str) -> str:
    """The paper's spelling of a DCASE machine type (``"fan"`` -> ``"Fan"``); others unchanged."""
    return _PAPER_BY_KEY.get(str(machine).lower(), str(machine))


def order_machines(machines: Sequence[str]) -> list[str]:
    """Distinct machine names, paper machines first in the paper's order, then the rest sorted
    (case-insensitively)."""
    distinct = list(dict.fromkeys(str(m) for m in machines))
    paper = sorted(
        (m for m in distinct if m.lower() in _PAPER_BY_KEY),
        key=lambda m: PAPER_MACHINES.index(_PAPER_BY_KEY[m.lower()]),
    )
    others = sorted((m for m in distinct if m.lower() not in _PAPER_BY_KEY), key=lambda m: (m.lower(), m))
    return paper + others


def _check_reports(reports: Mapping[str, EvaluationReport]) -> None:
    if not isinstance(reports, Mapping) or len(reports) == 0:
        raise ValueError("reports must be a non-empty mapping {system_name: EvaluationReport}")
    for name, report in reports.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"reports: system names must be non-empty strings, got {name!r}")
        if not isinstance(report, EvaluationReport):
            raise ValueError(f"reports[{name!r}] must be an EvaluationReport, got {type(report).__name__}")


def table2(reports: Mapping[str, EvaluationReport]) -> pd.DataFrame:
    """Paper Table 2: rows (System, Metric) with Metric in AUC (source), AUC (target), pAUC, TOTAL;
    columns hmean, amean."""
    _check_reports(reports)
    rows = []
    for system, report in reports.items():
        for metric in SUMMARY_INDEX:
            rows.append(
                {
                    "System": system,
                    "Metric": metric,
                    "hmean": float(report.summary.loc[metric, "hmean"]),
                    "amean": float(report.summary.loc[metric, "amean"]),
                }
            )
    return pd.DataFrame(rows).set_index(["System", "Metric"])


def table3(reports: Mapping[str, EvaluationReport], include_pauc: bool = True) -> pd.DataFrame:
    """Paper Table 3: rows (System, Domain) with Domain Source / Target (and a ``pAUC`` row per
    system when ``include_pauc``); columns the machine types (paper order, then others).  Values
    are machine-level (mean over a machine's sections, see ``EvaluationReport.per_machine``)."""
    _check_reports(reports)
    machines: list[str] = []
    per_machine: dict[str, pd.DataFrame] = {}
    for system, report in reports.items():
        pm = report.per_machine()
        by_display: dict[str, str] = {}
        for machine in pm.index:
            display = machine_display_name(machine)
            if display in by_display:
                raise ValueError(
                    f"reports[{system!r}]: machines {by_display[display]!r} and {machine!r} "
                    f"both map to table column {display!r}"
                )
            by_display[display] = machine
        pm = pm.rename(index=machine_display_name)
        per_machine[system] = pm
        machines.extend(pm.index)
    columns = order_machines(machines)
    row_keys = [("Source", "auc_source"), ("Target", "auc_target")]
    if include_pauc:
        row_keys.append(("pAUC", "pauc"))
    index = pd.MultiIndex.from_tuples(
        [(system, label) for system in reports for label, _ in row_keys], names=["System", "Domain"]
    )
    out = pd.DataFrame(np.nan, index=index, columns=pd.Index(columns, name=None), dtype=float)
    for system, pm in per_machine.items():
        for label, key in row_keys:
            for machine, value in pm[key].items():
                out.loc[(system, label), machine] = float(value)
    return out


def per_section_table(reports: Mapping[str, EvaluationReport]) -> pd.DataFrame:
    """All systems' per-section rows, with a leading ``system`` column."""
    _check_reports(reports)
    frames = []
    for system, report in reports.items():
        frame = report.per_section.copy()
        frame.insert(0, "system", system)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _format_cell(value: Any, decimals: int) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "-"
        return f"{float(value):.{decimals}f}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, decimals: int = DECIMALS) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (index levels become leading columns; a repeated
    outer index value is shown once per group, as in the paper; floats get ``decimals`` decimals;
    NaN is ``-``).  Written here so that ``tabulate`` is not needed."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    has_index = not (isinstance(df.index, pd.RangeIndex) and df.index.name is None)
    flat = df.reset_index() if has_index else df.copy()
    n_index = df.index.nlevels if has_index else 0
    headers = [str(c) for c in flat.columns]
    numeric = [pd.api.types.is_numeric_dtype(flat[c]) for c in flat.columns]
    lines = []
    previous: list[Any] = [object()] * n_index
    body = []
    for row in flat.itertuples(index=False, name=None):
        cells = []
        for j, value in enumerate(row):
            if j < n_index - 1 and all(row[k] == previous[k] for k in range(j + 1)):
                cells.append("")  # same outer group as the row above
            else:
                cells.append(_format_cell(value, decimals))
        previous = list(row[:n_index])
        body.append(cells)
    lines.append("| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |")
    lines.append("|" + "|".join("---:" if num else ":---" for num in numeric) + "|")
    lines.extend("| " + " | ".join(cells) + " |" for cells in body)
    return "\n".join(lines) + "\n"


def write_tables(reports: Mapping[str, EvaluationReport], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``table2.csv``, ``table2.md``, ``table3.csv``, ``table3.md`` and ``per_section.csv``
    into ``out_dir`` (created if needed); returns ``{file name: path}``."""
    _check_reports(reports)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    t2 = table2(reports)
    t3 = table3(reports)
    sections = per_section_table(reports)
    fmt = f"%.{DECIMALS}f"
    written = {
        "table2.csv": atomic_write_text(out / "table2.csv", t2.to_csv(float_format=fmt, lineterminator="\n")),
        "table2.md": atomic_write_text(out / "table2.md", to_markdown(t2)),
        "table3.csv": atomic_write_text(out / "table3.csv", t3.to_csv(float_format=fmt, lineterminator="\n")),
        "table3.md": atomic_write_text(out / "table3.md", to_markdown(t3)),
        "per_section.csv": atomic_write_text(
            out / "per_section.csv", sections.to_csv(index=False, lineterminator="\n")
        ),
    }
    return written


# ---------------------------------------------------------------------------------------------
# decision threshold
# ---------------------------------------------------------------------------------------------
def fit_gamma_threshold(train_scores: Any, percentile: float = 0.9) -> float:
    """Decision threshold as in the DCASE baseline: fit a gamma distribution (shape, loc and scale
    all free, ``scipy.stats.gamma.fit``) to the anomaly scores of the *training* clips and return
    its ``percentile`` quantile (``ppf``).  A clip is then "anomalous" when its score is above it."""
    try:
        p = float(percentile)
    except (TypeError, ValueError):
        raise ValueError(f"percentile must be a number in (0, 1), got {percentile!r}") from None
    if not (0.0 < p < 1.0):
        raise ValueError(f"percentile must be in (0, 1) (0.9 = DCASE baseline), got {percentile!r}")
    arr = np.asarray(train_scores)
    if arr.ndim != 1:
        raise ValueError(f"train_scores must be one-dimensional, got shape {arr.shape}")
    try:
        x = arr.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"train_scores must be numeric, got dtype {arr.dtype}") from None
    if x.size < 2:
        raise ValueError(f"train_scores needs at least 2 scores to fit a gamma distribution, got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError(f"train_scores has {int((~np.isfinite(x)).sum())} non-finite value(s) (NaN/inf)")
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        raise ValueError(f"train_scores are all equal ({lo!r}); a gamma distribution cannot be fitted")
    # The gamma distribution lives on (loc, inf).  The DCASE baseline's scores (reconstruction
    # errors) are positive, but ours need not be (negated similarities, log-likelihood ratios, ...).
    # scipy's maximum-likelihood fit starts from a moment-based guess and a data point at or
    # below the current loc makes the likelihood -inf, so the optimiser is far better behaved on
    # strictly positive data.  A pure translation does not change the fitted shape or scale
    # (the MLE is translation-equivariant: loc simply moves with the data), so we shift the scores
    # to a small positive minimum, fit, and shift the quantile back into the original units.
    shift = 0.0
    if lo <= 0.0:
        shift = -lo + 0.01 * (hi - lo)
    a, loc, scale = scipy.stats.gamma.fit(x + shift)
    threshold = float(scipy.stats.gamma.ppf(p, a, loc=loc, scale=scale)) - shift
    if not math.isfinite(threshold):
        raise ValueError(
            f"train_scores: the gamma fit (shape={a:.4g}, loc={loc:.4g}, scale={scale:.4g}) "
            f"gives a non-finite threshold at percentile {p}"
        )
    return threshold


# ---------------------------------------------------------------------------------------------
# submission files
# ---------------------------------------------------------------------------------------------
def _check_machine(machine: Any) -> str:
    if not isinstance(machine, str) or not machine.strip():
        raise ValueError(f"machine must be a non-empty string, got {machine!r}")
    if any(ch in machine for ch in ("/", "\\", "\n", "\r", ",")) or machine != machine.strip():
        raise ValueError(f"machine {machine!r} cannot be used in a file name (no slashes, commas or spaces at the ends)")
    return machine


def submission_file_names(machine: str, section: Any) -> tuple[str, str]:
    """``(anomaly_score_<machine>_section_<SS>_test.csv, decision_result_<machine>_section_<SS>_test.csv)``."""
    machine = _check_machine(machine)
    ss = normalize_section(section)
    if "_" in ss or "/" in ss or "\\" in ss:
        raise ValueError(f"section {section!r} cannot be used in a file name")
    return (f"anomaly_score_{machine}_section_{ss}_test.csv", f"decision_result_{machine}_section_{ss}_test.csv")


def _csv_text(rows: Sequence[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def write_submission(
    out_dir: str | os.PathLike[str],
    machine: str,
    section: Any,
    file_names: Sequence[str],
    scores: Any,
    threshold: float,
) -> tuple[Path, Path]:
    """Write the two DCASE submission files of one machine type and section into ``out_dir``:
    anomaly scores (``file name,score`` per line, no header) and decisions (``file name,0|1``,
    1 when the score is above ``threshold``, as the DCASE baseline decides).  Scores are written
    with full precision (``repr``) so that reading them back gives the same floats.
    Returns ``(anomaly_score_path, decision_result_path)``."""
    score_name, decision_name = submission_file_names(machine, section)
    names = list(file_names) if not isinstance(file_names, str) else None
    if names is None:
        raise ValueError("file_names must be a sequence of file names, not a single string")
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {s.shape}")
    try:
        s = s.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}") from None
    if len(names) != s.shape[0]:
        raise ValueError(f"file_names has {len(names)} entries but scores has {s.shape[0]}")
    if len(names) == 0:
        raise ValueError("file_names is empty: nothing to write")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"file_names[{i}] must be a non-empty string, got {name!r}")
        if any(ch in name for ch in ("/", "\\", ",", "\n", "\r", '"')):
            raise ValueError(f"file_names[{i}] must be a bare file name without path, comma or quote, got {name!r}")
    duplicates = [n for n, c in pd.Series(names).value_counts().items() if c > 1]
    if duplicates:
        raise ValueError(f"file_names has duplicates: {', '.join(map(repr, duplicates[:5]))}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores has {int((~np.isfinite(s)).sum())} non-finite value(s) (NaN/inf)")
    try:
        thr = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(thr):
        raise ValueError(f"threshold must be finite, got {threshold!r}")

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    decisions = (s > thr).astype(int)
    score_path = atomic_write_text(out / score_name, _csv_text([(n, repr(float(v))) for n, v in zip(names, s)]))
    decision_path = atomic_write_text(out / decision_name, _csv_text([(n, str(int(d))) for n, d in zip(names, decisions)]))
    return score_path, decision_path


def read_submission_scores(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a DCASE anomaly-score (or decision-result) file back: a DataFrame with columns
    ``file_name`` (str) and ``score`` (float; decisions come back as 0.0 / 1.0), in file order."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"submission file {str(p)!r} does not exist")
    with p.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    names: list[str] = []
    values: list[float] = []
    for lineno, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(f"{p.name} line {lineno}: expected 2 fields (file name, score), got {len(row)}")
        try:
            value = float(row[1])
        except ValueError:
            raise ValueError(f"{p.name} line {lineno}: score {row[1]!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{p.name} line {lineno}: score {row[1]!r} is not finite")
        names.append(row[0])
        values.append(value)
    if not names:
        raise ValueError(f"submission file {p.name} has no rows")
    return pd.DataFrame({"file_name": pd.Series(names, dtype=object), "score": np.asarray(values, dtype=float)})


def read_submission_dir(out_dir: str | os.PathLike[str], kind: str = "anomaly_score") -> pd.DataFrame:
    """Every ``<kind>_<machine>_section_<SS>_test.csv`` in ``out_dir`` as one DataFrame with
    columns ``machine``, ``section``, ``file_name``, ``score`` (``kind``: ``anomaly_score`` or
    ``decision_result``); join it with ground truth and pass it to ``evaluate_scores``."""
    if kind not in ("anomaly_score", "decision_result"):
        raise ValueError(f"kind must be 'anomaly_score' or 'decision_result', got {kind!r}")
    folder = Path(out_dir)
    if not folder.is_dir():
        raise ValueError(f"out_dir {str(folder)!r} is not a directory")
    frames = []
    for file in sorted(folder.iterdir()):
        match = _SUBMISSION_RE.match(file.name)
        if not match or match.group(1) != kind:
            continue
        frame = read_submission_scores(file)
        frame.insert(0, "section", match.group(3))
        frame.insert(0, "machine", match.group(2))
        frames.append(frame)
    if not frames:
        raise ValueError(f"out_dir {str(folder)!r} has no {kind}_<machine>_section_<SS>_test.csv files")
    return pd.concat(frames, ignore_index=True)

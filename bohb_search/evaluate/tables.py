"""Results tables (paper Tables 2 and 3) as CSV and Markdown.

Every number comes from :mod:`bohb_search.evaluate.metrics`; this module only lays results out and
writes files, atomically (a temporary file in the same folder, then ``os.replace``).

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

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.atomic import atomic_write_text

from .metrics import SUMMARY_INDEX, EvaluationReport

__all__ = [
    "PAPER_MACHINES",
    "machine_display_name",
    "order_machines",
    "table2",
    "table3",
    "per_section_table",
    "to_markdown",
    "write_tables",
    "diagnostics_table",
]

#: machine types of paper Table 3, in its column order
PAPER_MACHINES: tuple[str, ...] = ("ToyCar", "ToyTrain", "Fan", "Gearbox", "Bearing", "Slider", "Valve")
_PAPER_BY_KEY = {name.lower(): name for name in PAPER_MACHINES}
DECIMALS = 3

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
            return "n/a"
        return f"{float(value):.{decimals}f}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, decimals: int = DECIMALS) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (index levels become leading columns; a repeated
    outer index value is shown once per group, as in the paper; floats get ``decimals`` decimals;
    NaN — a value that does not exist, e.g. AUC (target) without target-domain clips — is ``n/a``).  Written here so that ``tabulate`` is not needed."""
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


def diagnostics_table(reports: Mapping[str, EvaluationReport]) -> pd.DataFrame:
    """Rows (System, machine) and ``all``; columns the within-domain AUCs and the domain AUC of the normals."""
    _check_reports(reports)
    frames = []
    for system, report in reports.items():
        d = report.diagnostics().rename(index=machine_display_name)
        d.index = pd.MultiIndex.from_product([[system], d.index], names=["System", "Machine"])
        frames.append(d)
    return pd.concat(frames)


def write_tables(reports: Mapping[str, EvaluationReport], out_dir: str | os.PathLike[str],
                 note: str | None = None) -> dict[str, Path]:
    """Write ``table2``, ``table3`` and ``diagnostics`` (CSV and Markdown) and ``per_section.csv`` into
    ``out_dir`` (created if needed); ``note`` (which clips the tables report on) ends every Markdown
    table. Returns ``{file name: path}``."""
    _check_reports(reports)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    t2 = table2(reports)
    t3 = table3(reports)
    diag = diagnostics_table(reports)
    sections = per_section_table(reports)
    fmt = f"%.{DECIMALS}f"
    tail = f"\n{note}\n" if note else ""
    written = {
        "table2.csv": atomic_write_text(out / "table2.csv", t2.to_csv(float_format=fmt, lineterminator="\n")),
        "table2.md": atomic_write_text(out / "table2.md", to_markdown(t2) + tail),
        "table3.csv": atomic_write_text(out / "table3.csv", t3.to_csv(float_format=fmt, lineterminator="\n")),
        "table3.md": atomic_write_text(out / "table3.md", to_markdown(t3) + tail),
        "diagnostics.csv": atomic_write_text(out / "diagnostics.csv", diag.to_csv(float_format=fmt, lineterminator="\n")),
        "diagnostics.md": atomic_write_text(out / "diagnostics.md", to_markdown(diag) + tail),
        "per_section.csv": atomic_write_text(
            out / "per_section.csv", sections.to_csv(index=False, lineterminator="\n")
        ),
    }
    return written

"""DCASE submission files (``anomaly_score_*`` / ``decision_result_*``).

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a reader
never sees a half-written submission file.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.atomic import atomic_write_text

from .metrics import normalize_section

__all__ = [
    "submission_file_names",
    "write_submission",
    "read_submission_scores",
    "read_submission_dir",
]

_SUBMISSION_RE = re.compile(r"^(anomaly_score|decision_result)_(.+)_section_([^_]+)_test\.csv$")


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

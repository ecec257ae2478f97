"""The one place where anomaly-detection metrics are computed (DCASE Task 2, official definition).

Everything that reports a number - the search metric, the results tables, the submission
round-trip and the benchmarks - calls the functions below, so the definitions live only here.

Definitions (identical to the official DCASE 2023-2025 Task 2 evaluator):

* per machine type and section,
  - ``AUC (source)``: ROC-AUC of the source-domain *normal* clips against *all* anomalous clips of
    the section (source and target anomalies alike);
  - ``AUC (target)``: likewise with the target-domain normal clips;
  - ``pAUC``: ROC-AUC restricted to false-positive rates in ``[0, max_fpr]`` (``max_fpr = 0.1``),
    over all clips of the section (both domains), as the McClish-standardized value that
    ``sklearn.metrics.roc_auc_score(y, s, max_fpr=0.1)`` returns (0.5 = chance, 1 = perfect);
* the per-metric ``hmean`` / ``amean`` are the harmonic / arithmetic means of that metric over all
  (machine, section) values - the evaluator's "over all machine types and sections" rows.  In the
  DCASE 2023-2025 data every machine has a single section, so these are means over machines, as in
  paper Tables 2 and 3; with several sections per machine each section counts once (the
  evaluator's choice, not a mean of per-machine means);
* ``official_score``: harmonic mean of *every* AUC (source), AUC (target) and pAUC value over all
  machines and sections, pooled into one list (the challenge ranking score);
* ``TOTAL`` (paper Table 2): arithmetic mean of the three per-metric harmonic means
  (``total_hmean``), and likewise the arithmetic mean of the three per-metric arithmetic means
  (``total_amean``).  TOTAL and the official score differ in general (a harmonic mean of means is
  not the harmonic mean of the pooled values).

Machine-level values (paper Table 3) for a machine with several sections are the arithmetic mean
of its section values, as the evaluator's per-machine-type columns are (:meth:`EvaluationReport.per_machine`).

A higher score means "more anomalous".  As the evaluator, :func:`evaluate_scores` floors values at
machine epsilon before taking harmonic means, so a section whose AUC is exactly 0 (possible on a
few clips) drags the score to ~0 instead of failing; :func:`hmean` itself rejects values <= 0.

Only numpy, pandas, scipy and scikit-learn are imported, so this module is cheap to import from
the search workers, the CLI and the benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.metrics import roc_auc_score

from data.atomic import to_python

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "SUMMARY_INDEX",
    "DIAGNOSTICS",
    "PER_SECTION_COLUMNS",
    "REQUIRED_COLUMNS",
    "EvaluationReport",
    "hmean",
    "section_metrics",
    "evaluate_scores",
    "validation_auc",
    "normalize_labels",
    "normalize_domains",
    "normalize_section",
]

#: keys of :func:`section_metrics`, in table order
METRICS: tuple[str, ...] = ("auc_source", "auc_target", "pauc")
#: display names used by the evaluator and the paper's tables
METRIC_LABELS: dict[str, str] = {
    "auc_source": "AUC (source)",
    "auc_target": "AUC (target)",
    "pauc": "pAUC",
}
SUMMARY_INDEX: tuple[str, ...] = ("AUC (source)", "AUC (target)", "pAUC", "TOTAL")
#: diagnostics of :func:`section_metrics`: do anomalies or domains drive the score?
DIAGNOSTICS: tuple[str, ...] = ("auc_source_within", "auc_target_within", "domain_auc_normals")
DIAGNOSTIC_LABELS: dict[str, str] = {
    "auc_source_within": "AUC within source (source normals vs source anomalies)",
    "auc_target_within": "AUC within target (target normals vs target anomalies)",
    "domain_auc_normals": "domain AUC of normals (target vs source normals; 0.5 = no domain offset)",
}
PER_SECTION_COLUMNS: tuple[str, ...] = (
    "machine",
    "section",
    "auc_source",
    "auc_target",
    "pauc",
    *DIAGNOSTICS,
    "n_normal_source",
    "n_normal_target",
    "n_anomaly",
    "n_anomaly_source",
    "n_anomaly_target",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("machine", "section", "domain", "label", "score")

_LABEL_WORDS = {"normal": 0, "anomaly": 1}
_DOMAIN_WORDS = ("source", "target")


# ---------------------------------------------------------------------------------------------
# input checking
# ---------------------------------------------------------------------------------------------
def _prefix(context: str | None) -> str:
    return f"{context}: " if context else ""


def _show(values: Iterable[Any], limit: int = 5) -> str:
    """A short, one-line rendering of some offending values."""
    vals = list(values)
    text = ", ".join(repr(v) for v in vals[:limit])
    return text + (", ..." if len(vals) > limit else "")


def _as_scores(scores: Any, name: str = "scores", context: str | None = None) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 1:
        raise ValueError(f"{_prefix(context)}{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{_prefix(context)}{name} is empty")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError):
            raise ValueError(f"{_prefix(context)}{name} must be numeric, got dtype {arr.dtype}") from None
    arr = arr.astype(float, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{_prefix(context)}{name} has {int(bad.sum())} non-finite value(s) (NaN/inf) "
            f"at position(s) {_show(np.flatnonzero(bad).tolist())}"
        )
    return arr


def normalize_labels(labels: Any, name: str = "labels", context: str | None = None) -> np.ndarray:
    """Map labels given as 0/1, booleans or ``"normal"``/``"anomaly"`` to an int array of 0/1."""
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{_prefix(context)}{name} must be one-dimensional, got shape {arr.shape}")
    out = np.empty(arr.shape[0], dtype=np.int64)
    bad: list[Any] = []
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, str):
            key = v.strip().lower()
            if key in _LABEL_WORDS:
                out[i] = _LABEL_WORDS[key]
                continue
        elif isinstance(v, (bool, np.bool_, int, np.integer, float, np.floating)) and not (
            isinstance(v, (float, np.floating)) and math.isnan(v)
        ):
            if v == 0 or v == 1:
                out[i] = int(v)
                continue
        bad.append(v)
    if bad:
        uniq = list(dict.fromkeys(repr(b) for b in bad))
        raise ValueError(
            f"{_prefix(context)}{name} must be 0/1 or 'normal'/'anomaly'; got {len(bad)} other value(s): "
            + ", ".join(uniq[:5])
            + (", ..." if len(uniq) > 5 else "")
        )
    return out


def normalize_domains(domains: Any, name: str = "domains", context: str | None = None) -> np.ndarray:
    """Map domains to a lower-case string array of ``"source"``/``"target"`` (case-insensitive)."""
    arr = np.asarray(domains, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{_prefix(context)}{name} must be one-dimensional, got shape {arr.shape}")
    out = np.empty(arr.shape[0], dtype=object)
    bad: list[Any] = []
    for i, v in enumerate(arr.tolist()):
        key = v.strip().lower() if isinstance(v, str) else None
        if key in _DOMAIN_WORDS:
            out[i] = key
        else:
            bad.append(v)
    if bad:
        uniq = list(dict.fromkeys(repr(b) for b in bad))
        raise ValueError(
            f"{_prefix(context)}{name} must be 'source' or 'target'; got {len(bad)} other value(s): "
            + ", ".join(uniq[:5])
            + (", ..." if len(uniq) > 5 else "")
        )
    return out.astype(str)


def normalize_section(section: Any) -> str:
    """Section ids as DCASE writes them: integers (or digit strings) become two digits, ``7`` -> ``"07"``;
    a ``"section_07"`` prefix is dropped; any other string is kept as it is."""
    if isinstance(section, (bool, np.bool_)):
        raise ValueError(f"section must be an integer or a string, got {section!r}")
    if isinstance(section, (int, np.integer)):
        if section < 0:
            raise ValueError(f"section must be non-negative, got {section!r}")
        return f"{int(section):02d}"
    if isinstance(section, (float, np.floating)) and float(section).is_integer() and section >= 0:
        return f"{int(section):02d}"
    if isinstance(section, str):
        text = section.strip()
        if text.lower().startswith("section_"):
            text = text[len("section_"):]
        if not text:
            raise ValueError(f"section must not be empty, got {section!r}")
        return f"{int(text):02d}" if text.isdigit() else text
    raise ValueError(f"section must be an integer or a string, got {section!r}")


def _check_max_fpr(max_fpr: float) -> float:
    try:
        value = float(max_fpr)
    except (TypeError, ValueError):
        raise ValueError(f"max_fpr must be a number in (0, 1], got {max_fpr!r}") from None
    if not (0.0 < value <= 1.0):
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr!r}")
    return value


# ---------------------------------------------------------------------------------------------
# primitives
# ---------------------------------------------------------------------------------------------
def hmean(values: Iterable[float], name: str = "values") -> float:
    """Harmonic mean (``scipy.stats.hmean``) of strictly positive, finite values.

    ``name`` is the metric being averaged; it appears in the error for an empty input, a
    non-finite value or a value <= 0 (for which a harmonic mean is undefined or meaningless).
    """
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"hmean of {name}: no values")
    if not np.isfinite(arr).all():
        raise ValueError(f"hmean of {name}: non-finite value(s) {_show(arr[~np.isfinite(arr)].tolist())}")
    if (arr <= 0).any():
        raise ValueError(
            f"hmean of {name}: value(s) <= 0 {_show(arr[arr <= 0].tolist())}; "
            "a harmonic mean needs strictly positive values"
        )
    return float(scipy.stats.hmean(arr))


def validation_auc(scores: Any, labels: Any) -> float:
    """Plain ROC-AUC of anomaly scores against 0/1 (or normal/anomaly) labels - the search metric."""
    s = _as_scores(scores)
    y = normalize_labels(labels)
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} entries but scores has {s.shape[0]}")
    n_anomaly = int(y.sum())
    if n_anomaly == 0 or n_anomaly == y.shape[0]:
        which = "anomalous" if n_anomaly == 0 else "normal"
        raise ValueError(f"labels has no {which} clips: an AUC needs both normal and anomalous clips")
    return float(roc_auc_score(y, s))


def _auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """ROC-AUC of ``positives`` scoring above ``negatives``; NaN when either side is empty."""
    if len(negatives) == 0 or len(positives) == 0:
        return math.nan
    y = np.r_[np.zeros(len(negatives), dtype=np.int64), np.ones(len(positives), dtype=np.int64)]
    return float(roc_auc_score(y, np.r_[negatives, positives]))


def section_metrics(
    scores: Any,
    labels: Any,
    domains: Any,
    max_fpr: float = 0.1,
    *,
    context: str | None = None,
) -> dict[str, float]:
    """Official DCASE metrics of one machine type and section, and three diagnostics.

    Returns ``auc_source``, ``auc_target`` (a domain's normals against *all* anomalies of the section;
    NaN when the section has no normal clip of that domain, e.g. DCASE 2020 data or a one-domain
    machine), ``pauc`` (all clips, ``max_fpr``), the diagnostics of :data:`DIAGNOSTICS` (within-domain
    AUCs; the AUC of target against source normals, which is 0.5 when the score does not encode the
    domain) and the clip counts. ``context`` (for example ``"machine 'fan', section '00'"``) prefixes
    every error message. A section without anomalous clips, or without normal clips, has no metric.
    """
    max_fpr = _check_max_fpr(max_fpr)
    s = _as_scores(scores, context=context)
    y = normalize_labels(labels, context=context)
    d = normalize_domains(domains, context=context)
    if not (y.shape[0] == d.shape[0] == s.shape[0]):
        raise ValueError(
            f"{_prefix(context)}scores, labels and domains must have the same length, "
            f"got {s.shape[0]}, {y.shape[0]} and {d.shape[0]}"
        )
    anomaly = y == 1
    normal_source = (y == 0) & (d == "source")
    normal_target = (y == 0) & (d == "target")
    counts = {
        "n_normal_source": int(normal_source.sum()),
        "n_normal_target": int(normal_target.sum()),
        "n_anomaly": int(anomaly.sum()),
        "n_anomaly_source": int((anomaly & (d == "source")).sum()),
        "n_anomaly_target": int((anomaly & (d == "target")).sum()),
    }
    if counts["n_anomaly"] == 0:
        raise ValueError(f"{_prefix(context)}no anomalous clips, so no AUC or pAUC can be computed")
    if counts["n_normal_source"] + counts["n_normal_target"] == 0:
        raise ValueError(f"{_prefix(context)}no normal clips, so no AUC or pAUC can be computed")

    out: dict[str, Any] = {}
    for domain, normals in (("source", normal_source), ("target", normal_target)):
        # the domain's normals against every anomaly of the section, whatever its domain
        out[f"auc_{domain}"] = _auc(s[normals], s[anomaly])
    # all clips of the section; scikit-learn returns the McClish-standardized partial AUC
    out["pauc"] = float(roc_auc_score(y, s, max_fpr=max_fpr))
    for domain, normals in (("source", normal_source), ("target", normal_target)):
        out[f"auc_{domain}_within"] = _auc(s[normals], s[anomaly & (d == domain)])
    out["domain_auc_normals"] = _auc(s[normal_source], s[normal_target])
    out.update(counts)
    return out


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
@dataclass
class EvaluationReport:
    """Everything one evaluation produces; see the module docstring for the definitions.

    ``per_section``: one row per (machine, section) with columns :data:`PER_SECTION_COLUMNS`.
    ``summary``: indexed by ``AUC (source)``, ``AUC (target)``, ``pAUC``, ``TOTAL``; columns
    ``hmean`` and ``amean``.
    """

    per_section: pd.DataFrame
    summary: pd.DataFrame
    official_score: float
    total_hmean: float
    total_amean: float
    max_fpr: float = 0.1

    def per_machine(self) -> pd.DataFrame:
        """Machine-level values (arithmetic mean over a machine's sections, as the evaluator's
        per-machine-type columns), indexed by machine in first-appearance order."""
        cols = list(METRICS)
        grouped = self.per_section.groupby("machine", sort=False)[cols].mean()
        grouped.index.name = "machine"
        return grouped

    def diagnostics(self) -> pd.DataFrame:
        """Per machine (mean over its sections) and over all machines (row ``all``): the within-domain
        AUCs and the domain AUC of the normals — whether anomalies or domains drive the score."""
        cols = [c for c in DIAGNOSTICS if c in self.per_section]
        table = self.per_section.groupby("machine", sort=False)[cols].mean()
        table.loc["all"] = self.per_section[cols].mean()
        table.index.name = "machine"
        return table

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary (plain Python types only; NaN where a value does not exist)."""
        per_section = [
            {k: _json_number(v) for k, v in row.items()} for row in self.per_section.to_dict(orient="records")
        ]
        summary = {
            str(metric): {str(col): _json_number(self.summary.loc[metric, col]) for col in self.summary.columns}
            for metric in self.summary.index
        }
        diagnostics = {m: {k: _json_number(v) for k, v in row.items()}
                       for m, row in self.diagnostics().to_dict(orient="index").items()}
        return {
            "official_score": _json_number(self.official_score),
            "total_hmean": _json_number(self.total_hmean),
            "total_amean": _json_number(self.total_amean),
            "max_fpr": float(self.max_fpr),
            "summary": summary,
            "per_section": per_section,
            "diagnostics": diagnostics,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationReport":
        """Inverse of :meth:`to_dict` (for example after ``json.load``)."""
        missing = [k for k in ("official_score", "total_hmean", "total_amean", "summary", "per_section") if k not in data]
        if missing:
            raise ValueError(f"EvaluationReport.from_dict: missing key(s) {', '.join(missing)}")
        per_section = pd.DataFrame(list(data["per_section"]), columns=list(PER_SECTION_COLUMNS))
        for col in (*METRICS, *DIAGNOSTICS):
            per_section[col] = pd.to_numeric(per_section[col], errors="coerce").astype(float)
        summary = pd.DataFrame.from_dict(dict(data["summary"]), orient="index").astype(float)
        summary.index.name = "metric"
        return cls(
            per_section=per_section,
            summary=summary,
            official_score=math.nan if data["official_score"] is None else float(data["official_score"]),
            total_hmean=math.nan if data["total_hmean"] is None else float(data["total_hmean"]),
            total_amean=math.nan if data["total_amean"] is None else float(data["total_amean"]),
            max_fpr=float(data.get("max_fpr", 0.1)),
        )


OFFICIAL_FLOOR = float(np.finfo(float).eps)  # the evaluator's floor before harmonic means


def evaluate_scores(df: pd.DataFrame, max_fpr: float = 0.1, floor: float | None = OFFICIAL_FLOOR) -> EvaluationReport:
    """Evaluate a table of anomaly scores with the official DCASE definitions.

    ``df`` needs the columns ``machine``, ``section``, ``domain`` (source/target), ``label``
    (0/1 or normal/anomaly) and ``score`` (higher = more anomalous); other columns are ignored.
    Sections are normalised with :func:`normalize_section` (``0`` and ``"00"`` are one section).
    ``floor``: see :func:`_report_from_per_section`.
    Rows of ``per_section`` are sorted by machine, then section.
    """
    max_fpr = _check_max_fpr(max_fpr)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"df is missing column(s) {', '.join(missing)} (needs {', '.join(REQUIRED_COLUMNS)})")
    if len(df) == 0:
        raise ValueError("df has no rows")
    if df["machine"].isna().any():
        raise ValueError(f"column 'machine' has {int(df['machine'].isna().sum())} missing value(s)")
    if df["section"].isna().any():
        raise ValueError(f"column 'section' has {int(df['section'].isna().sum())} missing value(s)")

    # validate whole columns first so that errors name the column
    scores = _as_scores(df["score"].to_numpy(), name="column 'score'")
    labels = normalize_labels(df["label"].to_numpy(), name="column 'label'")
    domains = normalize_domains(df["domain"].to_numpy(), name="column 'domain'")
    try:
        sections = [normalize_section(v) for v in df["section"].tolist()]
    except ValueError as exc:
        raise ValueError(f"column 'section': {exc}") from None
    work = pd.DataFrame(
        {
            "machine": df["machine"].astype(str).to_numpy(),
            "section": sections,
            "domain": domains,
            "label": labels,
            "score": scores,
        }
    )

    rows = []
    for (machine, section), group in work.groupby(["machine", "section"], sort=True):
        context = f"machine {machine!r}, section {section!r}"
        m = section_metrics(
            group["score"].to_numpy(),
            group["label"].to_numpy(),
            group["domain"].to_numpy(),
            max_fpr=max_fpr,
            context=context,
        )
        rows.append({"machine": machine, "section": section, **m})
    per_section = pd.DataFrame(rows, columns=list(PER_SECTION_COLUMNS))
    return _report_from_per_section(per_section, max_fpr, floor)


def _json_number(value: Any) -> Any:
    """numpy → Python, NaN → None (strict JSON has no NaN)."""
    value = to_python(value)
    return None if isinstance(value, float) and math.isnan(value) else value


def _floored(values: np.ndarray, floor: float | None) -> np.ndarray:
    return values if floor is None else np.maximum(values, floor)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _report_from_per_section(per_section: pd.DataFrame, max_fpr: float, floor: float | None = None) -> EvaluationReport:
    """Means over the values that exist: a machine without target-domain normals (DCASE 2020, one-domain
    data) has no AUC (target), and the official score is the harmonic mean of the values there are.
    ``floor`` raises values below it before the harmonic means, as the official evaluator does with
    machine epsilon (a few clips can give an AUC of 0); ``None`` makes such a value an error naming the metric."""
    summary = pd.DataFrame(index=pd.Index(SUMMARY_INDEX, name="metric"), columns=["hmean", "amean"], dtype=float)
    for key in METRICS:
        label = METRIC_LABELS[key]
        values = _floored(_finite(per_section[key].to_numpy(dtype=float)), floor)
        summary.loc[label, "hmean"] = hmean(values, name=label) if len(values) else math.nan
        summary.loc[label, "amean"] = float(np.mean(values)) if len(values) else math.nan
    metric_rows = [METRIC_LABELS[k] for k in METRICS]
    total_hmean = float(np.nanmean(summary.loc[metric_rows, "hmean"].to_numpy(dtype=float)))
    total_amean = float(np.nanmean(summary.loc[metric_rows, "amean"].to_numpy(dtype=float)))
    summary.loc["TOTAL", "hmean"] = total_hmean
    summary.loc["TOTAL", "amean"] = total_amean
    pooled = _floored(_finite(np.concatenate([per_section[k].to_numpy(dtype=float) for k in METRICS])), floor)
    official = hmean(pooled, name="official score (all AUC (source), AUC (target) and pAUC values)")
    return EvaluationReport(
        per_section=per_section,
        summary=summary,
        official_score=official,
        total_hmean=total_hmean,
        total_amean=total_amean,
        max_fpr=max_fpr,
    )

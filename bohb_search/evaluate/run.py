"""``evaluate``: score a model's test clips, write DCASE submission files, and where labels exist the
official metrics, diagnostics, Table 2/3-style tables and figures — on the clips no model selection saw."""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data.atomic import atomic_write_csv, atomic_write_json
from data.config import RunOptions
from data.datasets import DataError, labelled_mask, load_feature_table, read_manifests, split_test_clips

from ..scoring.ensemble import EnsembleModel
from ..scoring.model import AnomalyModel
from .metrics import EvaluationReport, evaluate_scores
from .submission import write_submission
from .tables import write_tables


def log(msg: str, quiet: bool) -> None:
    """A progress line that does not break tqdm's bars."""
    if not quiet:
        tqdm.write(msg)


SAME_CLIPS_MARK = " †"  # a system selected on the clips its tables report on


def report_skipped(skipped: list[tuple[str, str]], quiet: bool = False) -> None:
    """The bad files ``--on-bad-file skip`` left out: a count and every name, on stderr."""
    if skipped:
        print(f"skipped {len(skipped)} bad file(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)


def load_model(paths, score=None):
    """One checkpoint → :class:`AnomalyModel`; several → their :class:`EnsembleModel`. What a loaded score
    does other than its settings say (a knn_k above a bank's size) is said once, on stderr."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    model = AnomalyModel.load(paths[0], score=score) if len(paths) == 1 else EnsembleModel.load(paths, score=score)
    for path, m in zip(paths, model.models if isinstance(model, EnsembleModel) else [model]):
        for note in m.notes:
            print(f"note: {path}: {note}", file=sys.stderr)
    return model


def score_test_split(model, data_roots: Sequence[str | Path], opts: RunOptions = RunOptions()) -> pd.DataFrame:
    """Scores of every test clip of the model's machines: machine, section, domain, label, file, path,
    part ("validation" / "report" half of the labelled test split, "unlabelled") and score."""
    manifest = read_manifests(data_roots)
    test = manifest[(manifest["split"] == "test") & manifest["machine"].isin(model.machines)]
    if test.empty:
        raise DataError(f"no test clips for {', '.join(model.machines)} under {', '.join(map(str, data_roots))}")
    test = test.reset_index(drop=True)
    models = model.models if isinstance(model, EnsembleModel) else [model]
    tables = {}
    for m in models:  # models reading the same log-mels share one read of the cache
        key = m.feature_cfg.key()
        if key not in tables:
            tables[key] = load_feature_table(test, m.feature_cfg, opts.cache_dir, opts.on_bad_file, not opts.quiet)
    kept = set.intersection(*(set(t.manifest["path"]) for t in tables.values()))
    first = next(iter(tables.values()))
    df = first.manifest[first.manifest["path"].isin(kept)][["machine", "section", "domain", "label", "file", "path"]]
    df = df.reset_index(drop=True)
    df["part"] = "unlabelled"
    labelled = labelled_mask(df)
    if labelled.any():
        df.loc[labelled, "part"] = split_test_clips(df[labelled])
    machines = df["machine"].astype(str).to_numpy()
    per_model = []
    for m in models:
        t = tables[m.feature_cfg.key()]
        position = {path: i for i, path in enumerate(t.manifest["path"])}
        rows = np.array([position[path] for path in df["path"]], dtype=np.int64)
        per_model.append(m.score_features(t.features[rows], machines))
    df["score"] = per_model[0] if len(models) == 1 else model.combine(per_model, machines)
    df.attrs["skipped"] = sorted({s for t in tables.values() for s in t.skipped})
    return df


def reported_clips(model, scores: pd.DataFrame) -> tuple[pd.DataFrame, str, bool]:
    """The labelled clips the tables report on, a note saying which, and whether they are the clips the
    model was selected on. A model selected on the validation half is reported on the other half;
    models selected without test clips are reported on all of them."""
    labelled = scores[scores["part"] != "unlabelled"]
    selection = model.bundle.get("selection")
    if selection is None:  # checkpoints of earlier versions validated on the whole labelled test split
        selection = "whole test split" if "labelled" in str(model.bundle.get("val_source", "")) else "held-out normals"
    if selection == "validation part":
        part = labelled[labelled["part"] == "report"]
        return part, (f"Reported on the report half of the labelled test split ({len(part)} clips); the model was "
                      f"selected on the other half ({int((labelled['part'] == 'validation').sum())} clips)."), False
    if selection == "whole test split":
        return labelled, (f"{SAME_CLIPS_MARK.strip()} Reported on the whole labelled test split ({len(labelled)} "
                          "clips), the clips the model was selected on: optimistic."), True
    return labelled, (f"Reported on the whole labelled test split ({len(labelled)} clips); no test clip was used "
                      f"for model selection ({selection})."), False


@dataclass
class EvaluationOutcome:
    """What an evaluation wrote: the report (None without metrics), the files in words, and why there are
    no metrics and tables when there are none."""

    report: EvaluationReport | None
    written: list[str]
    no_metrics: str | None = None

    def summary(self, out: str | Path) -> str:
        """One line for the user: exactly what was written under ``out``, and why metrics are absent."""
        text = f"wrote {_words(self.written)} under {out}"
        return text if self.no_metrics is None else f"{text}; no metrics or tables: {self.no_metrics}"


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def run_evaluate(model_path, data_roots: Sequence[str | Path], out_dir: str | Path,
                 system: str | None = None, opts: RunOptions = RunOptions(), score=None) -> EvaluationReport | None:
    """Score the test split and write submission files for every clip; where labels exist, the official
    metrics, diagnostics, tables and figures on the clips no model selection saw (None where there are
    none: :func:`evaluate_into` says why). ``score`` re-scores the model with another setting (a
    ScoreConfig, a dict of its fields, or "mse"/"mahalanobis" for the AE)."""
    return evaluate_into(model_path, data_roots, out_dir, system, opts, score).report


def evaluate_into(model_path, data_roots: Sequence[str | Path], out_dir: str | Path,
                  system: str | None = None, opts: RunOptions = RunOptions(), score=None) -> EvaluationOutcome:
    """:func:`run_evaluate`, returning what it wrote and why metrics are absent where they are.

    Everything is written into a temporary folder beside ``out_dir`` and moved into place at the end, so
    a failed evaluation leaves ``out_dir`` as it was and a finished one never mixes with older results.
    """
    model = load_model(model_path, score=score)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "scores.csv").exists():
        raise DataError(f"{out}: a non-empty folder that holds no earlier evaluation; give an empty or new --out")
    df = score_test_split(model, data_roots, opts)
    report_skipped(df.attrs["skipped"], opts.quiet)
    for machine in sorted(set(df["machine"])):
        if model.thresholds.get(machine) is None:
            raise DataError(f"{model_path}: no decision threshold for machine {machine}")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        outcome = _write_evaluation(model, model_path, df, work, system, opts)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{work.name.rsplit('-', 1)[-1]}")
            out.rename(old)
            work.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return outcome


def why_no_metrics(scores: pd.DataFrame, reported: pd.DataFrame) -> str | None:
    """Why the official metrics cannot be computed on ``reported`` (the clips the tables would report on),
    or None when they can."""
    labelled = scores[scores["part"] != "unlabelled"]
    if labelled.empty:
        return (f"none of the {len(scores)} test clips has a known label and domain (evaluation-format names "
                f"such as section_00_test_0000.wav, and no ground_truth_*.csv beside them)")
    if reported.empty:
        return "no labelled test clip lies in the part the tables report on"
    labels = sorted(reported["label"].unique())
    if len(labels) < 2:
        return (f"the {len(reported)} labelled test clips reported on are all {labels[0]}: AUC and pAUC need both "
                f"normal and anomalous clips")
    return None


def _write_evaluation(model, model_path, df: pd.DataFrame, out: Path, system: str | None,
                      opts: RunOptions) -> EvaluationOutcome:
    atomic_write_csv(df, out / "scores.csv")
    written = [f"scores.csv ({len(df)} clips)"]
    skipped = [{"path": p, "reason": r} for p, r in df.attrs.get("skipped", [])]
    if skipped:
        atomic_write_csv(pd.DataFrame(skipped), out / "skipped.csv")
    groups = df.groupby(["machine", "section"])
    for (machine, section), g in groups:
        write_submission(out / "submission", machine, section, g["file"].tolist(), g["score"].to_numpy(),
                         model.thresholds[machine])
    written.append(f"submission files for {groups.ngroups} machine section(s) (submission/)")
    if skipped:
        written.append(f"skipped.csv ({len(skipped)} bad files)")
    reported, note, same_clips = reported_clips(model, df)
    reason = why_no_metrics(df, reported)
    if reason is not None:
        log(f"no metrics: {reason}", opts.quiet)
        return EvaluationOutcome(None, written, reason)
    default_name = " + ".join(Path(p).parent.name for p in ([model_path] if isinstance(model_path, (str, Path))
                                                             else model_path))
    name = (system or default_name) + (SAME_CLIPS_MARK if same_clips else "")
    report = evaluate_scores(reported)
    write_tables({name: report}, out, note=f"{note} Score: {model.score_label}.")
    atomic_write_json(out / "metrics.json", {**report.to_dict(), "reported_on": note, "score": model.score_label,
                                             "selected_on_reported_clips": same_clips, "skipped_files": skipped},
                      sort_keys=True)
    from .plots import plot_roc_curves, plot_score_histograms

    plot_roc_curves(reported, out / "plots")
    plot_score_histograms(reported, out / "plots")
    return EvaluationOutcome(report, ["scores.csv, submission files, tables (CSV and Markdown), metrics.json and "
                                      "plots"] + written[2:])


def write_score_csv(results, path: Path) -> None:
    atomic_write_csv(pd.DataFrame([r.__dict__ for r in results]), path)

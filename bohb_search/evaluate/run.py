"""``evaluate``: score a model's test clips, write DCASE submission files, and where labels exist the
official metrics, Table 2/3-style tables and figures. Also the options every stage runner takes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from data.atomic import atomic_write_csv, atomic_write_json
from data.config import RunOptions
from data.datasets import DataError, load_feature_table, read_manifests

from ..scoring.model import AnomalyModel
from .metrics import EvaluationReport, evaluate_scores
from .submission import write_submission
from .tables import write_tables


def log(msg: str, quiet: bool) -> None:
    """A progress line that does not break tqdm's bars."""
    if not quiet:
        tqdm.write(msg)


def score_test_split(model: AnomalyModel, data_roots: Sequence[str | Path], opts: RunOptions = RunOptions()
                     ) -> pd.DataFrame:
    """Scores of every test clip of the model's machines: machine, section, domain, label, file, score."""
    manifest = read_manifests(data_roots)
    test = manifest[(manifest["split"] == "test") & manifest["machine"].isin(model.machines)]
    if test.empty:
        raise DataError(f"no test clips for {', '.join(model.machines)} under {', '.join(map(str, data_roots))}")
    table = load_feature_table(test.reset_index(drop=True), model.feature_cfg, opts.cache_dir, opts.on_bad_file,
                               not opts.quiet)
    df = table.manifest[["machine", "section", "domain", "label", "file", "path"]].copy()
    df["score"] = model.score_features(table.features)
    return df


def run_evaluate(model_path: str | Path, data_roots: Sequence[str | Path], out_dir: str | Path,
                 system: str | None = None, opts: RunOptions = RunOptions()) -> EvaluationReport | None:
    """Score the test split, write submission files; compute metrics and tables where labels exist."""
    model = AnomalyModel.load(model_path)
    out = Path(out_dir)
    df = score_test_split(model, data_roots, opts)
    atomic_write_csv(df, out / "scores.csv")
    for (machine, section), g in df.groupby(["machine", "section"]):
        thr = model.thresholds.get(machine)
        if thr is None:
            raise DataError(f"{model_path}: no decision threshold for machine {machine}")
        write_submission(out / "submission", machine, section, g["file"].tolist(), g["score"].to_numpy(), thr)
    labelled = df[df["label"].isin(["normal", "anomaly"]) & df["domain"].isin(["source", "target"])]
    if labelled.empty:
        log("test labels unknown: wrote submission files only", opts.quiet)
        return None
    report = evaluate_scores(labelled)
    write_tables({system or Path(model_path).parent.name: report}, out)
    atomic_write_json(out / "metrics.json", report.to_dict(), sort_keys=True)
    from .plots import plot_roc_curves, plot_score_histograms

    plot_roc_curves(labelled, out / "plots")
    plot_score_histograms(labelled, out / "plots")
    return report


def write_score_csv(results, path: Path) -> None:
    atomic_write_csv(pd.DataFrame([r.__dict__ for r in results]), path)

"""``final-train``: retrain every search's best configuration at full budget and report (paper Tables 2-3).

For each ``best_config.json``: fine-tune with that configuration (early stopping, at most
``max_epochs``), score the test split, and write the DCASE submission files and the final checkpoint.
Machine-specific models are pooled into one "Proposed (machine-specific)" system; a generalized
search gives "Proposed (machine-generalized)"; with ``baseline=True`` the DCASE AE is trained per
machine on the same data for the "Baseline (AE)" rows. Each final model is one MLflow run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from data.config import RunOptions

from .train.configs import FinetuneConfig, strict_from_dict

# pandas, torch, MLflow and the runners are imported where they are used, so that the command line
# can read FinalTrainConfig for its flags without loading them

SPECIFIC = "Proposed (machine-specific)"
GENERALIZED = "Proposed (machine-generalized)"
BASELINE = "Baseline (AE)"


@dataclass(frozen=True)
class FinalTrainConfig:
    """How the best configurations are retrained (what is retrained comes from the best_config.json files)."""

    max_epochs: int = 100  # at most this many epochs per final model (paper: 100), early stopping as in the search
    with_baseline: bool = False  # also train the DCASE AE baseline per machine on the same data
    tracking_uri: str | None = None  # MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///results/mlflow.db)
    finetune: dict = field(default_factory=dict)  # FinetuneConfig fields that override every best configuration

    def __post_init__(self):
        if not isinstance(self.max_epochs, int) or isinstance(self.max_epochs, bool) or self.max_epochs < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {self.max_epochs!r}")
        FinetuneConfig.from_dict(dict(self.finetune))  # unknown or bad overrides fail before any training

    @classmethod
    def from_dict(cls, d: dict) -> "FinalTrainConfig":
        return strict_from_dict(cls, dict(d))


@dataclass
class FinalModel:
    name: str
    system: str
    model_path: Path
    scores: object  # pandas DataFrame of the model's test scores
    best: dict


def find_best_configs(paths: list[Path] | None, searches_dir: Path | None) -> list[Path]:
    from data.datasets import DataError

    found = list(paths or [])
    if searches_dir is not None:
        if not searches_dir.is_dir():
            raise DataError(f"--searches-dir {searches_dir}: no such folder")
        found += sorted(searches_dir.glob("*/best_config.json"))
    if not found:
        raise DataError("no best_config.json given or found (use --best FILE … or --searches-dir DIR)")
    for p in found:
        if not Path(p).is_file():
            raise DataError(f"{p}: no such file")
    return [Path(p) for p in found]


def load_best(path: Path) -> dict:
    from data.datasets import DataError

    try:
        best = json.loads(path.read_text())
        FinetuneConfig.from_dict(best["finetune_config"])
        best["data"], best["pretrained"]  # noqa: B018 - required keys
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a best_config.json written by `search` ({err})") from None
    return best


def _log_final_run(tracking_uri: str | None, name: str, best: dict, report, model_path: Path,
                   plots: list[Path]) -> None:
    from mlflow.entities import Metric, Param

    from .tune.tracking import client as mlflow_client
    from .tune.tracking import flat_params, get_or_create_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(uri)
    exp_id = get_or_create_experiment(client, "bohb-search/final", uri)
    run = client.create_run(exp_id, run_name=f"final {name}", tags={"bohb_search.role": "final", "bohb_search.search": name})
    params = flat_params({"search": best.get("search"), **best["finetune_config"]})
    metrics = []
    if report is not None:
        metrics = [Metric("official_score", report.official_score, 0, 0), Metric("total_hmean", report.total_hmean, 0, 0)]
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()], metrics=metrics)
    client.log_artifact(run.info.run_id, str(model_path))
    for png in plots:
        client.log_artifact(run.info.run_id, str(png), "plots")
    client.set_terminated(run.info.run_id, "FINISHED")


def run_final_train(best_paths: list[Path], out_dir: Path, cfg: FinalTrainConfig = FinalTrainConfig(),
                    opts: RunOptions = RunOptions()) -> dict:
    """Retrain, evaluate and tabulate every best configuration; returns {system: EvaluationReport}."""
    import pandas as pd

    from data.atomic import atomic_write_csv, atomic_write_json

    from .evaluate.metrics import EvaluationReport, evaluate_scores
    from .evaluate.run import run_evaluate
    from .evaluate.tables import write_tables
    from .train.runs import run_finetune

    out = Path(out_dir)
    finals: list[FinalModel] = []
    for path in best_paths:
        best = load_best(path)
        name = best.get("search") or path.parent.name
        ft = FinetuneConfig.from_dict({**best["finetune_config"], **cfg.finetune, "max_epochs": cfg.max_epochs})
        system = GENERALIZED if best.get("generalized") else SPECIFIC
        model_dir = out / "models" / name
        model = run_finetune(ft, best["data"], model_dir, best.get("machines"), pretrained=best["pretrained"],
                             opts=opts)
        ev_dir = out / "evaluate" / name
        report = run_evaluate(model, best["data"], ev_dir, system=name, opts=opts)
        scores = pd.read_csv(ev_dir / "scores.csv")
        finals.append(FinalModel(name, system, model, scores, best))
        _log_final_run(cfg.tracking_uri, name, best, report, model, sorted((ev_dir / "plots").glob("*.png")))
        if cfg.with_baseline and not best.get("generalized"):
            ae_dir = out / "models" / f"{name}-ae"
            ae_cfg = FinetuneConfig(lr=1e-3, max_epochs=cfg.max_epochs, batch_size=ft.batch_size, seed=ft.seed)
            ae_model = run_finetune(ae_cfg, best["data"], ae_dir, best.get("machines"), pretrained=best["pretrained"],
                                    model_kind="ae", opts=opts)
            ae_eval = out / "evaluate" / f"{name}-ae"
            run_evaluate(ae_model, best["data"], ae_eval, system=f"{name}-ae", opts=opts)
            finals.append(FinalModel(f"{name}-ae", BASELINE, ae_model, pd.read_csv(ae_eval / "scores.csv"), best))

    reports: dict[str, EvaluationReport] = {}
    for system in (SPECIFIC, GENERALIZED, BASELINE):
        parts = [f.scores for f in finals if f.system == system]
        if not parts:
            continue
        scores = pd.concat(parts, ignore_index=True)
        slug = system.lower().replace(" ", "_").replace("(", "").replace(")", "")
        atomic_write_csv(scores, out / "scores" / f"{slug}.csv")
        labelled = scores[scores["label"].isin(["normal", "anomaly"]) & scores["domain"].isin(["source", "target"])]
        if not labelled.empty:
            reports[system] = evaluate_scores(labelled)
    if reports:
        write_tables(reports, out / "tables")
        atomic_write_json(out / "tables" / "summary.json", {
            s: {"official_score": r.official_score, "total_hmean": r.total_hmean, "total_amean": r.total_amean}
            for s, r in reports.items()})
    return reports

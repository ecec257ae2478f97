"""``final-train``: retrain every search's best configuration at full budget and report (paper Tables 2-3).

For each ``best_config.json``: fine-tune with that configuration (early stopping, at most
``max_epochs``), score the test split, and write the DCASE submission files and the final checkpoint.
Machine-specific models are pooled into one "Proposed (machine-specific)" system; a generalized
search gives "Proposed (machine-generalized)"; with ``baseline=True`` the DCASE AE is trained per
machine on the same data for the "Baseline (AE)" rows. Each final model is one MLflow run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data.atomic import atomic_write_csv, atomic_write_text

from .configs import FinetuneConfig
from .datasets import DataError
from .metrics import EvaluationReport, evaluate_scores
from .pipeline import run_evaluate, run_finetune
from .reporting import write_tables

SPECIFIC = "Proposed (machine-specific)"
GENERALIZED = "Proposed (machine-generalized)"
BASELINE = "Baseline (AE)"


@dataclass
class FinalModel:
    name: str
    system: str
    model_path: Path
    scores: pd.DataFrame
    best: dict


def find_best_configs(paths: list[Path] | None, searches_dir: Path | None) -> list[Path]:
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
    try:
        best = json.loads(path.read_text())
        FinetuneConfig.from_dict(best["finetune_config"])
        best["data"], best["pretrained"]  # noqa: B018 - required keys
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a best_config.json written by `search` ({err})") from None
    return best


def _log_final_run(tracking_uri: str, name: str, best: dict, report: EvaluationReport | None, model_path: Path,
                   plots: list[Path]) -> None:
    from mlflow.entities import Metric, Param

    from .tracking import _client, _flat_params, get_or_create_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    exp_id = get_or_create_experiment(client, "bohb-search/final", uri)
    run = client.create_run(exp_id, run_name=f"final {name}", tags={"bohb_search.role": "final", "bohb_search.search": name})
    params = _flat_params({"search": best.get("search"), **best["finetune_config"]})
    metrics = []
    if report is not None:
        metrics = [Metric("official_score", report.official_score, 0, 0), Metric("total_hmean", report.total_hmean, 0, 0)]
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()], metrics=metrics)
    client.log_artifact(run.info.run_id, str(model_path))
    for png in plots:
        client.log_artifact(run.info.run_id, str(png), "plots")
    client.set_terminated(run.info.run_id, "FINISHED")


def run_final_train(best_paths: list[Path], out_dir: Path, max_epochs: int = 100, baseline: bool = False,
                    tracking_uri: str | None = None, cache_dir: str | None = None, device: str = "auto",
                    quiet: bool = False) -> dict[str, EvaluationReport]:
    out = Path(out_dir)
    finals: list[FinalModel] = []
    for path in best_paths:
        best = load_best(path)
        name = best.get("search") or path.parent.name
        cfg = FinetuneConfig.from_dict({**best["finetune_config"], "max_epochs": max_epochs})
        system = GENERALIZED if best.get("generalized") else SPECIFIC
        model_dir = out / "models" / name
        model = run_finetune(best["data"], model_dir, cfg, best.get("machines"), best["pretrained"],
                             cache_dir=cache_dir, device=device, quiet=quiet)
        ev_dir = out / "evaluate" / name
        report = run_evaluate(model, best["data"], ev_dir, system=name, cache_dir=cache_dir, quiet=quiet)
        scores = pd.read_csv(ev_dir / "scores.csv")
        finals.append(FinalModel(name, system, model, scores, best))
        _log_final_run(tracking_uri, name, best, report, model, sorted((ev_dir / "plots").glob("*.png")))
        if baseline and not best.get("generalized"):
            ae_dir = out / "models" / f"{name}-ae"
            ae_cfg = FinetuneConfig(lr=1e-3, max_epochs=max_epochs, batch_size=cfg.batch_size, seed=cfg.seed)
            ae_model = run_finetune(best["data"], ae_dir, ae_cfg, best.get("machines"), best["pretrained"],
                                    model_kind="ae", cache_dir=cache_dir, device=device, quiet=quiet)
            ae_eval = out / "evaluate" / f"{name}-ae"
            run_evaluate(ae_model, best["data"], ae_eval, system=f"{name}-ae", cache_dir=cache_dir, quiet=quiet)
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
        atomic_write_text(out / "tables" / "summary.json", json.dumps(
            {s: {"official_score": r.official_score, "total_hmean": r.total_hmean, "total_amean": r.total_amean}
             for s, r in reports.items()}, indent=2) + "\n")
    return reports

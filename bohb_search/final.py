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
BASELINE_MSE = "Baseline (AE, MSE)"
BASELINE_MAHALA = "Baseline (AE, MAHALA)"
BASELINE_STATS = "Baseline (statistics k-NN, no training)"
SYSTEMS = (SPECIFIC, GENERALIZED, BASELINE_MSE, BASELINE_MAHALA, BASELINE_STATS)


@dataclass(frozen=True)
class FinalTrainConfig:
    """How the best configurations are retrained (what is retrained comes from the best_config.json files)."""

    max_epochs: int = 100  # at most this many epochs per final model (paper: 100), early stopping as in the search
    with_baseline: bool = False  # also train the DCASE AE baseline (its own recipe) and fit the statistics yardstick per machine on the same data
    baseline_epochs: int = 100  # the AE baseline's epochs (official: 100)
    tracking_uri: str | None = None  # MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///results/mlflow.db)
    finetune: dict = field(default_factory=dict)  # FinetuneConfig fields that override every best configuration

    def __post_init__(self):
        for name in ("max_epochs", "baseline_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        FinetuneConfig.from_dict(dict(self.finetune))  # unknown or bad overrides fail before any training

    @classmethod
    def from_dict(cls, d: dict) -> "FinalTrainConfig":
        return strict_from_dict(cls, dict(d))


@dataclass
class FinalModel:
    name: str
    system: str
    model_path: Path
    scores: object  # pandas DataFrame of the model's test scores (scores.csv, with the part of every clip)
    best: dict
    selection: str  # how the model was selected (validation part, whole test split, held-out normals, fixed budget)


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


def _is_text(v) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _is_text_list(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_text(x) for x in v)


# the fields final-train reads from a best_config.json: (test, what the field must hold); others are reports
BEST_FIELDS = {
    "data": (_is_text_list, "a non-empty list of data-root folders (e.g. [\"datasets/synth\"])"),
    "pretrained": (_is_text, "the path of an encoder.pt (a string)"),
    "finetune_config": (lambda v: isinstance(v, dict), "a mapping of fine-tuning settings"),
    "machines": (lambda v: v is None or _is_text_list(v), "a non-empty list of machine types, or null (generalized)"),
    "generalized": (lambda v: isinstance(v, bool), "true or false"),
    "search": (lambda v: v is None or _is_text(v), "the search's name (a string)"),
}
REQUIRED_BEST_FIELDS = ("data", "pretrained", "finetune_config")


def load_best(path: Path) -> dict:
    """A ``best_config.json`` written by ``search``, its fields checked by type as well as by name: a bad
    one is one line naming the file and the field (``"data": "/some/dir"`` is not a list of roots)."""
    from data.datasets import DataError, check_data_roots

    try:
        best = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable best_config.json ({' '.join(str(err).split())})") from None
    if not isinstance(best, dict):
        raise DataError(f"{path}: not a best_config.json written by `search` (holds a {type(best).__name__}, "
                        f"not a mapping of fields)")
    missing = [k for k in REQUIRED_BEST_FIELDS if k not in best]
    if missing:
        raise DataError(f"{path}: not a best_config.json written by `search` (no field {', '.join(missing)})")
    for key, (ok, expected) in BEST_FIELDS.items():
        if key in best and not ok(best[key]):
            raise DataError(f"{path}: field \"{key}\" must be {expected}, got {json.dumps(best[key])[:80]}")
    if best.get("generalized") is True and best.get("machines"):
        raise DataError(f"{path}: field \"machines\" must be null for a generalized search, got "
                        f"{json.dumps(best['machines'])[:80]}")
    check_data_roots(best["data"], f"{path}: field \"data\":")
    # A search written before the patch-statistics score existed (no `embedding` key) selected its
    # configuration with the head's embedding: retrain it with that, not with today's default.
    best["finetune_config"].setdefault("embedding", "head")
    try:
        FinetuneConfig.from_dict(best["finetune_config"])
    except (TypeError, ValueError) as err:
        message = " ".join(str(err).split())
        raise DataError(f"{path}: field \"finetune_config\": {message.removeprefix('finetune ')}") from None
    return best


def check_best_configs(paths: list[Path], cfg: "FinalTrainConfig") -> list[dict]:
    """Every best_config.json final-train will retrain, read and checked before the first model trains: its
    fields, its data roots and pre-trained encoder on disk, and its settings with this run's overrides."""
    from data.datasets import DataError

    bests = []
    for path in paths:
        best = load_best(path)
        for root in best["data"]:
            if not Path(root).is_dir():
                raise DataError(f"{path}: field \"data\" names {root}, which is not a folder")
        if not Path(best["pretrained"]).is_file():
            raise DataError(f"{path}: field \"pretrained\" names {best['pretrained']}, which is not a file")
        try:
            FinetuneConfig.from_dict({**best["finetune_config"], **cfg.finetune, "max_epochs": cfg.max_epochs})
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}: its finetune_config with this run's overrides: "
                            f"{' '.join(str(err).split())}") from None
        bests.append(best)
    return bests


def _log_final_run(tracking_uri: str | None, name: str, params: dict, report, model_path: Path,
                   plots: list[Path], tables: list[Path] = ()) -> None:
    from mlflow.entities import Metric, Param

    from .tune.tracking import client as mlflow_client
    from .tune.tracking import flat_params, get_or_create_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(uri)
    exp_id = get_or_create_experiment(client, "bohb-search/final", uri)
    run = client.create_run(exp_id, run_name=f"final {name}", tags={"bohb_search.role": "final", "bohb_search.search": name})
    params = flat_params(params)
    metrics = []
    if report is not None:
        values = {"official_score": report.official_score, "total_hmean": report.total_hmean,
                  "auc_source_hmean": report.summary.loc["AUC (source)", "hmean"],
                  "auc_target_hmean": report.summary.loc["AUC (target)", "hmean"],
                  "pauc_hmean": report.summary.loc["pAUC", "hmean"],
                  **{k: v for k, v in report.diagnostics().loc["all"].items()}}
        metrics = [Metric(k, float(v), 0, 0) for k, v in values.items() if v == v]  # NaN: the value does not exist
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()], metrics=metrics)
    client.log_artifact(run.info.run_id, str(model_path))
    for png in plots:
        client.log_artifact(run.info.run_id, str(png), "plots")
    for table in tables:
        client.log_artifact(run.info.run_id, str(table), "tables")
    client.set_terminated(run.info.run_id, "FINISHED")


def print_final_estimate(best_paths: list[Path], cfg: FinalTrainConfig, opts: RunOptions = RunOptions(),
                         out=print) -> float:
    """Print the models final-train will train, their epoch budget and an ETA from a short measured step
    of each (an upper bound: early stopping usually ends sooner); warns when a CPU run exceeds an hour.
    Returns the ETA in seconds."""
    from data.config import dcase_ae_features

    from .train.configs import AEBaselineConfig
    from .train.estimate import eta_lines, measure_epoch, print_lines
    from .train.setup import build_ae_trainer, build_trainer, load_pretrained, prepare_finetune

    eta, epochs, models, estimate = 0.0, 0, 0, None
    for path in best_paths:
        best = load_best(path)
        ft = FinetuneConfig.from_dict({**best["finetune_config"], **cfg.finetune, "max_epochs": cfg.max_epochs})
        setup = prepare_finetune(best["data"], best.get("machines"), best["pretrained"], cache_dir=opts.cache_dir,
                                 on_bad_file=opts.on_bad_file, quiet=True)
        estimate = measure_epoch(build_trainer(setup, ft, opts.device))
        eta, epochs, models = eta + ft.max_epochs * estimate.seconds_per_epoch, epochs + ft.max_epochs, models + 1
        if cfg.with_baseline and not best.get("generalized"):
            seconds = load_pretrained(best["pretrained"])[2].audio.seconds
            ae_setup = prepare_finetune(best["data"], best.get("machines"), None, None, dcase_ae_features(seconds),
                                        opts.cache_dir, opts.on_bad_file, quiet=True, other_machines=False)
            ae = measure_epoch(build_ae_trainer(ae_setup, AEBaselineConfig(max_epochs=cfg.baseline_epochs), opts.device))
            eta, epochs, models = eta + cfg.baseline_epochs * ae.seconds_per_epoch, epochs + cfg.baseline_epochs, models + 1
    plan = (f"final-train: {models} model(s), at most {epochs} epochs in all (early stopping usually ends the "
            f"proposed models sooner)")
    print_lines(eta_lines(plan, eta, estimate), out)
    return eta


def run_final_train(best_paths: list[Path], out_dir: Path, cfg: FinalTrainConfig = FinalTrainConfig(),
                    opts: RunOptions = RunOptions()) -> dict:
    """Retrain, evaluate and tabulate every best configuration; returns {system: EvaluationReport}.

    Every system is reported on the same clips: the report half of the labelled test split when any model
    was selected on the validation half, else the whole labelled test split.
    """
    import pandas as pd

    from data.atomic import atomic_write_csv, atomic_write_json
    from models import load_checkpoint

    from .evaluate.metrics import evaluate_scores
    from .evaluate.run import SAME_CLIPS_MARK, run_evaluate
    from .evaluate.tables import write_tables
    from .train.configs import AEBaselineConfig
    from .scoring.config import StatsBaselineConfig
    from .train.runs import run_ae_baseline, run_finetune, run_stats_baseline

    out = Path(out_dir)
    check_best_configs(best_paths, cfg)  # every file before the first model trains
    finals: list[FinalModel] = []

    def add(name: str, system: str, model: Path, best: dict, score=None) -> None:
        ev_dir = out / "evaluate" / name
        report = run_evaluate(model, best["data"], ev_dir, system=name, opts=opts, score=score)
        scores = pd.read_csv(ev_dir / "scores.csv", dtype={"section": str})
        bundle = load_checkpoint(model)
        finals.append(FinalModel(name, system, model, scores, best, bundle.get("selection", "")))
        params = {"system": system, "search": best.get("search"), "score": score or "as trained",
                  **(bundle.get("finetune_config") or bundle.get("baseline_config") or bundle.get("stats_config") or {})}
        _log_final_run(cfg.tracking_uri, name, params, report, model, sorted((ev_dir / "plots").glob("*.png")),
                       sorted(p for p in ev_dir.glob("*") if p.suffix in (".md", ".csv", ".json")))

    for path in best_paths:
        best = load_best(path)
        name = best.get("search") or path.parent.name
        ft = FinetuneConfig.from_dict({**best["finetune_config"], **cfg.finetune, "max_epochs": cfg.max_epochs})
        model = run_finetune(ft, best["data"], out / "models" / name, best.get("machines"),
                             pretrained=best["pretrained"], opts=opts)
        add(name, GENERALIZED if best.get("generalized") else SPECIFIC, model, best)
        if cfg.with_baseline and not best.get("generalized"):
            from .train.setup import load_pretrained

            seconds = load_pretrained(best["pretrained"])[2].audio.seconds
            ae = run_ae_baseline(AEBaselineConfig(max_epochs=cfg.baseline_epochs), best["data"],
                                 out / "models" / f"{name}-ae", best.get("machines"), seconds=seconds, opts=opts)
            add(f"{name}-ae", BASELINE_MSE, ae, best, score="mse")
            add(f"{name}-ae-mahala", BASELINE_MAHALA, ae, best, score="mahalanobis")
            stats = run_stats_baseline(StatsBaselineConfig(), best["data"], out / "models" / f"{name}-stats",
                                       best.get("machines"), feature_cfg=load_pretrained(best["pretrained"])[2],
                                       opts=opts)
            add(f"{name}-stats", BASELINE_STATS, stats, best)

    report_half = any(f.selection == "validation part" for f in finals)
    reports = {}
    for system in SYSTEMS:
        mine = [f for f in finals if f.system == system]
        if not mine:
            continue
        scores = pd.concat([f.scores for f in mine], ignore_index=True)
        slug = system.lower().replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        atomic_write_csv(scores, out / "scores" / f"{slug}.csv")
        reported = scores[scores["part"] == "report"] if report_half else scores[scores["part"] != "unlabelled"]
        if reported.empty or reported["label"].nunique() < 2:
            continue
        same = any(f.selection == "whole test split" for f in mine) or (
            not report_half and any(f.selection == "validation part" for f in mine))
        reports[system + (SAME_CLIPS_MARK if same else "")] = evaluate_scores(reported)
    if reports:
        n = len(pd.concat([f.scores for f in finals]).query("part != 'unlabelled'").drop_duplicates("path"))
        note = (f"Every system reported on the report half of the labelled test split; the proposed models were "
                f"selected on the other half ({n} labelled test clips in all)." if report_half else
                f"Every system reported on the whole labelled test split ({n} clips).")
        if any(SAME_CLIPS_MARK in s for s in reports):
            note += f"{SAME_CLIPS_MARK} selected on the clips it is reported on: optimistic."
        write_tables(reports, out / "tables", note=note)
        atomic_write_json(out / "tables" / "summary.json", {
            "reported_on": note,
            **{s: {"official_score": r.official_score, "total_hmean": r.total_hmean, "total_amean": r.total_amean}
               for s, r in reports.items()}})
    return reports

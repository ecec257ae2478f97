"""The runners behind ``pretrain`` and ``finetune``: load features through the cache, drive a trainer
(the only training loops), and write outputs atomically — trainer state for exact resume, the exported
checkpoint for the next stage, the effective configuration (``config.yaml``), history and report.

Runners take a configuration object for *what* is computed and a
:class:`~data.config.RunOptions` for *how* it runs (cache, device, bad files, progress).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import yaml
from tqdm.auto import tqdm

from data.atomic import atomic_write_csv, atomic_write_json, atomic_write_text, to_python
from data.config import RunOptions, dcase_ae_features
from data.datasets import DataError, feature_stats, load_feature_table, make_pretrain_data, read_manifests
from data.features import FeatureConfig
from models import EncoderConfig, load_checkpoint, save_checkpoint

from ..evaluate.run import log, report_skipped
from ..scoring.model import MODEL_KIND, AnomalyModel
from ..scoring.config import DecisionConfig, StatsBaselineConfig
from .configs import AEBaselineConfig, FinetuneConfig, PretrainConfig
from .finetune import pseudo_outlier_config
from .pretrain import PretrainTrainer
from .statistics import fit_stats_baseline
from .setup import (
    PRETRAINED_KIND,
    FinetuneSetup,
    build_ae_trainer,
    build_trainer,
    fit_encoder_to_features,
    prepare_finetune,
)

CONFIG_FILE = "config.yaml"  # the effective configuration, written next to every run's outputs


def _plain(value):
    """Dataclasses, paths, tuples and numpy scalars → what ``yaml.safe_dump`` writes."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif is_dataclass(value):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return to_python(value)


def write_effective_config(out_dir: Path, **sections) -> Path:
    """``config.yaml``: every configuration a run used, as plain YAML a later ``--config`` can read
    (its ``job`` section records what was run and is not read back)."""
    doc = {k: _plain(v) for k, v in sections.items() if v is not None}
    return atomic_write_text(Path(out_dir) / CONFIG_FILE, yaml.safe_dump(doc, sort_keys=False))


def run_pretrain(
    cfg: PretrainConfig,
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    encoder_cfg: EncoderConfig,
    feature_cfg: FeatureConfig = FeatureConfig(),
    opts: RunOptions = RunOptions(),
) -> Path:
    """Pre-train on every normal TRAINING clip of ``data_roots``; returns the exported encoder path.

    Writes ``trainer_last.pt`` (complete state, resumable), ``epoch_NN.pt`` encoder checkpoints,
    ``encoder.pt`` (the best-validation-accuracy encoder, input to fine-tuning) and ``history.csv``.
    """
    out = Path(out_dir)
    manifest = read_manifests(data_roots)
    train_rows = manifest[(manifest["split"] == "train") & (manifest["label"] == "normal")]
    table = load_feature_table(train_rows.reset_index(drop=True), feature_cfg, opts.cache_dir, opts.on_bad_file,
                               progress=not opts.quiet)
    encoder_cfg = fit_encoder_to_features(encoder_cfg, feature_cfg)
    table.features = table.features[..., : encoder_cfg.n_frames]  # a view: no copy
    data = make_pretrain_data(table, cfg.target, cfg.val_fraction, cfg.seed)
    mean, std = feature_stats(data.train_x)
    encoder_cfg = EncoderConfig.from_dict({**encoder_cfg.to_dict(), "input_mean": mean, "input_std": std})
    outliers = pseudo_outlier_config(FinetuneConfig(), feature_cfg) if cfg.perturbation_classes else None
    trainer = PretrainTrainer(cfg, encoder_cfg, data, opts.device, outliers=outliers)
    state = load_resume_state(out, cfg)  # before anything is written over the earlier run's files
    out.mkdir(parents=True, exist_ok=True)  # only once the data loaded: a failed start leaves no folder
    report_skipped(table.skipped, opts.quiet)
    write_effective_config(out, pretrain=cfg, encoder=encoder_cfg, features=feature_cfg, run=opts,
                           job={"data": [str(d) for d in data_roots]})
    resume = out / "trainer_last.pt"
    if state is not None:
        trainer.load_state_dict(state)
        log(f"resuming the run in {out} from epoch {trainer.epoch} (its trainer_last.pt)", opts.quiet)
    log(f"pre-training on {len(data.train_y)} clips ({len(data.classes)} classes), validating on {len(data.val_y)}", opts.quiet)
    best = max((h.get("val_accuracy", -1) for h in trainer.history), default=-1.0)
    bar = tqdm(total=cfg.epochs, initial=trainer.epoch, desc="pretrain", unit="epoch", disable=opts.quiet)
    while trainer.epoch < cfg.epochs:
        t0 = time.perf_counter()
        m = trainer.step()
        m["seconds"] = time.perf_counter() - t0
        trainer.history[-1] = m
        export = {
            "kind": PRETRAINED_KIND, "encoder_config": encoder_cfg.to_dict(), "encoder": trainer.encoder.state_dict(),
            "classes": data.classes, "feature_config": feature_cfg.to_dict(), "pretrain_config": cfg.to_dict(),
            "epoch": trainer.epoch, "metrics": m,
        }
        save_checkpoint(out / f"epoch_{trainer.epoch:02d}.pt", export)
        acc = m.get("val_accuracy", m["train_accuracy"])
        if acc >= best:
            best = acc
            save_checkpoint(out / "encoder.pt", export)
        save_checkpoint(resume, trainer.state_dict())
        atomic_write_csv(pd.DataFrame(trainer.history), out / "history.csv")
        bar.update(1)
        bar.set_postfix(loss=f"{m['train_loss']:.3f}", val_acc=f"{m.get('val_accuracy', float('nan')):.3f}")
    bar.close()
    return out / "encoder.pt"


# =================================================================================================
# stage 2


def selection_of(trainer) -> str:
    """How the exported epoch was chosen: the data's validation, or a fixed budget (the last epoch)."""
    return trainer.data.selection if trainer.early_stopping else "fixed budget"


def selection_note(trainer) -> str:
    if trainer.early_stopping or trainer.data.selection == "fixed budget":
        return trainer.data.val_source
    return f"fixed budget, the last epoch (the {trainer.data.val_source} is scored for the history only)"


def export_model(trainer, setup: FinetuneSetup, threshold_percentile: float = 0.9) -> dict:
    """The deployable checkpoint of a trained model (the selected epoch) and how it was selected; the
    decision thresholds are fitted when it is loaded (:class:`~bohb_search.scoring.model.AnomalyModel`)."""
    trainer.use_best()
    bundle = trainer.export()
    bundle.update({
        "kind": MODEL_KIND,
        "feature_config": setup.feature_cfg.to_dict(),
        "machines": list(setup.machines),
        "selection": selection_of(trainer),  # validation part / whole test split / held-out normals / fixed budget
        "val_source": selection_note(trainer),
        "best_epoch": trainer.best_epoch,
        "best_val_score": trainer.best_score,
        "history": trainer.history,
        "threshold_percentile": threshold_percentile,
    })
    model = AnomalyModel(bundle)
    bundle["thresholds"] = model.thresholds
    for note in model.notes:  # said once, here, and kept in the report (e.g. a knn_k above a bank's size)
        print(f"note: {note}", file=sys.stderr)
        bundle["notes"] = [*bundle.get("notes", []), note]
    return bundle


# what a resumed run may change: how long it trains (e.g. more epochs after a first look)
RESUMABLE_TRAINING_CHANGES = ("epochs", "max_epochs")


def load_resume_state(out: Path, cfg) -> dict | None:
    """The complete state of an earlier run in ``out`` (``trainer_last.pt``), or None.

    ``pretrain``, ``finetune`` and ``baseline`` continue the run they find in ``--out``; continuing it
    with other settings would silently mix two runs, so a setting that differs from the saved one
    (other than the number of epochs) is refused with one line naming each.
    """
    path = Path(out) / "trainer_last.pt"
    if not path.exists():
        return None
    state = load_checkpoint(path)
    saved, given = state.get("config") or {}, cfg.to_dict()
    diff = [f"{k} {given[k]!r} (saved: {saved[k]!r})" for k in sorted(saved)
            if k in given and k not in RESUMABLE_TRAINING_CHANGES and to_python(saved[k]) != to_python(given[k])]
    if diff:
        raise DataError(f"{out}: holds an earlier run that this command would resume, with other settings: "
                        f"{'; '.join(diff)}. Use the same settings, or another --out")
    return state


def train_to_completion(trainer, out_dir: Path | None = None, quiet: bool = False,
                        on_epoch: Callable[[dict], None] | None = None, state: dict | None = None) -> list[dict]:
    """Step until early stopping or max_epochs, checkpointing the complete state each epoch; ``state``
    (from :func:`load_resume_state`) continues an earlier run."""
    resume = out_dir / "trainer_last.pt" if out_dir is not None else None
    if state is not None:
        trainer.load_state_dict(state)
        log(f"resuming the run in {out_dir} from epoch {trainer.epoch} (its trainer_last.pt)", quiet)
    bar = tqdm(total=trainer.cfg.max_epochs, initial=trainer.epoch, desc="finetune", unit="epoch", disable=quiet)
    done = bool(trainer.history and trainer.history[-1].get("done"))
    while not done:
        t0 = time.perf_counter()
        m = trainer.step()
        m["seconds"] = time.perf_counter() - t0
        done = m["done"]
        if resume is not None:
            save_checkpoint(resume, trainer.state_dict())
            atomic_write_csv(pd.DataFrame(trainer.history), out_dir / "history.csv")
        if on_epoch is not None:
            on_epoch(m)
        bar.update(1)
        bar.set_postfix(loss=f"{m.get('loss_total', m.get('train_loss', 0)):.3f}",
                        val_score=f"{m.get('val_score', float('nan')):.3f}")
    bar.close()
    return trainer.history


def _report(trainer, bundle: dict, setup: FinetuneSetup, extra: dict) -> dict:
    return {
        "machines": setup.machines, **extra, "selection": selection_of(trainer), "validation": selection_note(trainer),
        "best_epoch": trainer.best_epoch, "best_val_score": trainer.best_score, "epochs_run": trainer.epoch,
        "thresholds": bundle["thresholds"], "notes": bundle.get("notes", []),
        "skipped_files": [{"path": p, "reason": r} for p, r in setup.table.skipped],
    }


def run_finetune(
    cfg: FinetuneConfig,
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    machines: Sequence[str] | None,
    *,
    pretrained: str | Path | None = None,
    encoder_cfg: EncoderConfig | None = None,
    feature_cfg: FeatureConfig | None = None,
    threshold_percentile: float = 0.9,
    opts: RunOptions = RunOptions(),
) -> Path:
    """Fine-tune one model (one machine, or several pooled = generalized); returns ``model.pt``.

    ``pretrained`` is the stage-1 encoder; without it the encoder is built from ``encoder_cfg`` and
    trained from scratch. An existing ``out_dir/trainer_last.pt`` is resumed.
    """
    out = Path(out_dir)
    DecisionConfig(threshold_percentile)  # a bad threshold fails here, not after training
    if pretrained is None and encoder_cfg is None:
        raise DataError("from-scratch fine-tuning needs an encoder config (--preset …)")
    setup = prepare_finetune(data_roots, machines, pretrained, encoder_cfg, feature_cfg, opts.cache_dir,
                             opts.on_bad_file, opts.quiet)
    trainer = build_trainer(setup, cfg, opts.device)
    state = load_resume_state(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    report_skipped(setup.table.skipped, opts.quiet)
    write_effective_config(out, finetune=cfg, encoder=setup.encoder_cfg, features=setup.feature_cfg, run=opts,
                           job={"machines": list(setup.machines), "data": [str(d) for d in data_roots],
                                "pretrained": None if pretrained is None else str(pretrained),
                                "threshold_percentile": threshold_percentile})
    for note in trainer.notes:
        log(f"note: {note}", opts.quiet)
    log(f"fine-tuning on {', '.join(setup.machines)}: {trainer.data.n_train} balanced training clips; "
        f"model selection: {trainer.data.val_source}", opts.quiet)
    train_to_completion(trainer, out, opts.quiet, state=state)
    bundle = export_model(trainer, setup, threshold_percentile)
    save_checkpoint(out / "model.pt", bundle)
    atomic_write_json(out / "finetune_report.json", _report(trainer, bundle, setup, {
        "model_kind": "ssm", "config": cfg.to_dict(), "variant": cfg.variant,
        "lambda_adv_effective": trainer.lambda_adv}), sort_keys=True)
    log(f"selected epoch {trainer.best_epoch} (validation score {trainer.best_score:.4f}; {trainer.data.val_source}); "
        f"wrote {out / 'model.pt'}", opts.quiet)
    return out / "model.pt"


def run_ae_baseline(
    cfg: AEBaselineConfig,
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    machines: Sequence[str] | None,
    *,
    seconds: float = 10.0,
    threshold_percentile: float = 0.9,
    opts: RunOptions = RunOptions(),
) -> Path:
    """Train the DCASE AE baseline (its own recipe and features) for one machine or several; returns ``model.pt``.

    Several machines make one model trained on all their clips; per-machine baselines, as DCASE runs them,
    are one call per machine. An existing ``out_dir/trainer_last.pt`` is resumed.
    """
    out = Path(out_dir)
    DecisionConfig(threshold_percentile)  # a bad threshold fails here, not after training
    feature_cfg = dcase_ae_features(seconds)
    setup = prepare_finetune(data_roots, machines, None, None, feature_cfg, opts.cache_dir, opts.on_bad_file,
                             opts.quiet, other_machines=False)
    trainer = build_ae_trainer(setup, cfg, opts.device)
    state = load_resume_state(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    report_skipped(setup.table.skipped, opts.quiet)
    write_effective_config(out, baseline=cfg, features=feature_cfg, run=opts,
                           job={"machines": list(setup.machines), "data": [str(d) for d in data_roots],
                                "threshold_percentile": threshold_percentile})
    log(f"DCASE AE baseline on {', '.join(setup.machines)}: {len(trainer.train_vectors)} training vectors of "
        f"{len(trainer.features)} clips ({len(trainer.heldout_vectors)} held out), {cfg.max_epochs} epochs", opts.quiet)
    train_to_completion(trainer, out, opts.quiet, state=state)
    bundle = export_model(trainer, setup, threshold_percentile)
    save_checkpoint(out / "model.pt", bundle)
    atomic_write_json(out / "finetune_report.json", _report(trainer, bundle, setup, {
        "model_kind": "ae", "config": cfg.to_dict()}), sort_keys=True)
    log(f"trained {trainer.epoch} epochs; wrote {out / 'model.pt'}", opts.quiet)
    return out / "model.pt"


def run_stats_baseline(
    cfg: StatsBaselineConfig,
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    machines: Sequence[str] | None,
    *,
    feature_cfg: FeatureConfig | None = None,
    threshold_percentile: float = 0.9,
    opts: RunOptions = RunOptions(),
) -> Path:
    """Fit the no-training statistics yardstick (one pooling per machine) on the project's log-mel; ``model.pt``."""
    out = Path(out_dir)
    DecisionConfig(threshold_percentile)  # a bad threshold fails here, not after fitting
    feature_cfg = feature_cfg or FeatureConfig()
    setup = prepare_finetune(data_roots, machines, None, None, feature_cfg, opts.cache_dir, opts.on_bad_file,
                             opts.quiet, other_machines=False)
    out.mkdir(parents=True, exist_ok=True)
    report_skipped(setup.table.skipped, opts.quiet)
    write_effective_config(out, baseline=cfg, features=feature_cfg, run=opts,
                           job={"kind": "stats", "machines": list(setup.machines),
                                "data": [str(d) for d in data_roots], "threshold_percentile": threshold_percentile})
    t0 = time.perf_counter()
    fitted = fit_stats_baseline(setup.table, list(setup.machines), cfg)
    bundle = {"kind": MODEL_KIND, "model_kind": "stats", "feature_config": feature_cfg.to_dict(),
              "machines": list(setup.machines), "stats_config": cfg.to_dict(), "stats": fitted["machines"],
              "notes": fitted["notes"], "threshold_percentile": threshold_percentile,
              "selection": "validation part" if any(v["selection"].startswith("chosen") for v in fitted["machines"].values())
              else "none"}
    bundle["thresholds"] = AnomalyModel(bundle).thresholds
    save_checkpoint(out / "model.pt", bundle)
    report = {"model_kind": "stats", "config": cfg.to_dict(), "machines": list(setup.machines),
              "seconds": round(time.perf_counter() - t0, 2), "notes": fitted["notes"],
              "pooling": {m: {k: v[k] for k in ("pooling", "twfr_r", "selection", "validation_scores")}
                          for m, v in fitted["machines"].items()}}
    atomic_write_json(out / "finetune_report.json", report, sort_keys=True)
    for note in fitted["notes"]:
        log(f"note: {note}", opts.quiet)
    for m, v in fitted["machines"].items():
        log(f"{m}: pooling {v['pooling']} ({v['selection']}; {len(v['train_domains'])} training clips)", opts.quiet)
    log(f"wrote {out / 'model.pt'}", opts.quiet)
    return out / "model.pt"

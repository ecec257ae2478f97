"""The stage runners behind ``pretrain``, ``finetune``, ``evaluate`` and ``score``.

Each runner loads data through the feature cache, drives a trainer from ``training.py`` (the only
training loops), and writes its outputs atomically: trainer state for exact resume, an exported
checkpoint for the next stage, metrics as CSV/JSON, results tables and DCASE submission files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data.atomic import atomic_write_csv, atomic_write_text
from data.features import FeatureConfig
from models import EncoderConfig, load_checkpoint, save_checkpoint

from .datasets import (
    DataError,
    FeatureTable,
    feature_stats,
    load_feature_table,
    make_finetune_data,
    make_pretrain_data,
    read_manifests,
)
from .inference import MODEL_KIND, AnomalyModel
from .metrics import EvaluationReport, evaluate_scores
from .reporting import fit_gamma_threshold, write_submission, write_tables
from .configs import FinetuneConfig, PretrainConfig
from .training import AETrainer, FinetuneTrainer, PretrainTrainer

PRETRAINED_KIND = "pretrained_encoder"


def fit_encoder_to_features(encoder_cfg: EncoderConfig, feature_cfg: FeatureConfig, **extra) -> EncoderConfig:
    """Encoder config sized for the features: the largest frame count the patches tile.

    Pixel-unshuffle and p×p patches need W to be a multiple of r·p (64 by default); a 10 s clip
    gives exactly 1024 frames, other lengths lose at most r·p − 1 trailing frames (e.g. 12 s:
    1229 → 1216). The same crop is applied wherever features meet the encoder.
    """
    step = encoder_cfg.unshuffle * encoder_cfg.patch
    n_frames = (feature_cfg.n_frames // step) * step
    if n_frames == 0:
        raise DataError(f"clips of {feature_cfg.audio.seconds} s give {feature_cfg.n_frames} frames, fewer than "
                        f"unshuffle*patch = {step}: use longer clips (--seconds) or a smaller --patch/--unshuffle")
    return EncoderConfig.from_dict({**encoder_cfg.to_dict(), "n_mels": feature_cfg.n_mels, "n_frames": n_frames, **extra})


def _json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        tqdm.write(msg)


# =================================================================================================
# stage 1


def run_pretrain(
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    encoder_cfg: EncoderConfig,
    cfg: PretrainConfig,
    feature_cfg: FeatureConfig = FeatureConfig(),
    cache_dir: str | Path | None = None,
    device: str = "auto",
    on_bad_file: str = "fail",
    quiet: bool = False,
) -> Path:
    """Pre-train on every normal TRAINING clip of ``data_roots``; returns the exported encoder path.

    Writes ``trainer_last.pt`` (complete state, resumable), ``epoch_NN.pt`` encoder checkpoints,
    ``encoder.pt`` (the best-validation-accuracy encoder, input to fine-tuning) and ``history.csv``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifests(data_roots)
    train_rows = manifest[(manifest["split"] == "train") & (manifest["label"] == "normal")]
    table = load_feature_table(train_rows.reset_index(drop=True), feature_cfg, cache_dir, on_bad_file, progress=not quiet)
    encoder_cfg = fit_encoder_to_features(encoder_cfg, feature_cfg)
    table.features = table.features[..., : encoder_cfg.n_frames]  # a view: no copy
    data = make_pretrain_data(table, cfg.target, cfg.val_fraction, cfg.seed)
    mean, std = feature_stats(data.train_x)
    encoder_cfg = EncoderConfig.from_dict({**encoder_cfg.to_dict(), "input_mean": mean, "input_std": std})
    trainer = PretrainTrainer(cfg, encoder_cfg, data, device)
    resume = out / "trainer_last.pt"
    if resume.exists():
        trainer.load_state_dict(load_checkpoint(resume))
        _log(f"resumed pre-training from epoch {trainer.epoch}", quiet)
    _log(f"pre-training on {len(data.train_y)} clips ({len(data.classes)} classes), validating on {len(data.val_y)}", quiet)
    best = max((h.get("val_accuracy", -1) for h in trainer.history), default=-1.0)
    bar = tqdm(total=cfg.epochs, initial=trainer.epoch, desc="pretrain", unit="epoch", disable=quiet)
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


def load_pretrained(path: str | Path) -> tuple[EncoderConfig, dict, FeatureConfig]:
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != PRETRAINED_KIND:
        raise DataError(f"{path}: not a pre-trained encoder checkpoint (kind={ckpt.get('kind')!r}); "
                        "pass the encoder.pt written by `pretrain`")
    return EncoderConfig.from_dict(ckpt["encoder_config"]), ckpt["encoder"], FeatureConfig.from_dict(ckpt["feature_config"])


# =================================================================================================
# stage 2


@dataclass
class FinetuneSetup:
    """What a fine-tuning run needs before its first epoch (built once; shared by search trials)."""

    table: FeatureTable
    machines: list[str]
    encoder_cfg: EncoderConfig | None  # None for the AE baseline
    encoder_state: dict | None
    feature_cfg: FeatureConfig


def prepare_finetune(
    data_roots: Sequence[str | Path],
    machines: Sequence[str] | None,
    pretrained: str | Path | None = None,
    encoder_cfg: EncoderConfig | None = None,
    feature_cfg: FeatureConfig | None = None,
    cache_dir: str | Path | None = None,
    on_bad_file: str = "fail",
    quiet: bool = False,
) -> FinetuneSetup:
    """Load features (from the cache) for the machines' train/test clips and the outlier pool."""
    if pretrained is not None:
        encoder_cfg, encoder_state, feature_cfg = load_pretrained(pretrained)
    else:  # from scratch, or the AE baseline (encoder_cfg None: no encoder at all)
        encoder_state = None
        feature_cfg = feature_cfg or FeatureConfig()
    manifest = read_manifests(data_roots)
    all_machines = sorted(manifest["machine"].unique())
    machines = list(machines) if machines else all_machines
    unknown = sorted(set(machines) - set(all_machines))
    if unknown:
        raise DataError(f"--machine: no clips for {', '.join(unknown)} under {', '.join(map(str, data_roots))} "
                        f"(found: {', '.join(all_machines)})")
    wanted = ((manifest["split"] == "train") & (manifest["label"] == "normal")) | (
        manifest["machine"].isin(machines) & (manifest["split"] == "test"))
    table = load_feature_table(manifest[wanted].reset_index(drop=True), feature_cfg, cache_dir, on_bad_file,
                               progress=not quiet)
    if encoder_cfg is not None:
        if encoder_state is None:  # from scratch: size for these features, normalise with their statistics
            encoder_cfg = fit_encoder_to_features(encoder_cfg, feature_cfg)
            mean, std = feature_stats(table.features)
            encoder_cfg = EncoderConfig.from_dict({**encoder_cfg.to_dict(), "input_mean": mean, "input_std": std})
        table.features = table.features[..., : encoder_cfg.n_frames]
    return FinetuneSetup(table, machines, encoder_cfg, encoder_state, feature_cfg)


def build_trainer(setup: FinetuneSetup, cfg: FinetuneConfig, model_kind: str = "ssm", device: str = "auto",
                  validation: str = "auto"):
    data = make_finetune_data(setup.table, setup.machines, seed=cfg.seed, validation=validation)
    if model_kind == "ae":
        return AETrainer(cfg, data, device=device)
    return FinetuneTrainer(cfg, setup.encoder_cfg, data, setup.encoder_state, device=device)


def export_model(trainer, setup: FinetuneSetup, threshold_percentile: float = 0.9) -> dict:
    """The deployable checkpoint of a trained model (best validation epoch), with per-machine thresholds."""
    trainer.use_best()
    bundle = trainer.export()
    bundle.update({
        "kind": MODEL_KIND,
        "feature_config": setup.feature_cfg.to_dict(),
        "machines": list(setup.machines),
        "val_source": trainer.data.val_source,
        "best_epoch": trainer.best_epoch,
        "best_val_auc": trainer.best_auc,
        "history": trainer.history,
    })
    # decision threshold per machine: gamma fit to the scores of its unique training clips
    model = AnomalyModel(bundle)
    tt = trainer.data.train_table
    thresholds = {}
    for m in setup.machines:
        rows = (tt.manifest["machine"] == m).to_numpy()
        scores = model.score_features(tt.features[rows])
        thresholds[m] = float(fit_gamma_threshold(scores, threshold_percentile))
    bundle["thresholds"] = thresholds
    bundle["threshold_percentile"] = threshold_percentile
    return bundle


def train_to_completion(trainer, out_dir: Path | None = None, quiet: bool = False,
                        on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Step until early stopping or max_epochs, checkpointing the complete state each epoch."""
    resume = out_dir / "trainer_last.pt" if out_dir is not None else None
    if resume is not None and resume.exists():
        trainer.load_state_dict(load_checkpoint(resume))
        _log(f"resumed fine-tuning from epoch {trainer.epoch}", quiet)
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
        bar.set_postfix(loss=f"{m.get('loss_total', m.get('train_loss', 0)):.3f}", val_auc=f"{m['val_auc']:.3f}")
    bar.close()
    return trainer.history


def run_finetune(
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    cfg: FinetuneConfig,
    machines: Sequence[str] | None,
    pretrained: str | Path | None = None,
    encoder_cfg: EncoderConfig | None = None,
    model_kind: str = "ssm",
    cache_dir: str | Path | None = None,
    device: str = "auto",
    on_bad_file: str = "fail",
    threshold_percentile: float = 0.9,
    quiet: bool = False,
    feature_cfg: FeatureConfig | None = None,
) -> Path:
    """Fine-tune one model (one machine, or several pooled = generalized); returns ``model.pt``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_kind == "ae":
        if pretrained is not None:  # the baseline reads the same features as the model it is compared with
            feature_cfg = load_pretrained(pretrained)[2]
        pretrained, encoder_cfg = None, None
    elif pretrained is None and encoder_cfg is None:
        raise DataError("from-scratch fine-tuning needs an encoder config (--preset …)")
    setup = prepare_finetune(data_roots, machines, pretrained, encoder_cfg, feature_cfg, cache_dir, on_bad_file, quiet)
    trainer = build_trainer(setup, cfg, model_kind, device)
    _log(f"fine-tuning {model_kind} on {', '.join(setup.machines)}: {trainer.data.n_train} balanced training clips; "
         f"validation: {trainer.data.val_source}", quiet)
    train_to_completion(trainer, out, quiet)
    bundle = export_model(trainer, setup, threshold_percentile)
    save_checkpoint(out / "model.pt", bundle)
    _json(out / "finetune_report.json", {
        "machines": setup.machines, "model_kind": model_kind, "config": cfg.to_dict(), "variant": cfg.variant,
        "validation": trainer.data.val_source, "best_epoch": trainer.best_epoch, "best_val_auc": trainer.best_auc,
        "epochs_run": trainer.epoch, "thresholds": bundle["thresholds"],
    })
    _log(f"best validation AUC {trainer.best_auc:.4f} at epoch {trainer.best_epoch} ({trainer.data.val_source}); "
         f"wrote {out / 'model.pt'}", quiet)
    return out / "model.pt"


# =================================================================================================
# evaluation and scoring


def score_test_split(model: AnomalyModel, data_roots: Sequence[str | Path], cache_dir=None,
                     on_bad_file: str = "fail", quiet: bool = False) -> pd.DataFrame:
    """Scores of every test clip of the model's machines: machine, section, domain, label, file, score."""
    manifest = read_manifests(data_roots)
    test = manifest[(manifest["split"] == "test") & manifest["machine"].isin(model.machines)]
    if test.empty:
        raise DataError(f"no test clips for {', '.join(model.machines)} under {', '.join(map(str, data_roots))}")
    table = load_feature_table(test.reset_index(drop=True), model.feature_cfg, cache_dir, on_bad_file, not quiet)
    df = table.manifest[["machine", "section", "domain", "label", "file", "path"]].copy()
    df["score"] = model.score_features(table.features)
    return df


def run_evaluate(model_path: str | Path, data_roots: Sequence[str | Path], out_dir: str | Path,
                 system: str | None = None, cache_dir=None, on_bad_file: str = "fail",
                 quiet: bool = False) -> EvaluationReport | None:
    """Score the test split, write submission files; compute metrics and tables where labels exist."""
    model = AnomalyModel.load(model_path)
    out = Path(out_dir)
    df = score_test_split(model, data_roots, cache_dir, on_bad_file, quiet)
    atomic_write_csv(df, out / "scores.csv")
    for (machine, section), g in df.groupby(["machine", "section"]):
        thr = model.thresholds.get(machine)
        if thr is None:
            raise DataError(f"{model_path}: no decision threshold for machine {machine}")
        write_submission(out / "submission", machine, section, g["file"].tolist(), g["score"].to_numpy(), thr)
    labelled = df[df["label"].isin(["normal", "anomaly"]) & df["domain"].isin(["source", "target"])]
    if labelled.empty:
        _log("test labels unknown: wrote submission files only", quiet)
        return None
    report = evaluate_scores(labelled)
    write_tables({system or Path(model_path).parent.name: report}, out)
    _json(out / "metrics.json", report.to_dict())
    from .plots import plot_roc_curves, plot_score_histograms

    plot_roc_curves(labelled, out / "plots")
    plot_score_histograms(labelled, out / "plots")
    return report


def write_score_csv(results, path: Path) -> None:
    atomic_write_csv(pd.DataFrame([r.__dict__ for r in results]), path)

"""The runners behind ``pretrain`` and ``finetune``: load features through the cache, drive a trainer
(the only training loops), and write outputs atomically — trainer state for exact resume, the exported
checkpoint for the next stage, the effective configuration (``config.yaml``), history and report.

Runners take a configuration object for *what* is computed and a
:class:`~data.config.RunOptions` for *how* it runs (cache, device, bad files, progress).
"""

from __future__ import annotations

import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import yaml
from tqdm.auto import tqdm

from data.atomic import atomic_write_csv, atomic_write_json, atomic_write_text, to_python
from data.config import RunOptions
from data.datasets import DataError, feature_stats, load_feature_table, make_pretrain_data, read_manifests
from data.features import FeatureConfig
from models import EncoderConfig, load_checkpoint, save_checkpoint

from ..evaluate.run import log
from ..evaluate.submission import fit_gamma_threshold
from ..scoring.model import MODEL_KIND, AnomalyModel
from .configs import FinetuneConfig, PretrainConfig
from .pretrain import PretrainTrainer
from .setup import PRETRAINED_KIND, FinetuneSetup, build_trainer, fit_encoder_to_features, load_pretrained, prepare_finetune

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
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifests(data_roots)
    train_rows = manifest[(manifest["split"] == "train") & (manifest["label"] == "normal")]
    table = load_feature_table(train_rows.reset_index(drop=True), feature_cfg, opts.cache_dir, opts.on_bad_file,
                               progress=not opts.quiet)
    encoder_cfg = fit_encoder_to_features(encoder_cfg, feature_cfg)
    table.features = table.features[..., : encoder_cfg.n_frames]  # a view: no copy
    data = make_pretrain_data(table, cfg.target, cfg.val_fraction, cfg.seed)
    mean, std = feature_stats(data.train_x)
    encoder_cfg = EncoderConfig.from_dict({**encoder_cfg.to_dict(), "input_mean": mean, "input_std": std})
    trainer = PretrainTrainer(cfg, encoder_cfg, data, opts.device)
    write_effective_config(out, pretrain=cfg, encoder=encoder_cfg, features=feature_cfg, run=opts,
                           job={"data": [str(d) for d in data_roots]})
    resume = out / "trainer_last.pt"
    if resume.exists():
        trainer.load_state_dict(load_checkpoint(resume))
        log(f"resumed pre-training from epoch {trainer.epoch}", opts.quiet)
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
        log(f"resumed fine-tuning from epoch {trainer.epoch}", quiet)
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
    cfg: FinetuneConfig,
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    machines: Sequence[str] | None,
    *,
    pretrained: str | Path | None = None,
    encoder_cfg: EncoderConfig | None = None,
    feature_cfg: FeatureConfig | None = None,
    model_kind: str = "ssm",
    threshold_percentile: float = 0.9,
    opts: RunOptions = RunOptions(),
) -> Path:
    """Fine-tune one model (one machine, or several pooled = generalized); returns ``model.pt``.

    ``pretrained`` is the stage-1 encoder; without it the encoder is built from ``encoder_cfg`` and
    trained from scratch. ``model_kind="ae"`` trains the DCASE autoencoder baseline instead, on the
    features of the pre-trained checkpoint when one is given (so both systems read the same input).
    An existing ``out_dir/trainer_last.pt`` is resumed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_kind == "ae":
        if pretrained is not None:  # the baseline reads the same features as the model it is compared with
            feature_cfg = load_pretrained(pretrained)[2]
        pretrained, encoder_cfg = None, None
    elif pretrained is None and encoder_cfg is None:
        raise DataError("from-scratch fine-tuning needs an encoder config (--preset …)")
    setup = prepare_finetune(data_roots, machines, pretrained, encoder_cfg, feature_cfg, opts.cache_dir,
                             opts.on_bad_file, opts.quiet)
    trainer = build_trainer(setup, cfg, model_kind, opts.device)
    write_effective_config(out, finetune=cfg, encoder=setup.encoder_cfg, features=setup.feature_cfg, run=opts,
                           job={"model_kind": model_kind, "machines": list(setup.machines),
                                "data": [str(d) for d in data_roots],
                                "pretrained": None if pretrained is None else str(pretrained),
                                "threshold_percentile": threshold_percentile})
    log(f"fine-tuning {model_kind} on {', '.join(setup.machines)}: {trainer.data.n_train} balanced training clips; "
         f"validation: {trainer.data.val_source}", opts.quiet)
    train_to_completion(trainer, out, opts.quiet)
    bundle = export_model(trainer, setup, threshold_percentile)
    save_checkpoint(out / "model.pt", bundle)
    atomic_write_json(out / "finetune_report.json", {
        "machines": setup.machines, "model_kind": model_kind, "config": cfg.to_dict(), "variant": cfg.variant,
        "validation": trainer.data.val_source, "best_epoch": trainer.best_epoch, "best_val_auc": trainer.best_auc,
        "epochs_run": trainer.epoch, "thresholds": bundle["thresholds"],
    }, sort_keys=True)
    log(f"best validation AUC {trainer.best_auc:.4f} at epoch {trainer.best_epoch} ({trainer.data.val_source}); "
         f"wrote {out / 'model.pt'}", opts.quiet)
    return out / "model.pt"

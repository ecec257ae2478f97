"""What a fine-tuning run needs before its first epoch: the pre-trained encoder, the features of the
machines' clips, and the trainer built from them (shared by ``finetune``, search trials and ``final-train``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from data.datasets import (
    DataError,
    FeatureTable,
    feature_stats,
    load_feature_table,
    make_finetune_data,
    read_manifests,
)
from data.features import FeatureConfig
from models import EncoderConfig, load_checkpoint

from .autoencoder import AETrainer
from .configs import AEBaselineConfig, FinetuneConfig
from .finetune import FinetuneTrainer
from .margin import MarginTrainer

PRETRAINED_KIND = "pretrained_encoder"


def fit_encoder_to_features(encoder_cfg: EncoderConfig, feature_cfg: FeatureConfig, **extra) -> EncoderConfig:
    """Encoder config sized for the features: the largest frame count the patches tile.

    Pixel-unshuffle and p×p patches need W to be a multiple of r·p (64 by default); a 10 s clip
    gives exactly 1024 frames, other lengths lose at most r·p − 1 trailing frames (e.g. 12 s:
    1229 → 1216). The same crop is applied wherever features meet the encoder.
    """
    step = encoder_cfg.frame_step
    n_frames = (feature_cfg.n_frames // step) * step
    if n_frames == 0:
        raise DataError(f"clips of {feature_cfg.audio.seconds} s give {feature_cfg.n_frames} frames, fewer than "
                        f"unshuffle*patch = {step}: use longer clips (--seconds) or a smaller --patch/--unshuffle")
    return EncoderConfig.from_dict({**encoder_cfg.to_dict(), "n_mels": feature_cfg.n_mels, "n_frames": n_frames, **extra})


def load_pretrained(path: str | Path) -> tuple[EncoderConfig, dict, FeatureConfig]:
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != PRETRAINED_KIND:
        raise DataError(f"{path}: not a pre-trained encoder checkpoint (kind={ckpt.get('kind')!r}); "
                        "pass the encoder.pt written by `pretrain`")
    try:
        return (EncoderConfig.from_dict(ckpt["encoder_config"]), ckpt["encoder"],
                FeatureConfig.from_dict(ckpt["feature_config"]))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"missing {err}" if isinstance(err, KeyError) else str(err).splitlines()[0][:200]
        raise DataError(f"{path}: a damaged or foreign encoder checkpoint ({what})") from None


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
    other_machines: bool = True,
) -> FinetuneSetup:
    """Load features (from the cache) for the machines' train/test clips and, with ``other_machines``,
    the other machines' normal training clips (the pseudo-outlier pool)."""
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
    train_normal = (manifest["split"] == "train") & (manifest["label"] == "normal")
    if not other_machines:
        train_normal &= manifest["machine"].isin(machines)
    wanted = train_normal | (manifest["machine"].isin(machines) & (manifest["split"] == "test"))
    table = load_feature_table(manifest[wanted].reset_index(drop=True), feature_cfg, cache_dir, on_bad_file,
                               progress=not quiet)
    if encoder_cfg is not None:
        if encoder_state is None:  # from scratch: size for these features, normalise with their statistics
            encoder_cfg = fit_encoder_to_features(encoder_cfg, feature_cfg)
            mean, std = feature_stats(table.features)
            encoder_cfg = EncoderConfig.from_dict({**encoder_cfg.to_dict(), "input_mean": mean, "input_std": std})
        table.features = table.features[..., : encoder_cfg.n_frames]
    return FinetuneSetup(table, machines, encoder_cfg, encoder_state, feature_cfg)


def build_trainer(setup: FinetuneSetup, cfg: FinetuneConfig, device: str = "auto",
                  validation: str = "auto") -> FinetuneTrainer:
    data = make_finetune_data(setup.table, setup.machines, seed=cfg.seed, validation=validation,
                              heldout_fraction=cfg.heldout_fraction, heldout_floor=cfg.heldout_floor,
                              select_on_all=cfg.select_on_all)
    trainer = (MarginTrainer if cfg.objective == "margin" else FinetuneTrainer)(
        cfg, setup.encoder_cfg, data, setup.encoder_state, device=device)
    if cfg.score == "knn" and cfg.embedding == "patch_stats" and not cfg.train_tokenizer:
        trainer.training_independent = True
        trainer.notes.append("one epoch trained: the score compares the tokenizer's patch statistics, which "
                             "fine-tuning does not change (the tokenizer stays frozen), so every epoch would validate "
                             "alike; --embedding head scores with the fine-tuned head, --train-tokenizer (margin "
                             "objective) trains the tokenizer too")
    return trainer


def build_ae_trainer(setup: FinetuneSetup, cfg: AEBaselineConfig, device: str = "auto") -> AETrainer:
    """The AE baseline never holds clips out (its own recipe holds out vectors); the validation part of a
    labelled test split is scored for its history only."""
    data = make_finetune_data(setup.table, setup.machines, seed=cfg.seed, heldout_floor=sys.maxsize)
    return AETrainer(cfg, data, device=device)

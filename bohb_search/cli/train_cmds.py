"""``pretrain``, ``finetune``, ``evaluate`` and ``score``: one model at a time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..scoring.config import DecisionConfig, ScoreConfig, StatsBaselineConfig
from ..train.configs import AEBaselineConfig, FinetuneConfig, PretrainConfig
from .common import (
    add_encoder_flags,
    add_feature_flags,
    add_run_flags,
    encoder_config,
    feature_config,
    run_options,
)
from .flags import UsageError, add_config_file_flag, add_config_flags, build_config, given, read_config_file

# "job" (what a written config.yaml ran: data, machines, …) is accepted and not read: those are flags
PRETRAIN_SECTIONS = ("pretrain", "encoder", "features", "run", "job")
FINETUNE_SECTIONS = ("finetune", "encoder", "features", "run", "job")
BASELINE_SECTIONS = ("baseline", "features", "run", "job")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ..train.runs import run_pretrain

    file = read_config_file(args.config, PRETRAIN_SECTIONS)
    cfg = build_config(PretrainConfig, file["pretrain"], given(args, PretrainConfig.__dataclass_fields__), "pretrain",
                       args.config)
    path = run_pretrain(cfg, args.data, args.out, encoder_config(args, file["encoder"], args.config),
                        feature_config(args, file["features"], args.config), run_options(args, file["run"], args.config))
    print(f"pre-trained encoder: {path}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..train.runs import run_finetune

    file = read_config_file(args.config, FINETUNE_SECTIONS)
    cfg = build_config(FinetuneConfig, file["finetune"], given(args, FinetuneConfig.__dataclass_fields__), "finetune",
                       args.config)
    decision = build_config(DecisionConfig, {}, given(args, DecisionConfig.__dataclass_fields__), "decision")
    if args.generalized and args.machine:
        raise UsageError("give either --machine or --generalized, not both")
    if not args.generalized and not args.machine:
        raise UsageError("--machine NAME (machine-specific model) or --generalized (all machines pooled) is required")
    if args.pretrained is None and not args.from_scratch:
        raise UsageError("--pretrained CKPT is required (or --from-scratch for the no-pre-training ablation)")
    path = run_finetune(cfg, args.data, args.out, None if args.generalized else args.machine,
                        pretrained=None if args.from_scratch else args.pretrained,
                        encoder_cfg=encoder_config(args, file["encoder"], args.config),
                        feature_cfg=feature_config(args, file["features"], args.config),
                        threshold_percentile=decision.threshold_percentile,
                        opts=run_options(args, file["run"], args.config))
    print(f"model: {path}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from ..train.runs import run_ae_baseline, run_stats_baseline

    file = read_config_file(args.config, BASELINE_SECTIONS)
    if args.generalized == bool(args.machine):
        raise UsageError("--machine NAME [NAME ...] or --generalized (one model for all machines) is required")
    decision = build_config(DecisionConfig, {}, given(args, DecisionConfig.__dataclass_fields__), "decision")
    own, other = ((StatsBaselineConfig, AEBaselineConfig) if args.kind == "stats" else
                  (AEBaselineConfig, StatsBaselineConfig))
    stray = sorted(set(given(args, other.__dataclass_fields__)) - set(own.__dataclass_fields__))
    if stray:
        raise UsageError(f"--{stray[0].replace('_', '-')} is a setting of the other baseline, not of --kind {args.kind}")
    cfg = build_config(own, file["baseline"], given(args, own.__dataclass_fields__), "baseline", args.config)
    if args.kind == "stats":
        path = run_stats_baseline(cfg, args.data, args.out, None if args.generalized else args.machine,
                                  feature_cfg=feature_config(args, file["features"], args.config),
                                  threshold_percentile=decision.threshold_percentile,
                                  opts=run_options(args, file["run"], args.config))
        print(f"model: {path}")
        return 0
    # the AE has its own log-mel (data.config.dcase_ae_features): only the clip length is read
    seconds = feature_config(args, file["features"], args.config).audio.seconds
    path = run_ae_baseline(cfg, args.data, args.out, None if args.generalized else args.machine, seconds=seconds,
                           threshold_percentile=decision.threshold_percentile,
                           opts=run_options(args, file["run"], args.config))
    print(f"model: {path}")
    return 0


def score_override(args: argparse.Namespace):
    """The score a saved model is re-scored with: ScoreConfig flags, or --ae-score for the AE; None = as trained."""
    typed = given(args, ScoreConfig.__dataclass_fields__)
    ae = getattr(args, "ae_score", None)
    if typed and ae:
        raise UsageError("--ae-score re-scores the AE baseline; the other score flags re-score embedding models")
    if typed:
        try:
            ScoreConfig.of({**ScoreConfig().to_dict(), **typed})
        except ValueError as err:
            raise UsageError(f"score: {err}") from None
        return typed
    return ae


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.run import evaluate_into
    from ..evaluate.tables import table2, table3, to_markdown

    outcome = evaluate_into(args.model, args.data, args.out, args.system, run_options(args), score=score_override(args))
    report = outcome.report
    if report is not None:
        name = args.system or " + ".join(Path(m).parent.name for m in args.model)
        print(to_markdown(table2({name: report})))
        print()
        print(to_markdown(table3({name: report})))
        print(f"\nofficial score {report.official_score:.4f} · TOTAL (hmean) {report.total_hmean:.4f}")
    print(outcome.summary(args.out))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ..evaluate.run import load_model, write_score_csv

    from data.config import AUDIO_SUFFIXES

    paths: list[Path] = []
    for item in args.inputs:
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif item.exists() or item.is_symlink():
            paths.append(item)
        else:
            raise UsageError(f"{item}: no such file or folder")
    if not paths:
        raise UsageError(f"no audio files to score under {', '.join(map(str, args.inputs))} "
                         f"(read: {', '.join(AUDIO_SUFFIXES)})")
    if args.channel != "mean":
        try:
            channel: int | str = int(args.channel)
        except ValueError:
            raise UsageError(f"--channel must be an integer index or 'mean', got {args.channel!r}") from None
    else:
        channel = "mean"
    model = load_model(args.model, score=score_override(args))
    results, skipped = model.score_files(paths, args.machine, channel, args.on_bad_file)
    for r in results:
        decision = "-" if r.decision is None else ("anomalous" if r.decision else "normal")
        print(f"{r.score:.6f}\t{decision}\t{r.path}")
    for p, reason in skipped:
        print(f"skipped {p}: {reason}", file=sys.stderr)
    if args.out:
        write_score_csv(results, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="stage 1: supervised pre-training of the encoder on machine types",
                       description="Pre-train the encoder (+ linear head) with cross-entropy over machine types on all "
                                   "normal TRAINING clips of the data roots (never test audio). An existing --out "
                                   "folder with trainer_last.pt is resumed.")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. results/pretrain/NAME (an unfinished run there is resumed; other settings than its epochs are refused)")
    add_config_file_flag(p)
    add_config_flags(p, PretrainConfig, title="pre-training (paper 2.4, 3.2)")
    add_encoder_flags(p, "encoder")
    add_feature_flags(p)
    add_run_flags(p)
    p.set_defaults(func=cmd_pretrain, outputs={"out": "folder", "cache_dir": "folder"})

    p = sub.add_parser("finetune", help="stage 2: pOE + GRL fine-tuning for one machine or the generalized model",
                       description="Fine-tune a pre-trained encoder with the anomaly head, pseudo-outlier exposure and "
                                   "the gradient-reversal domain classifier; early stopping on the validation score. An "
                                   "existing --out folder with trainer_last.pt is resumed.")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--machine", nargs="+", default=None, help="machine type(s) for a machine-specific model")
    p.add_argument("--generalized", action="store_true", help="one model for all machines, pooled and domain-balanced")
    p.add_argument("--pretrained", type=Path, default=None, help="encoder.pt written by `pretrain`")
    p.add_argument("--from-scratch", action="store_true", help="no pre-training (Table 1 ablation)")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. results/finetune/NAME (an unfinished run there is resumed; other settings than its epochs are refused)")
    add_config_flags(p, DecisionConfig, title="decision")
    add_config_file_flag(p)
    add_config_flags(p, FinetuneConfig, title="fine-tuning (paper 2.5, 3.2)")
    add_encoder_flags(p)
    add_feature_flags(p)
    add_run_flags(p)
    p.set_defaults(func=cmd_finetune, outputs={"out": "folder", "cache_dir": "folder"})

    p = sub.add_parser("baseline", help="the yardsticks: the DCASE AE baseline (official recipe) or the statistics k-NN",
                       description="--kind ae (default): train the DCASE Task 2 AE baseline as the official code does "
                                   "(its own log-mel, every vector of every training clip each epoch, Adam 1e-3, 100 "
                                   "epochs, the last epoch kept); an existing --out folder with trainer_last.pt is "
                                   "resumed. --kind stats: no training; per-band log-mel statistics over time "
                                   "(mean/std, max, TWFR) with per-domain k-NN banks, the pooling chosen per machine on "
                                   "the validation half of the labelled test split (seconds). Both are the "
                                   "yardsticks of every table.")
    p.add_argument("--kind", choices=("ae", "stats"), default="ae", help="which yardstick (default ae)")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--machine", nargs="+", default=None, help="machine type(s) trained together (DCASE: one per machine)")
    p.add_argument("--generalized", action="store_true", help="one AE for all machines")
    p.add_argument("--out", type=Path, required=True, help="output folder (an unfinished run there is resumed; other settings than its epochs are refused)")
    p.add_argument("--seconds", type=float, default=argparse.SUPPRESS,
                   help="clip length after pad/crop (default 10; DCASE ToyCar/ToyTrain clips are 12 s)")
    add_config_flags(p, DecisionConfig, title="decision")
    add_config_file_flag(p)
    add_config_flags(p, AEBaselineConfig, title="the AE baseline's recipe (--kind ae)")
    add_config_flags(p, StatsBaselineConfig, title="the statistics yardstick (--kind stats)")
    add_run_flags(p)
    p.set_defaults(func=cmd_baseline, outputs={"out": "folder", "cache_dir": "folder"})

    p = sub.add_parser("evaluate", help="score the test split: official metrics, tables, submission files",
                       description="Score every test clip of the model's machines; write DCASE submission files and, "
                                   "where labels exist, the official metrics and Table 2/3-style tables.")
    p.add_argument("--model", type=Path, action="append", required=True,
                   help="model.pt written by `finetune`, `baseline` or `final-train`; repeat for an ensemble (mean of "
                        "scores standardised on each model's own training clips)")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--system", default=None, help="system name in the tables (default: the model's folder name)")
    add_score_flags(p)
    add_run_flags(p, only=("cache_dir", "on_bad_file", "quiet"))
    p.set_defaults(func=cmd_evaluate, outputs={"out": "replaced folder", "cache_dir": "folder"})

    p = sub.add_parser("score", help="score new recordings of any length (prints score and decision per file)",
                       description="Score WAV/FLAC files of any length: windows of the training clip length are "
                                   "scored and averaged; the decision uses the machine's gamma threshold.")
    p.add_argument("--model", type=Path, action="append", required=True,
                   help="model.pt; repeat for an ensemble (mean of scores standardised on each model's training clips)")
    p.add_argument("inputs", type=Path, nargs="+", help="files or folders")
    p.add_argument("--machine", default=None, help="machine type whose threshold decides (default: the model's only one)")
    p.add_argument("--channel", default="0", help="channel index or 'mean'")
    p.add_argument("--out", type=Path, default=None, help="also write the scores as CSV")
    p.add_argument("--on-bad-file", choices=["fail", "skip"], default="fail",
                   help="unreadable/empty/NaN/too-short files: stop (default) or leave out and list")
    add_score_flags(p)
    p.set_defaults(func=cmd_score, outputs={"out": "file"})


def add_score_flags(p) -> None:
    """Re-scoring a saved model without retraining (defaults: the score it was trained with)."""
    add_config_flags(p, ScoreConfig, title="score (default: the one the model was trained with)",
                     defaults={f: "as trained" for f in ScoreConfig.__dataclass_fields__})
    p.add_argument("--ae-score", choices=["mse", "mahalanobis"], default=None,
                   help="the AE baseline's score (default: as trained)")

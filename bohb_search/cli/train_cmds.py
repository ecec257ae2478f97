"""``pretrain``, ``finetune``, ``evaluate`` and ``score``: one model at a time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..train.configs import FinetuneConfig, PretrainConfig
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


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ..train.runs import run_pretrain

    file = read_config_file(args.config, PRETRAIN_SECTIONS)
    cfg = build_config(PretrainConfig, file["pretrain"], given(args, PretrainConfig.__dataclass_fields__), "pretrain")
    path = run_pretrain(cfg, args.data, args.out, encoder_config(args, file["encoder"]),
                        feature_config(args, file["features"]), run_options(args, file["run"]))
    print(f"pre-trained encoder: {path}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..train.runs import run_finetune

    file = read_config_file(args.config, FINETUNE_SECTIONS)
    cfg = build_config(FinetuneConfig, file["finetune"], given(args, FinetuneConfig.__dataclass_fields__), "finetune")
    if args.generalized and args.machine:
        raise UsageError("give either --machine or --generalized, not both")
    if not args.generalized and not args.machine:
        raise UsageError("--machine NAME (machine-specific model) or --generalized (all machines pooled) is required")
    if args.pretrained is None and args.model_kind != "ae" and not args.from_scratch:
        raise UsageError("--pretrained CKPT is required (or --from-scratch for the no-pre-training ablation)")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    path = run_finetune(cfg, args.data, args.out, None if args.generalized else args.machine,
                        pretrained=None if args.from_scratch else args.pretrained,
                        encoder_cfg=encoder_config(args, file["encoder"]),
                        feature_cfg=feature_config(args, file["features"]), model_kind=args.model_kind,
                        threshold_percentile=args.threshold_percentile, opts=run_options(args, file["run"]))
    print(f"model: {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.run import run_evaluate
    from ..evaluate.tables import table2, table3, to_markdown

    report = run_evaluate(args.model, args.data, args.out, args.system, run_options(args))
    if report is not None:
        name = args.system or Path(args.model).parent.name
        print(to_markdown(table2({name: report})))
        print()
        print(to_markdown(table3({name: report})))
        print(f"\nofficial score {report.official_score:.4f} · TOTAL (hmean) {report.total_hmean:.4f}")
    print(f"wrote scores, tables and submission files under {args.out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ..evaluate.run import write_score_csv
    from ..scoring.model import AnomalyModel

    paths: list[Path] = []
    for item in args.inputs:
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
        elif item.exists():
            paths.append(item)
        else:
            raise UsageError(f"{item}: no such file or folder")
    if not paths:
        raise UsageError("no .wav/.flac files to score")
    if args.channel != "mean":
        try:
            channel: int | str = int(args.channel)
        except ValueError:
            raise UsageError(f"--channel must be an integer index or 'mean', got {args.channel!r}") from None
    else:
        channel = "mean"
    model = AnomalyModel.load(args.model)
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
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. results/pretrain/NAME")
    add_config_file_flag(p)
    add_config_flags(p, PretrainConfig, title="pre-training (paper 2.4, 3.2)")
    add_encoder_flags(p, "encoder")
    add_feature_flags(p)
    add_run_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="stage 2: pOE + GRL fine-tuning for one machine or the generalized model",
                       description="Fine-tune a pre-trained encoder with the anomaly head, pseudo-outlier exposure and "
                                   "the gradient-reversal domain classifier; early stopping on validation AUC. An "
                                   "existing --out folder with trainer_last.pt is resumed.")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--machine", nargs="+", default=None, help="machine type(s) for a machine-specific model")
    p.add_argument("--generalized", action="store_true", help="one model for all machines, pooled and domain-balanced")
    p.add_argument("--pretrained", type=Path, default=None, help="encoder.pt written by `pretrain`")
    p.add_argument("--from-scratch", action="store_true", help="no pre-training (Table 1 ablation)")
    p.add_argument("--model-kind", choices=["ssm", "ae"], default="ssm",
                   help="ssm: the encoder named by the checkpoint/preset; ae: the DCASE autoencoder baseline")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. results/finetune/NAME")
    p.add_argument("--threshold-percentile", type=float, default=0.9,
                   help="decision threshold: gamma-fit percentile of training scores (default 0.9, as the DCASE baseline)")
    add_config_file_flag(p)
    add_config_flags(p, FinetuneConfig, title="fine-tuning (paper 2.5, 3.2)")
    add_encoder_flags(p)
    add_feature_flags(p)
    add_run_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="score the test split: official metrics, tables, submission files",
                       description="Score every test clip of the model's machines; write DCASE submission files and, "
                                   "where labels exist, the official metrics and Table 2/3-style tables.")
    p.add_argument("--model", type=Path, required=True, help="model.pt written by `finetune` or `final-train`")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--system", default=None, help="system name in the tables (default: the model's folder name)")
    add_run_flags(p, only=("cache_dir", "on_bad_file", "quiet"))
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="score new recordings of any length (prints score and decision per file)",
                       description="Score WAV/FLAC files of any length: windows of the training clip length are "
                                   "scored and averaged; the decision uses the machine's gamma threshold.")
    p.add_argument("--model", type=Path, required=True, help="model.pt")
    p.add_argument("inputs", type=Path, nargs="+", help="files or folders")
    p.add_argument("--machine", default=None, help="machine type whose threshold decides (default: the model's only one)")
    p.add_argument("--channel", default="0", help="channel index or 'mean'")
    p.add_argument("--out", type=Path, default=None, help="also write the scores as CSV")
    p.add_argument("--on-bad-file", choices=["fail", "skip"], default="fail",
                   help="unreadable/empty/NaN/too-short files: stop (default) or leave out and list")
    p.set_defaults(func=cmd_score)

"""The one command line: ``python -m bohb_search <command>`` (also installed as ``bohb-search``).

Heavy libraries (torch, ray, mlflow) are imported inside the command handlers so that
``--help`` answers instantly. Every user-facing failure is turned into a one-line ``error: …``
on stderr and exit status 2; tracebacks are kept for genuine bugs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UsageError(Exception):
    """A problem with the user's input (file, folder or parameter); printed as one line."""


# --------------------------------------------------------------------------------------------
# shared option groups


def add_feature_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features")
    g.add_argument("--seconds", type=float, default=10.0,
                   help="clip length after pad/crop, in seconds (default 10; DCASE ToyCar/ToyTrain clips are 12 s)")
    g.add_argument("--channel", default="0",
                   help="channel of multi-channel files: an index (default 0) or 'mean' to average channels")
    g.add_argument("--min-seconds", type=float, default=1.0,
                   help="reject clips shorter than this (default 1.0 s)")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="feature cache root (default $BOHB_SEARCH_CACHE or ~/.cache/bohb-search/features)")
    g.add_argument("--on-bad-file", choices=["fail", "skip"], default="fail",
                   help="what to do with unreadable/empty/NaN/too-short clips: stop (default) or skip and summarise")


def feature_config_from_args(args: argparse.Namespace):
    from data.audio import AudioConfig
    from data.features import FeatureConfig

    channel: int | str = args.channel
    if channel != "mean":
        try:
            channel = int(channel)
        except ValueError:
            raise UsageError(f"--channel must be an integer index or 'mean', got {args.channel!r}") from None
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be > 0, got {args.seconds}")
    return FeatureConfig(audio=AudioConfig(seconds=args.seconds, channel=channel, min_seconds=args.min_seconds))


def load_manifest_or_fail(data_dir: Path):
    from data.manifest import ManifestError, read_manifest

    try:
        df = read_manifest(data_dir)
    except ManifestError as err:
        raise UsageError(str(err)) from None
    for msg in df.attrs.get("unparsed", []):
        print(f"warning: skipped {msg}", file=sys.stderr)
    if df.empty:
        raise UsageError(f"{data_dir}: no DCASE clips found (expected <machine>/train|test/*.wav)")
    return df


# --------------------------------------------------------------------------------------------
# data commands


def cmd_data_summary(args: argparse.Namespace) -> int:
    from data.manifest import empty_machine_dirs, summarize

    df = load_manifest_or_fail(args.data)
    for d in empty_machine_dirs(args.data):
        print(f"warning: {d}: machine folder holds no clips", file=sys.stderr)
    table = summarize(df)
    wide = table.pivot_table(index=["machine", "split", "label"], columns="domain", values="clips",
                             aggfunc="sum", fill_value=0)
    wide["total"] = wide.sum(axis=1)
    print(f"{len(df)} clips under {args.data}")
    print(wide.to_string())
    if args.csv:
        from data.atomic import atomic_write_csv

        atomic_write_csv(table, args.csv)
        print(f"wrote {args.csv}")
    return 0


def cmd_data_features(args: argparse.Namespace) -> int:
    from data.audio import BadAudioError
    from data.features import extract_features

    cfg = feature_config_from_args(args)
    df = load_manifest_or_fail(args.data)
    if args.machines:
        unknown = sorted(set(args.machines) - set(df["machine"]))
        if unknown:
            raise UsageError(f"--machines: not found under {args.data}: {', '.join(unknown)}")
        df = df[df["machine"].isin(args.machines)]
    try:
        res = extract_features(df["path"].tolist(), cfg, cache_dir=args.cache_dir, batch_size=args.batch_size,
                               on_bad_file=args.on_bad_file, progress=not args.quiet)
    except BadAudioError as err:
        raise UsageError(f"{err} (use --on-bad-file skip to leave such files out)") from None
    print(res.summary())
    for path, reason in res.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from data.synth import SynthConfig, synthesize

    try:
        cfg = SynthConfig(
            machines=tuple(args.machines) if args.machines else SynthConfig().machines,
            train_source=args.train_source, train_target=args.train_target,
            test_per_cell=args.test_per_cell, seconds=args.seconds, toy_seconds=args.toy_seconds, seed=args.seed,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        df = synthesize(args.out, cfg, workers=args.workers, progress=not args.quiet)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {len(df)} clips for {df['machine'].nunique()} machine type(s) under {args.out}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from data.download import run_download

    return run_download(args)

# --------------------------------------------------------------------------------------------
# model options and training commands


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (ignored when a pre-trained encoder is given)")
    g.add_argument("--preset", choices=["tiny", "small", "base"], default="tiny",
                   help="encoder size: D 192/384/768 (default tiny)")
    g.add_argument("--backbone", choices=["ssm", "ast"], default="ssm",
                   help="bidirectional SSM (Audio-Mamba, default) or the AST-style transformer baseline")
    g.add_argument("--depth", type=int, default=None, help="number of encoder blocks (preset default 24)")
    g.add_argument("--dim", type=int, default=None, help="token width D (overrides the preset)")
    g.add_argument("--unshuffle", type=int, default=4, help="pixel-unshuffle factor r (default 4; 1 = none)")
    g.add_argument("--patch", type=int, default=16, help="patch size p (default 16)")
    g.add_argument("--scan-backend", choices=["auto", "torch", "reference", "cuda"], default="auto",
                   help="selective-scan implementation (auto: mamba-ssm CUDA kernel when present, else PyTorch)")


def encoder_config_from_args(args: argparse.Namespace):
    """The preset with the command's overrides; the pipeline sizes it to the features."""
    from models import encoder_preset

    overrides = {"kind": args.backbone, "unshuffle": args.unshuffle, "patch": args.patch,
                 "scan_backend": args.scan_backend}
    if args.depth is not None:
        overrides["depth"] = args.depth
    if args.dim is not None:
        overrides["dim"] = args.dim
    try:
        return encoder_preset(args.preset, **overrides)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None


def _common_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 …")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _user_errors_as_usage(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _user_errors() as err:
            raise UsageError(str(err)) from None

    return run


def _user_errors():
    """Exceptions that mean bad input rather than a bug: reported as one line."""
    from bohb_search.datasets import DataError
    from data.audio import BadAudioError
    from models import CheckpointError

    return (DataError, BadAudioError, CheckpointError, ValueError, FileNotFoundError)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from bohb_search.pipeline import run_pretrain
    from bohb_search.configs import PretrainConfig

    try:
        feature_cfg = feature_config_from_args(args)
        enc = encoder_config_from_args(args)
        cfg = PretrainConfig(lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                             micro_batch_size=args.micro_batch_size or args.batch_size, epochs=args.epochs,
                             target=args.target, val_fraction=args.val_fraction, seed=args.seed)
        path = run_pretrain(args.data, args.out, enc, cfg, feature_cfg, args.cache_dir, args.device,
                            args.on_bad_file, args.quiet)
    except _user_errors() as err:
        raise UsageError(str(err)) from None
    print(f"pre-trained encoder: {path}")
    return 0


def add_finetune_options(p: argparse.ArgumentParser) -> None:
    from bohb_search.configs import FinetuneConfig

    d = FinetuneConfig()
    g = p.add_argument_group("fine-tuning (paper 2.5, 3.2)")
    g.add_argument("--lr", type=float, default=d.lr, help=f"AdamW lr of θ_f (default {d.lr})")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default {d.weight_decay}")
    g.add_argument("--lambda-adv", type=float, default=d.lambda_adv, help=f"weight of L_adv; 0 = pOE only (default {d.lambda_adv})")
    g.add_argument("--delta", type=float, default=d.delta, help=f"margin δ of L_oe (default {d.delta})")
    g.add_argument("--unfreeze-k", type=int, default=d.unfreeze_k, help=f"trainable final blocks K (default {d.unfreeze_k})")
    g.add_argument("--head-dropout", type=float, default=d.head_dropout, help=f"default {d.head_dropout}")
    g.add_argument("--poe-ratio", type=float, default=d.poe_ratio,
                   help=f"pseudo outliers per normal; 0 = OC-SVDD, no outliers (default {d.poe_ratio})")
    g.add_argument("--other-machine-share", type=float, default=d.other_machine_share,
                   help=f"share of outliers from other machine types (default {d.other_machine_share})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    g.add_argument("--max-epochs", type=int, default=d.max_epochs, help=f"default {d.max_epochs}")
    g.add_argument("--patience", type=int, default=d.patience, help=f"early-stopping patience (default {d.patience})")
    g.add_argument("--score", choices=["cosine", "knn"], default=d.score,
                   help="anomaly score: 1 − cos(z, c) (default) or k-NN cosine distance, min over domains")
    g.add_argument("--seed", type=int, default=0)


def finetune_config_from_args(args: argparse.Namespace):
    from bohb_search.configs import FinetuneConfig

    try:
        return FinetuneConfig(lr=args.lr, weight_decay=args.weight_decay, lambda_adv=args.lambda_adv, delta=args.delta,
                              unfreeze_k=args.unfreeze_k, head_dropout=args.head_dropout, poe_ratio=args.poe_ratio,
                              other_machine_share=args.other_machine_share, batch_size=args.batch_size,
                              max_epochs=args.max_epochs, patience=args.patience, score=args.score, seed=args.seed)
    except ValueError as err:
        raise UsageError(str(err)) from None


def cmd_finetune(args: argparse.Namespace) -> int:
    from bohb_search.pipeline import run_finetune

    cfg = finetune_config_from_args(args)
    if args.generalized and args.machine:
        raise UsageError("give either --machine or --generalized, not both")
    if not args.generalized and not args.machine:
        raise UsageError("--machine NAME (machine-specific model) or --generalized (all machines pooled) is required")
    if args.pretrained is None and args.model_kind != "ae" and not args.from_scratch:
        raise UsageError("--pretrained CKPT is required (or --from-scratch for the no-pre-training ablation)")
    machines = None if args.generalized else args.machine
    try:
        feature_cfg = feature_config_from_args(args)
        enc = encoder_config_from_args(args)
        path = run_finetune(args.data, args.out, cfg, machines, None if args.from_scratch else args.pretrained, enc,
                            args.model_kind, args.cache_dir, args.device, args.on_bad_file,
                            args.threshold_percentile, args.quiet, feature_cfg)
    except _user_errors() as err:
        raise UsageError(str(err)) from None
    print(f"model: {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bohb_search.pipeline import run_evaluate
    from bohb_search.reporting import table2, table3, to_markdown

    try:
        report = run_evaluate(args.model, args.data, args.out, args.system, args.cache_dir, args.on_bad_file, args.quiet)
    except _user_errors() as err:
        raise UsageError(str(err)) from None
    if report is not None:
        name = args.system or Path(args.model).parent.name
        print(to_markdown(table2({name: report})))
        print()
        print(to_markdown(table3({name: report})))
        print(f"\nofficial score {report.official_score:.4f} · TOTAL (hmean) {report.total_hmean:.4f}")
    print(f"wrote scores, tables and submission files under {args.out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from bohb_search.inference import AnomalyModel
    from bohb_search.pipeline import write_score_csv

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
    try:
        model = AnomalyModel.load(args.model)
        channel = args.channel if args.channel == "mean" else int(args.channel)
        results, skipped = model.score_files(paths, args.machine, channel, args.on_bad_file)
    except _user_errors() as err:
        raise UsageError(str(err)) from None
    for r in results:
        decision = "-" if r.decision is None else ("anomalous" if r.decision else "normal")
        print(f"{r.score:.6f}\t{decision}\t{r.path}")
    for p, reason in skipped:
        print(f"skipped {p}: {reason}", file=sys.stderr)
    if args.out:
        write_score_csv(results, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0

def ensure_pretrained(args: argparse.Namespace) -> Path:
    """--pretrained, or an encoder pre-trained once per data roots + model settings and reused."""
    if args.pretrained is not None:
        if not args.pretrained.is_file():
            raise UsageError(f"--pretrained {args.pretrained}: no such file")
        return args.pretrained
    from bohb_search.configs import PretrainConfig
    from bohb_search.pipeline import run_pretrain
    from bohb_search.search import pretrained_cache_key

    enc = encoder_config_from_args(args)
    feature_cfg = feature_config_from_args(args)
    key = pretrained_cache_key([str(d) for d in args.data], {"encoder": enc.to_dict(), "features": feature_cfg.to_dict(),
                                                              "epochs": args.pretrain_epochs})
    out = Path(args.pretrain_dir) / f"auto-{key}"
    if len(list(out.glob("epoch_*.pt"))) >= args.pretrain_epochs and (out / "encoder.pt").exists():
        print(f"reusing pre-trained encoder {out / 'encoder.pt'}")
        return out / "encoder.pt"
    print(f"no --pretrained given: pre-training once into {out} (reused by later searches on the same data)")
    return run_pretrain(args.data, out, enc, PretrainConfig(epochs=args.pretrain_epochs, batch_size=args.batch_size),
                        feature_cfg, args.cache_dir, args.device, args.on_bad_file, quiet=False)


def cmd_search(args: argparse.Namespace) -> int:
    from bohb_search.search import SearchError, SearchSettings, default_space, run_search

    from data.synth import DEV_MACHINES

    chosen = sum(bool(x) for x in (args.machine, args.all_machines, args.generalized))
    if chosen != 1:
        raise UsageError("choose one of --machine NAME [NAME ...], --all-machines or --generalized")
    groups: list[list[str] | None]
    if args.generalized:
        groups = [None]
    else:
        groups = [[m] for m in (DEV_MACHINES if args.all_machines else args.machine)]
    if args.gpus_per_trial is None:
        import torch

        args.gpus_per_trial = 1.0 if torch.cuda.is_available() else 0.0
    try:
        pretrained = ensure_pretrained(args)
        for machines in groups:
            label = "generalized" if machines is None else machines[0]
            name = args.name if (args.name and len(groups) == 1) else (f"{args.name}-{label}" if args.name else label)
            settings = SearchSettings(
                name=name, data=[str(d) for d in args.data], machines=machines, pretrained=str(pretrained),
                space=str(args.space or default_space(machines is None)), num_samples=args.num_samples,
                max_epochs=args.max_epochs, min_epochs=args.min_epochs, eta=args.eta,
                cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                max_concurrent=args.max_concurrent, max_failures=args.max_failures, seed=args.seed,
                storage_path=str(args.storage_path), tracking_uri=args.tracking_uri,
                cache_dir=str(args.cache_dir) if args.cache_dir else None, batch_size=args.batch_size,
                device=args.device)
            print(f"search {name}: {'all machines (generalized)' if machines is None else machines[0]}, "
                  f"{settings.num_samples} trials, max {settings.max_epochs} epochs, η={settings.eta}")
            best = run_search(settings, resume=args.resume, address=args.address, verbose=0 if args.quiet else 1)
            print(f"search {name}: best {best['metric']['name']} = {best['metric']['value']:.4f} "
                  f"(trial {best['trial_id']}, {best['budget_epochs']} epochs); "
                  f"wrote {settings.out_dir / 'best_config.json'}")
    except (SearchError,) + _user_errors() as err:
        raise UsageError(str(err)) from None
    return 0


def cmd_final_train(args: argparse.Namespace) -> int:
    from bohb_search.final import find_best_configs, run_final_train

    try:
        paths = find_best_configs(args.best, args.searches_dir)
        reports = run_final_train(paths, args.out, args.max_epochs, args.with_baseline, args.tracking_uri,
                                  str(args.cache_dir) if args.cache_dir else None, args.device, args.quiet)
    except _user_errors() as err:
        raise UsageError(str(err)) from None
    from bohb_search.reporting import table2, table3, to_markdown

    if reports:
        print(to_markdown(table2(reports)))
        print()
        print(to_markdown(table3(reports)))
        print()
    for system, r in reports.items():
        print(f"{system}: official score {r.official_score:.4f} · TOTAL (hmean) {r.total_hmean:.4f}")
    print(f"wrote tables, submission files and final checkpoints under {args.out}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from bohb_search.quickstart import QuickstartConfig, run_quickstart

    q = QuickstartConfig(out=args.out, search_machine=args.machine, train_source=args.train_source,
                         train_target=args.train_target, test_per_cell=args.test_per_cell, seconds=args.seconds,
                         pretrain_epochs=args.pretrain_epochs, machine_trials=args.trials,
                         machine_max_epochs=args.max_epochs, final_max_epochs=args.final_max_epochs,
                         dim=args.dim, depth=args.depth, seed=args.seed, device=args.device,
                         tracking_uri=args.tracking_uri, fresh=args.fresh, quiet=args.quiet)
    try:
        run_quickstart(q)
    except _user_errors() as err:
        raise UsageError(str(err)) from None
    return 0


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bohb-search",
        description="Anomalous machine-sound detection with an Audio-Mamba encoder, pOE + GRL fine-tuning and BOHB search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    data = sub.add_parser("data", help="datasets: synthesize, download, extract features, summarize",
                          description="Dataset commands.")
    dsub = data.add_subparsers(dest="data_command", metavar="<data command>", required=True)

    p = dsub.add_parser("summary", help="count clips by machine × domain × split × label",
                        description="Read a DCASE folder and print clip counts by machine × split × label × domain.")
    p.add_argument("--data", type=Path, required=True, help="DCASE data root (any DCASE layout)")
    p.add_argument("--csv", type=Path, default=None, help="also write the long-form counts table as CSV")
    p.set_defaults(func=cmd_data_summary)

    p = dsub.add_parser("features", help="extract and cache log-mel features (prints clips/s)",
                        description="Compute the log-mel features of every clip once and cache them on disk.")
    p.add_argument("--data", type=Path, required=True, help="DCASE data root")
    p.add_argument("--machines", nargs="+", default=None, help="only these machine types")
    p.add_argument("--batch-size", type=int, default=32, help="clips per extraction batch (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_feature_options(p)
    p.set_defaults(func=cmd_data_features)

    p = dsub.add_parser("synth", help="write a synthetic DCASE-2025-layout dataset of machine sounds",
                        description="Synthesize physically motivated machine sounds in the DCASE 2025 dev layout.")
    p.add_argument("--out", type=Path, required=True, help="output root (machine folders are created under it)")
    p.add_argument("--machines", nargs="+", default=None,
                   help="machine types (default: ToyCar ToyTrain bearing fan gearbox slider valve)")
    p.add_argument("--train-source", type=int, default=990, help="source-domain normal training clips per machine")
    p.add_argument("--train-target", type=int, default=10, help="target-domain normal training clips per machine")
    p.add_argument("--test-per-cell", type=int, default=50, help="test clips per (domain × label) cell")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    p.add_argument("--toy-seconds", type=float, default=None, help="clip length of ToyCar/ToyTrain (default: --seconds)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed → identical files)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_synth)

    p = dsub.add_parser("download", help="download the official DCASE 2025 Task 2 archives from Zenodo",
                        description="Fetch, verify (size + md5) and unpack the DCASE 2025 Task 2 archives, resuming "
                                    "partial downloads: dev (Zenodo 15097779), additional (15392814), eval (15519362).")
    from data.download import add_download_arguments  # stdlib-only module: cheap to import

    add_download_arguments(p)
    p.set_defaults(func=cmd_data_download)

    p = sub.add_parser("pretrain", help="stage 1: supervised pre-training of the encoder on machine types",
                       description="Pre-train the encoder (+ linear head) with cross-entropy over machine types on all "
                                   "normal TRAINING clips of the data roots (never test audio).")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. results/pretrain/NAME")
    p.add_argument("--epochs", type=int, default=5, help="default 5 (paper)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="default 1e-2")
    p.add_argument("--batch-size", type=int, default=256, help="effective batch size (default 256)")
    p.add_argument("--micro-batch-size", type=int, default=None, help="accumulate gradients over micro-batches of this size")
    p.add_argument("--target", choices=["machine", "machine_section_attr"], default="machine",
                   help="classes: machine types (default) or machine × section × attributes")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of clips per class (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    add_model_options(p)
    add_feature_options(p)
    _common_run_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="stage 2: pOE + GRL fine-tuning for one machine or the generalized model",
                       description="Fine-tune a pre-trained encoder with the anomaly head, pseudo-outlier exposure and "
                                   "the gradient-reversal domain classifier; early stopping on validation AUC.")
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
    add_finetune_options(p)
    add_model_options(p)
    add_feature_options(p)
    _common_run_options(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="score the test split: official metrics, tables, submission files",
                       description="Score every test clip of the model's machines; write DCASE submission files and, "
                                   "where labels exist, the official metrics and Table 2/3-style tables.")
    p.add_argument("--model", type=Path, required=True, help="model.pt written by `finetune` or `final-train`")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--system", default=None, help="system name in the tables (default: the model's folder name)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache root")
    p.add_argument("--on-bad-file", choices=["fail", "skip"], default="fail")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="score new recordings of any length (prints score and decision per file)",
                       description="Score WAV/FLAC files of any length: windows of the training clip length are "
                                   "scored and averaged; the decision uses the machine's gamma threshold.")
    p.add_argument("--model", type=Path, required=True, help="model.pt")
    p.add_argument("inputs", type=Path, nargs="+", help="files or folders")
    p.add_argument("--machine", default=None, help="machine type whose threshold decides (default: the model's only one)")
    p.add_argument("--channel", default="0", help="channel index or 'mean'")
    p.add_argument("--out", type=Path, default=None, help="also write the scores as CSV")
    p.add_argument("--on-bad-file", choices=["fail", "skip"], default="fail")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("search", help="BOHB hyperparameter search (Ray Tune), one per machine or generalized",
                       description="TuneBOHB + HyperBandForBOHB over a search-space file; every trial is an MLflow "
                                   "run. Works on a local Ray instance or an existing cluster (--address auto), also "
                                   "as the entrypoint of `ray job submit`.")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--machine", nargs="+", default=None, help="one search per machine type")
    p.add_argument("--all-machines", action="store_true", help="the seven DCASE dev machine types in turn")
    p.add_argument("--generalized", action="store_true", help="one search for the generalized model")
    p.add_argument("--space", type=Path, default=None,
                   help="search-space file (default search_spaces/machine_default.yaml or generalized_default.yaml)")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="encoder.pt from `pretrain` (default: pre-train once per data roots and reuse)")
    p.add_argument("--pretrain-dir", type=Path, default=Path("results/pretrain"), help="where automatic pre-training writes")
    p.add_argument("--pretrain-epochs", type=int, default=5, help="epochs of automatic pre-training (default 5)")
    p.add_argument("--num-samples", type=int, default=27, help="number of trials (default 27)")
    p.add_argument("--max-epochs", type=int, default=81, help="Hyperband max_t in epochs (default 81)")
    p.add_argument("--min-epochs", type=int, default=1, help="smallest budget = epochs per Tune iteration (default 1)")
    p.add_argument("--eta", type=int, default=3, help="Hyperband reduction factor η (default 3)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="default 1")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="fractions allowed, e.g. 0.25 (default 1 with CUDA, else 0)")
    p.add_argument("--max-concurrent", type=int, default=0, help="concurrent trials (default 0 = as resources allow)")
    p.add_argument("--max-failures", type=int, default=0, help="retries of a failing trial (default 0)")
    p.add_argument("--batch-size", type=int, default=256, help="fine-tuning batch size of every trial (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage-path", type=Path, default=Path("results/searches"), help="default results/searches")
    p.add_argument("--name", default=None, help="search name (default: the machine, or 'generalized')")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search of the same name")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///results/mlflow.db)")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default $RAY_ADDRESS or a local Ray")
    add_model_options(p)
    add_feature_options(p)
    _common_run_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("final-train", help="retrain the best configs at full budget; results tables and submissions",
                       description="Retrain each search's best configuration (early stopping, at most --max-epochs), "
                                   "evaluate on the test split, write Table 2/3-style results, submission files and "
                                   "final checkpoints, and log one MLflow run per model.")
    p.add_argument("--best", type=Path, nargs="+", default=None, help="best_config.json files")
    p.add_argument("--searches-dir", type=Path, default=None, help="take every <dir>/*/best_config.json")
    p.add_argument("--out", type=Path, default=Path("results/final"), help="output folder (default results/final)")
    p.add_argument("--max-epochs", type=int, default=100, help="at most this many epochs (default 100, paper)")
    p.add_argument("--with-baseline", action="store_true", help="also train the DCASE AE baseline per machine")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache root")
    _common_run_options(p)
    p.set_defaults(func=cmd_final_train)

    from bohb_search.experiments import add_ablate_parser, add_compare_searchers_parser

    for register in (add_ablate_parser, add_compare_searchers_parser):
        register(sub)
    for name in ("ablate", "compare-searchers"):  # their handlers raise ValueError for bad input
        sp = sub.choices[name]
        sp.set_defaults(func=_user_errors_as_usage(sp.get_default("func")))

    p = sub.add_parser("quickstart", help="the main job on a small synthetic data set (CPU, minutes)",
                       description="Synthesize a small DCASE-layout data set, extract features, pre-train a small "
                                   "encoder, run a BOHB search for one machine and a small generalized one (MLflow-"
                                   "tracked), retrain the best configs with the AE baseline, print the results tables.")
    p.add_argument("--out", type=Path, default=Path("results/quickstart"), help="output folder (default results/quickstart)")
    p.add_argument("--machine", default="fan", help="machine type of the machine-specific search (default fan)")
    p.add_argument("--trials", type=int, default=9, help="BOHB trials of the machine search (default 9)")
    p.add_argument("--max-epochs", type=int, default=9, help="Hyperband max_t of the machine search (default 9)")
    p.add_argument("--final-max-epochs", type=int, default=9, help="epochs of the final retrain (default 9)")
    p.add_argument("--train-source", type=int, default=40, help="source normal training clips per machine (default 40)")
    p.add_argument("--train-target", type=int, default=4, help="target normal training clips per machine (default 4)")
    p.add_argument("--test-per-cell", type=int, default=10, help="test clips per domain × label (default 10)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    p.add_argument("--pretrain-epochs", type=int, default=10, help="default 10")
    p.add_argument("--dim", type=int, default=64, help="encoder width (default 64)")
    p.add_argument("--depth", type=int, default=4, help="encoder blocks (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///<out>/mlflow.db)")
    p.add_argument("--fresh", action="store_true", help="delete the output folder first instead of reusing it")
    _common_run_options(p)
    p.set_defaults(func=cmd_quickstart)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

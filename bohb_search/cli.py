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
    df = synthesize(args.out, cfg, workers=args.workers, progress=not args.quiet)
    print(f"wrote {len(df)} clips for {df['machine'].nunique()} machine type(s) under {args.out}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from data.download import run_download

    return run_download(args)


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

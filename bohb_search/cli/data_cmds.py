"""``data summary / features / synth / download``: datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    add_feature_flags,
    add_run_flags,
    feature_config,
    load_manifest_or_fail,
    nonnegative_int,
    positive_int,
    run_options,
)
from .flags import UsageError, add_config_flags, build_config, given


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
    from data.features import extract_features

    cfg = feature_config(args)
    opts = run_options(args)
    df = load_manifest_or_fail(args.data)
    if args.machines:
        unknown = sorted(set(args.machines) - set(df["machine"]))
        if unknown:
            raise UsageError(f"--machines: not found under {args.data}: {', '.join(unknown)}")
        df = df[df["machine"].isin(args.machines)]
    res = extract_features(df["path"].tolist(), cfg, cache_dir=opts.cache_dir, batch_size=args.batch_size,
                           on_bad_file=opts.on_bad_file, progress=not opts.quiet)
    print(res.summary())
    for path, reason in res.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from data.synth import SynthConfig, synthesize

    cfg = build_config(SynthConfig, {}, given(args, SynthConfig.__dataclass_fields__), "data synth")
    try:
        df = synthesize(args.out, cfg, workers=args.workers, progress=not args.quiet)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {len(df)} clips for {df['machine'].nunique()} machine type(s) under {args.out}")
    return 0


def cmd_data_first_shot(args: argparse.Namespace) -> int:
    from data.firstshot import FirstShotError, write_first_shot_tree
    from data.manifest import ManifestError

    try:
        table = write_first_shot_tree(args.data, args.out, args.train_source, args.train_target)
    except (FirstShotError, ManifestError) as err:
        raise UsageError(str(err)) from None
    counts = table.groupby(["machine", "split"]).size().unstack(fill_value=0)
    for machine, row in counts.iterrows():
        print(f"{machine}: {row.get('train', 0)} training clips ({args.train_source} source + {args.train_target} "
              f"target normals per section), {row.get('test', 0)} test clips")
    print(f"wrote the first-shot split under {args.out} (symbolic links; the split is in {args.out}/first_shot_split.csv)")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from data.download import run_download

    return run_download(args)


def register(sub) -> None:
    data = sub.add_parser("data", help="datasets: synthesize, download, extract features, summarize",
                          description="Dataset commands.")
    dsub = data.add_subparsers(dest="data_command", metavar="<data command>", required=True)

    p = dsub.add_parser("summary", help="count clips by machine × domain × split × label",
                        description="Read a DCASE folder and print clip counts by machine × split × label × domain.")
    p.add_argument("--data", type=Path, required=True, help="DCASE data root (any DCASE layout)")
    p.add_argument("--csv", type=Path, default=None, help="also write the long-form counts table as CSV")
    p.set_defaults(func=cmd_data_summary, outputs={"csv": "file"})

    p = dsub.add_parser("features", help="extract and cache log-mel features (prints clips/s)",
                        description="Compute the log-mel features of every clip once and cache them on disk.")
    p.add_argument("--data", type=Path, required=True, help="DCASE data root")
    p.add_argument("--machines", nargs="+", default=None, help="only these machine types")
    p.add_argument("--batch-size", type=positive_int, default=32, help="clips per extraction batch, >= 1 (default 32)")
    add_feature_flags(p)
    add_run_flags(p, only=("cache_dir", "on_bad_file", "quiet"))
    p.set_defaults(func=cmd_data_features, outputs={"cache_dir": "folder"})

    from data.synth.config import SynthConfig

    p = dsub.add_parser("synth", help="write a synthetic DCASE-2025-layout dataset of machine sounds",
                        description="Synthesize physically motivated machine sounds in the DCASE 2025 dev layout.")
    p.add_argument("--out", type=Path, required=True, help="output root (machine folders are created under it)")
    add_config_flags(p, SynthConfig, title="what to synthesize")
    p.add_argument("--workers", type=positive_int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_synth, outputs={"out": "folder"})

    p = dsub.add_parser("first-shot", help="carve a fixed first-shot training split out of a labelled test set",
                        description="Turn a labelled DCASE test set without training clips (e.g. DCASE 2023 valve) "
                                    "into a data root: per machine, section and domain, a fixed choice of normal "
                                    "test clips (by file-name hash, patterns taken in turn) becomes the training "
                                    "split, the rest stays the test split. Writes symbolic links, never copies.")
    p.add_argument("--data", type=Path, required=True, help="DCASE root with labelled test clips (<machine>/test/*.wav)")
    p.add_argument("--out", type=Path, required=True, help="the new data root (must not exist, or hold this split)")
    p.add_argument("--train-source", type=nonnegative_int, default=30,
                   help="source-domain normals per section taken for training (default 30)")
    p.add_argument("--train-target", type=nonnegative_int, default=5,
                   help="target-domain normals per section taken for training (default 5)")
    p.set_defaults(func=cmd_data_first_shot, outputs={"out": "replaced folder"})

    p = dsub.add_parser("download", help="download the official DCASE 2025 Task 2 archives from Zenodo",
                        description="Fetch, verify (size + md5) and unpack the DCASE 2025 Task 2 archives, resuming "
                                    "partial downloads: dev (Zenodo 15097779), additional (15392814), eval (15519362).")
    from data.download import add_download_arguments  # stdlib-only module: cheap to import

    add_download_arguments(p)
    p.set_defaults(func=cmd_data_download, outputs={"out": "folder"})

"""``ablate`` (paper Table 1) and ``compare-searchers`` (BOHB vs random search at equal budget)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import nonnegative_int, positive_int

# the names of experiments.searchers.SEARCHER_VARIANTS, kept here so --help does not import the experiments
SEARCHER_NAMES = ["BOHB", "Random + HyperBand", "Random + ASHA", "Random (no early stopping)"]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def _eta(text: str) -> int:
    v = positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {v}")
    return v


def add_ablate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ablate", help="Table 1 ablation (unshuffle, backbone, pre-training, fine-tuning recipe)",
        description="Reproduce the paper's Table 1 on one data set: every row with the same data, seeds and "
                    "budget; writes ablation.csv, ablation.md and ablation.png.")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--machines", nargs="+", default=["fan"], help="machine types fine-tuned and evaluated (default fan)")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of seeds 0..N-1 (default 3)")
    p.add_argument("--r1-seeds", type=positive_int, default=None,
                   help="run the slow r = 1 pre-training for the first N seeds only (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny model and budgets (tests/CI)")
    p.add_argument("--pretrain-epochs", type=positive_int, default=None, help="default 5 (quick: 1)")
    p.add_argument("--finetune-epochs", type=positive_int, default=None, help="default 20 (quick: 2)")
    p.add_argument("--dim", type=positive_int, default=None, help="encoder width (default 192; quick: 32)")
    p.add_argument("--depth", type=positive_int, default=None, help="encoder blocks (default 24; quick: 2)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="pre-training and fine-tuning batch (default 32)")
    p.add_argument("--lr", type=_positive_float, default=None, help="fine-tuning learning rate, > 0 (default 1e-3)")
    p.add_argument("--seconds", type=_positive_float, default=10.0, help="clip length, > 0 (default 10)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache root")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda …")
    p.add_argument("--out", type=Path, default=Path("results/ablation"), help="default results/ablation")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_ablate, outputs={"out": "folder", "cache_dir": "folder"})
    return p


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..experiments.ablation import ablation_markdown, run_ablation
    from .common import check_cache_root

    check_cache_root(args.cache_dir)

    seeds = tuple(range(args.seeds))
    r1 = None if args.r1_seeds is None else tuple(range(min(args.r1_seeds, args.seeds)))
    table = run_ablation(args.data, args.out, machines=args.machines, seeds=seeds, quick=args.quick,
                         pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs, dim=args.dim,
                         depth=args.depth, cache_dir=args.cache_dir, device=args.device, seconds=args.seconds,
                         pretrain_batch_size=args.batch_size, finetune_batch_size=args.batch_size,
                         finetune_lr=args.lr, r1_seeds=r1, quiet=args.quiet)
    print(ablation_markdown(table))
    print(f"wrote {args.out / 'ablation.csv'}, {args.out / 'ablation.md'}, {args.out / 'ablation.png'}")
    return 0


def add_compare_searchers_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare-searchers", help="BOHB vs random search (HyperBand, ASHA, no early stopping) at equal budget",
        description="Run each searcher with the same trainable, space, data and total epoch budget over several "
                    "seeds; writes curves.csv, summary.csv, summary.md and searchers.png.")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--machine", required=True, help="machine type searched")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="encoder.pt (default: pre-train a small encoder once under --out)")
    p.add_argument("--budget-epochs", type=positive_int, required=True,
                   help="total epochs per search, summed over its trials")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1 per searcher (default 3)")
    p.add_argument("--max-epochs", type=positive_int, default=9, help="max epochs of one trial (default 9)")
    p.add_argument("--eta", type=_eta, default=3, help="reduction factor η, >= 2 (default 3)")
    p.add_argument("--searchers", nargs="+", default=None, choices=SEARCHER_NAMES,
                   help="subset of the searchers (default all four)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="fine-tuning batch (default 32)")
    p.add_argument("--space", type=Path, default=None, help="search-space YAML (default machine_default.yaml)")
    p.add_argument("--cpus-per-trial", type=_positive_float, default=1.0, help="CPUs per trial, > 0 (default 1)")
    p.add_argument("--max-concurrent", type=nonnegative_int, default=0,
                   help="concurrent trials (default 0: as CPUs allow)")
    p.add_argument("--seconds", type=_positive_float, default=10.0,
                   help="clip length for the automatic pre-training, > 0 (default 10)")
    p.add_argument("--dim", type=positive_int, default=64, help="encoder width of the automatic pre-training")
    p.add_argument("--depth", type=positive_int, default=4, help="encoder depth of the automatic pre-training")
    p.add_argument("--pretrain-epochs", type=positive_int, default=2, help="automatic pre-training epochs")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite under --out)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache root")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("results/compare_searchers"), help="default results/compare_searchers")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_compare_searchers, outputs={"out": "folder", "cache_dir": "folder"})
    return p


def cmd_compare_searchers(args: argparse.Namespace) -> int:
    from ..experiments.searchers import run_compare_searchers, searchers_markdown
    from .common import check_cache_root

    check_cache_root(args.cache_dir)

    res = run_compare_searchers(args.data, args.machine, args.pretrained, args.out, args.budget_epochs,
                                seeds=tuple(range(args.seeds)), max_epochs=args.max_epochs, eta=args.eta,
                                cache_dir=args.cache_dir, batch_size=args.batch_size, device=args.device,
                                space=args.space, cpus_per_trial=args.cpus_per_trial,
                                max_concurrent=args.max_concurrent, tracking_uri=args.tracking_uri,
                                searchers=args.searchers, seconds=args.seconds, dim=args.dim, depth=args.depth,
                                pretrain_epochs=args.pretrain_epochs, quiet=args.quiet)
    print(searchers_markdown(res["summary"], res["reference"], res["reference_searcher"]))
    print("wrote " + ", ".join(str(p) for p in res["paths"].values()))
    return 0


def register(sub) -> None:
    add_ablate_parser(sub)
    add_compare_searchers_parser(sub)

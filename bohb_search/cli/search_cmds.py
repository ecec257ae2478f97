"""``search``, ``final-train`` and ``quickstart``: many models, searched, retrained and reported."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..train.configs import FinetuneConfig
from ..tune.settings import SearchSettings
from .common import (
    add_encoder_flags,
    add_feature_flags,
    check_cache_root,
    check_output_location,
    encoder_config,
    feature_config,
    positive_int,
)
from .flags import UsageError, add_config_file_flag, add_config_flags, build_config, given, read_config_file

# SearchSettings fields that are not plain flags: chosen by --machine/--all-machines/--generalized,
# --data, --name, --space, --pretrained, or set by experiments only
_SEARCH_SPECIAL = ("name", "data", "machines", "pretrained", "space", "finetune", "searcher", "scheduler",
                   "epoch_budget")
SEARCH_FLAGS = tuple(f.name for f in fields(SearchSettings) if f.name not in _SEARCH_SPECIAL)
TRIAL_FLAGS = ("batch_size", "seed", "min_steps_per_epoch")  # FinetuneConfig fields every trial of a search shares


def ensure_pretrained(args: argparse.Namespace, finetune: FinetuneConfig, device: str, cache_dir) -> Path:
    """--pretrained, or an encoder pre-trained once per data roots + model settings and reused."""
    if args.pretrained is not None:
        if not args.pretrained.is_file():
            raise UsageError(f"--pretrained {args.pretrained}: no such file")
        return args.pretrained
    from data.config import RunOptions

    from ..train.configs import PretrainConfig
    from ..train.runs import run_pretrain
    from ..tune.runner import pretrained_cache_key

    enc = encoder_config(args)
    feature_cfg = feature_config(args)
    key = pretrained_cache_key([str(d) for d in args.data], {"encoder": enc.to_dict(), "features": feature_cfg.to_dict(),
                                                              "epochs": args.pretrain_epochs})
    out = Path(args.pretrain_dir) / f"auto-{key}"
    if len(list(out.glob("epoch_*.pt"))) >= args.pretrain_epochs and (out / "encoder.pt").exists():
        print(f"reusing pre-trained encoder {out / 'encoder.pt'}")
        return out / "encoder.pt"
    print(f"no --pretrained given: pre-training once into {out} (reused by later searches on the same data)")
    return run_pretrain(PretrainConfig(epochs=args.pretrain_epochs, batch_size=finetune.batch_size), args.data, out,
                        enc, feature_cfg, RunOptions(cache_dir=cache_dir, device=device))


def cmd_search(args: argparse.Namespace) -> int:
    from data.config import DEV_MACHINES

    from ..tune.runner import default_space, run_search

    chosen = sum(bool(x) for x in (args.machine, args.all_machines, args.generalized))
    if chosen != 1:
        raise UsageError("choose one of --machine NAME [NAME ...], --all-machines or --generalized")
    groups: list[list[str] | None]
    if args.generalized:
        groups = [None]
    else:
        groups = [[m] for m in (DEV_MACHINES if args.all_machines else args.machine)]
    common = given(args, SEARCH_FLAGS)
    from ..tune.settings import DEFAULT_SEARCHES_DIR

    # where the search writes, checked before Ray, MLflow or any pre-training starts (a typed --storage-path
    # and --cache-dir were checked with every command's output flags)
    if "storage_path" not in common:
        check_output_location(DEFAULT_SEARCHES_DIR, "--storage-path (default)")
    if "cache_dir" not in common:
        check_cache_root(None)
    if args.pretrained is None and not args.resume:
        check_output_location(args.pretrain_dir, "--pretrain-dir")
    explicit = set(common) | {"data", "machines"} | ({"pretrained"} if args.pretrained else set()) \
        | ({"space"} if args.space else set()) | ({"finetune"} if given(args, TRIAL_FLAGS) else set())
    if "gpus_per_trial" not in common:
        import torch

        common["gpus_per_trial"] = 1.0 if torch.cuda.is_available() else 0.0
    if common.get("cache_dir") is not None:
        common["cache_dir"] = str(common["cache_dir"])
    finetune = build_config(FinetuneConfig, {}, given(args, TRIAL_FLAGS), "search")

    def settings_of(machines, pretrained: str) -> SearchSettings:
        label = "generalized" if machines is None else machines[0]
        name = args.name if (args.name and len(groups) == 1) else (f"{args.name}-{label}" if args.name else label)
        return build_config(SearchSettings, {}, {
            **common, "name": name, "data": [str(d) for d in args.data], "machines": machines,
            "pretrained": pretrained, "space": str(args.space or default_space(machines is None)),
            "finetune": {k: getattr(finetune, k) for k in TRIAL_FLAGS}}, "search", flags=given(args, SEARCH_FLAGS))

    for machines in groups:  # every search's settings are checked before the encoder is pre-trained
        settings_of(machines, "")
    if args.resume and args.pretrained is None:
        pretrained = ""  # the saved search's encoder
    else:
        pretrained = ensure_pretrained(args, finetune, common.get("device", "auto"), common.get("cache_dir"))
    names: list[str] = []
    for machines in groups:
        settings = settings_of(machines, str(pretrained))
        name = settings.name
        if not args.resume:
            print(f"search {name}: {'all machines (generalized)' if machines is None else machines[0]}, "
                  f"{settings.num_samples} trials, max {settings.max_epochs} epochs, η={settings.eta}")
        best = run_search(settings, resume=args.resume, address=args.address, verbose=0 if args.quiet else 1,
                          explicit=explicit, estimate=not args.no_estimate)
        print(f"search {name}: {best['metric']['name']} {best['metric']['value']:.4f} "
              f"(trial {best['trial_id']}, {best['budget_epochs']} epochs); "
              f"wrote {Path(best['out_dir']) / 'best_config.json'}")
        names.append(name)
    uri = best.get("tracking_uri", "")
    print_mlflow_links(uri, [f"bohb-search/{n}" for n in names], "compare the trials")
    return 0


def print_mlflow_links(uri: str, experiments: list[str], what: str) -> None:
    """The ``mlflow ui`` command of a local store and, per experiment, the link to its runs table."""
    from ..tune.tracking import experiment_runs_link, mlflow_ui_command

    if not uri:
        return
    links = [link for e in experiments if (link := experiment_runs_link(uri, e))]
    if uri.startswith("sqlite:"):
        print(f"{what} in MLflow: {mlflow_ui_command(uri)}" + (", then open:" if links else ""))
    for link in links:
        print(f"  {link}")


def cmd_final_train(args: argparse.Namespace) -> int:
    from ..evaluate.tables import table2, table3, to_markdown
    from ..final import FinalTrainConfig, check_best_configs, find_best_configs, print_final_estimate, run_final_train
    from .common import run_options

    file = read_config_file(args.config, ("final", "finetune", "run"))
    if file["finetune"]:  # named by the file and its finetune.<key>, not by a flag nobody typed
        build_config(FinetuneConfig, file["finetune"], {}, "finetune", args.config)
    cfg = build_config(FinalTrainConfig, {**file["final"], **({"finetune": file["finetune"]} if file["finetune"] else {})},
                       given(args, FinalTrainConfig.__dataclass_fields__), "final-train", args.config, "final")
    paths = find_best_configs(args.best, args.searches_dir)
    opts = run_options(args, file["run"], args.config)
    check_best_configs(paths, cfg)  # every file, before the first model trains
    if not args.no_estimate:
        print_final_estimate(paths, cfg, opts)
    reports = run_final_train(paths, args.out, cfg, opts)
    if reports:
        print(to_markdown(table2(reports)))
        print()
        print(to_markdown(table3(reports)))
        print()
    for system, r in reports.items():
        print(f"{system}: official score {r.official_score:.4f} · TOTAL (hmean) {r.total_hmean:.4f}")
    if reports:
        print(f"wrote tables, submission files and final checkpoints under {args.out}")
    else:
        print(f"wrote final checkpoints, scores and submission files under {args.out}; no tables or metrics: no "
              f"labelled test clips with both normal and anomalous labels to report on (see each model's "
              f"evaluate folder under {args.out / 'evaluate'})")
    from ..tune.tracking import resolve_tracking_uri

    print_mlflow_links(resolve_tracking_uri(cfg.tracking_uri), ["bohb-search/final"], "the final models")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from ..quickstart import QuickstartConfig, run_quickstart

    q = build_config(QuickstartConfig, {}, given(args, QuickstartConfig.__dataclass_fields__), "quickstart")
    check_output_location(Path(q.out), "--out")
    run_quickstart(q)
    return 0


def register(sub) -> None:
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
    p.add_argument("--name", default=None, help="search name (default: the machine, or 'generalized')")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search of the same name")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default $RAY_ADDRESS or a local Ray")
    p.add_argument("--quiet", action="store_true", help="no Ray Tune progress table")
    p.add_argument("--no-estimate", action="store_true",
                   help="skip the ETA printed before the search (it times a few batches of the default configuration)")
    add_config_flags(p, SearchSettings, exclude=_SEARCH_SPECIAL, title="search",
                     defaults={"gpus_per_trial": "1 with CUDA, else 0"})
    add_config_flags(p, FinetuneConfig, only=TRIAL_FLAGS, title="every trial")
    g = p.add_argument_group("automatic pre-training (without --pretrained)")
    g.add_argument("--pretrain-dir", type=Path, default=Path("results/pretrain"), help="where it writes (default results/pretrain)")
    g.add_argument("--pretrain-epochs", type=positive_int, default=5, help="epochs, >= 1 (default 5)")
    add_encoder_flags(p)
    add_feature_flags(p)
    p.set_defaults(func=cmd_search, outputs={"storage_path": "folder", "cache_dir": "folder"})

    from ..final import FinalTrainConfig

    p = sub.add_parser("final-train", help="retrain the best configs at full budget; results tables and submissions",
                       description="Retrain each search's best configuration (early stopping, at most --max-epochs), "
                                   "evaluate on the test split, write Table 2/3-style results, submission files and "
                                   "final checkpoints, and log one MLflow run per model.")
    p.add_argument("--best", type=Path, nargs="+", default=None, help="best_config.json files")
    p.add_argument("--searches-dir", type=Path, default=None, help="take every <dir>/*/best_config.json")
    p.add_argument("--out", type=Path, default=Path("results/final"), help="output folder (default results/final)")
    add_config_file_flag(p)
    add_config_flags(p, FinalTrainConfig, title="final retrain")
    from .common import add_run_flags

    add_run_flags(p, only=("cache_dir", "device", "quiet"))
    p.add_argument("--no-estimate", action="store_true",
                   help="skip the ETA printed first (it times a few batches of every model to train)")
    p.set_defaults(func=cmd_final_train, outputs={"out": "folder", "cache_dir": "folder"})

    from ..quickstart import QuickstartConfig

    p = sub.add_parser("quickstart", help="the main job on a small synthetic data set (CPU, minutes)",
                       description="Synthesize a small DCASE-layout data set, extract features, pre-train a small "
                                   "encoder, run a BOHB search for one machine and a small generalized one (MLflow-"
                                   "tracked), retrain the best configs with the AE baseline, print the results tables.")
    add_config_flags(p, QuickstartConfig, exclude=("timings", "machines"),
                     rename={"search_machine": "machine", "machine_trials": "trials",
                             "machine_max_epochs": "max_epochs"})
    p.set_defaults(func=cmd_quickstart)

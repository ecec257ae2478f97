"""Paper experiments: the Table 1 ablation and the searcher comparison (BOHB vs random search).

* :func:`run_ablation` reproduces Table 1 of the paper on one data set with one budget and the
  same seeds for every row: pixel-unshuffle r = 4 vs r = 1 (pre-training wall time per epoch,
  validation accuracy and mAP), Audio-Mamba vs AST (inference latency per 10 s clip, measured side
  by side, and AUCs after pre-training + fine-tuning), with vs without pre-training, and the four
  fine-tuning recipes (pOE + GRL, pOE only, OC-SVDD + GRL, OC-SVDD only).  Every number comes from the
  pipeline's own runners (``run_pretrain``, ``run_finetune``, ``run_evaluate``) and the official
  metrics (``evaluate_scores``); variants are configurations, never a second training loop.
* :func:`run_compare_searchers` runs the same trainable, search space, data and total epoch budget
  with four searchers (BOHB; random + HyperBand; random + ASHA; random without early stopping),
  several seeds each, and compares their best-validation-AUC-vs-budget curves.

``add_ablate_parser`` / ``add_compare_searchers_parser`` add the ``ablate`` and
``compare-searchers`` commands to the CLI.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from data.atomic import atomic_write_csv, atomic_write_text

# (component, configuration) in the paper's order; the keys name the runs each row reads
TABLE1_ROWS: tuple[tuple[str, str, str], ...] = (
    ("Pixel unshuffle", "r = 4 (proposed)", "pre:ssm_r4"),
    ("Pixel unshuffle", "r = 1 (no unshuffle)", "pre:ssm_r1"),
    ("Backbone", "Audio-Mamba (SSM)", "ft:full"),
    ("Backbone", "AST baseline", "ft:ast"),
    ("Pre-training", "with (proposed)", "ft:full"),
    ("Pre-training", "without (from scratch)", "ft:scratch"),
    ("Fine-tuning", "pOE + GRL (full)", "ft:full"),
    ("Fine-tuning", "pOE only", "ft:poe_only"),
    ("Fine-tuning", "OC-SVDD + GRL", "ft:ocsvdd_grl"),
    ("Fine-tuning", "OC-SVDD only", "ft:ocsvdd_only"),
)
ABLATION_METRICS = ("time_or_latency", "auc_source", "auc_target", "pauc", "val_accuracy", "val_map")

# fine-tuning runs: (pre-training run it starts from or None = from scratch, FinetuneConfig overrides)
FINETUNE_RUNS: dict[str, tuple[str | None, dict]] = {
    "full": ("ssm_r4", {}),
    "ast": ("ast_r4", {}),
    "scratch": (None, {}),
    "poe_only": ("ssm_r4", {"lambda_adv": 0.0}),
    "ocsvdd_grl": ("ssm_r4", {"poe_ratio": 0.0}),
    "ocsvdd_only": ("ssm_r4", {"lambda_adv": 0.0, "poe_ratio": 0.0}),
}

# searcher comparison: display name -> (searcher, scheduler, folder slug)
SEARCHER_VARIANTS: dict[str, tuple[str, str, str]] = {
    "BOHB": ("bohb", "hyperband_bohb", "bohb"),
    "Random + HyperBand": ("random", "hyperband", "random_hyperband"),
    "Random + ASHA": ("random", "asha", "random_asha"),
    "Random (no early stopping)": ("random", "fifo", "random_fifo"),
}
REFERENCE_SEARCHER = "Random (no early stopping)"

CLIP_SECONDS = 10.0  # latency is reported per 10 s clip (1024 frames), as in the paper


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _check_settings(path: Path, settings: dict, what: str, free: Sequence[str] = ("seeds", "r1_seeds")) -> None:
    """Reuse finished runs only when ``out_dir`` was made with the same settings.

    The ``free`` keys (the seed lists) may change: every seed has its own run folders, so a later call
    can add seeds to a table or report fewer of them.
    """
    new = json.loads(json.dumps(settings, sort_keys=True, default=str))
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(new) if k not in free and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"{path.parent}: holds {what} made with other settings ({', '.join(diff)}); "
                             "use another --out or remove that folder")
    atomic_write_text(path, json.dumps(new, indent=2, sort_keys=True) + "\n")


def _seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: duplicates in {seeds}")
    return seeds


def _machines_present(data_roots: Sequence[str | Path], machines: Sequence[str]) -> list[str]:
    from .datasets import read_manifests

    for root in data_roots:
        if not Path(root).exists():
            raise ValueError(f"--data: {root} does not exist")
    manifest = read_manifests(data_roots)
    found = sorted(manifest["machine"].unique())
    missing = [m for m in machines if m not in found]
    if missing:
        raise ValueError(f"--machines: no clips for {', '.join(missing)} under {', '.join(map(str, data_roots))} "
                         f"(found: {', '.join(found)})")
    has_test = manifest[(manifest["split"] == "test") & manifest["machine"].isin(machines)
                        & manifest["label"].isin(["normal", "anomaly"])]
    if has_test.empty:
        raise ValueError(f"no labelled test clips for {', '.join(machines)}: the ablation needs them for AUCs")
    return list(machines)


def _encoder(kind: str, unshuffle: int, dim: int, depth: int, scan_backend: str = "auto"):
    from models import encoder_preset

    if dim >= 128:
        heads = max(1, dim // 64)
    else:
        heads = max(1, dim // 16)
    while dim % heads:
        heads -= 1
    return encoder_preset("tiny", kind=kind, unshuffle=unshuffle, dim=dim, depth=depth, n_heads=heads,
                          scan_backend=scan_backend)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def measure_latency(encoder_cfgs: dict[str, Any], device: str = "auto", repeats: int = 20, warmup: int = 3,
                    seconds: float = CLIP_SECONDS) -> dict[str, float]:
    """Median forward latency (ms) of each encoder on one log-mel clip of ``seconds`` (batch 1).

    The encoders are timed side by side (interleaved, same input, same threads) so that machine
    load affects them alike. Weights do not change the cost, so each is built fresh at the clip's
    frame count; inference uses ``torch.no_grad`` in eval mode.
    """
    import torch

    from models import EncoderConfig, build_encoder

    from .training import resolve_device

    dev = resolve_device(device)
    models, x = {}, None
    for name, cfg in encoder_cfgs.items():
        step = cfg.unshuffle * cfg.patch
        n_frames = int(round(seconds * 1024 / 10.0)) // step * step
        cfg = EncoderConfig.from_dict({**cfg.to_dict(), "n_frames": n_frames})
        models[name] = build_encoder(cfg).to(dev).eval()
        x = torch.randn(1, cfg.n_mels, n_frames, device=dev)
    times: dict[str, list[float]] = {name: [] for name in models}

    def once(model) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return (time.perf_counter() - t0) * 1000.0

    with torch.no_grad():
        for _ in range(warmup):
            for model in models.values():
                once(model)
        for _ in range(repeats):
            for name, model in models.items():
                times[name].append(once(model))
    return {name: float(np.median(t)) for name, t in times.items()}


# =================================================================================================
# Table 1


def run_ablation(
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    machines: Sequence[str] = ("fan",),
    seeds: Sequence[int] = (0, 1, 2),
    quick: bool = False,
    pretrain_epochs: int | None = None,
    finetune_epochs: int | None = None,
    dim: int | None = None,
    depth: int | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    seconds: float = 10.0,
    pretrain_batch_size: int | None = None,
    finetune_batch_size: int | None = None,
    finetune_lr: float | None = None,
    finetune_overrides: dict | None = None,
    r1_seeds: Sequence[int] | None = None,
    latency_repeats: int | None = None,
    quiet: bool = True,
) -> pd.DataFrame:
    """Table 1 of the paper on one data set, every row with the same seeds and budget.

    Per seed: three pre-trainings (SSM r = 4, SSM r = 1, AST r = 4, each ``pretrain_epochs`` on every
    normal training clip of ``data_roots``) and six fine-tunings per machine (``finetune_epochs`` each,
    same FinetuneConfig apart from the ablated setting), each evaluated on the machine's test split;
    AUC (source/target) and pAUC are the harmonic means over ``machines`` (official definitions).
    ``r1_seeds`` restricts the slow r = 1 pre-training to some of the seeds (default: all); the
    ``n_seeds`` column says how many seeds each row has. Writes ``ablation.csv``, ``ablation.md``,
    ``ablation.png``, ``runs.csv`` (one row per run) and ``ablation_settings.json`` into ``out_dir``;
    finished runs under ``out_dir/runs`` are reused when the settings match.
    """
    from data.audio import AudioConfig
    from data.features import FeatureConfig

    from .configs import FinetuneConfig, PretrainConfig
    from .metrics import evaluate_scores
    from .pipeline import run_evaluate, run_finetune, run_pretrain

    seeds = _seeds(seeds)
    r1_seeds = seeds if r1_seeds is None else _seeds(r1_seeds)
    if not set(r1_seeds) <= set(seeds):
        raise ValueError(f"r1_seeds {r1_seeds} must be a subset of seeds {seeds}")
    machines = list(dict.fromkeys(machines))
    if not machines:
        raise ValueError("--machines: give at least one machine type")
    data_roots = [str(Path(d)) for d in data_roots]
    _machines_present(data_roots, machines)
    pretrain_epochs = pretrain_epochs or (1 if quick else 5)
    finetune_epochs = finetune_epochs or (2 if quick else 20)
    dim = dim or (32 if quick else 192)
    depth = depth or (2 if quick else 24)
    pretrain_batch_size = pretrain_batch_size or (16 if quick else 32)
    finetune_batch_size = finetune_batch_size or (16 if quick else 32)
    finetune_lr = finetune_lr or 1e-3
    latency_repeats = latency_repeats or (3 if quick else 20)
    for name, v in (("pretrain_epochs", pretrain_epochs), ("finetune_epochs", finetune_epochs), ("dim", dim),
                    ("depth", depth)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    feature_cfg = FeatureConfig(audio=AudioConfig(seconds=seconds))
    encoders = {"ssm_r4": _encoder("ssm", 4, dim, depth), "ssm_r1": _encoder("ssm", 1, dim, depth),
                "ast_r4": _encoder("ast", 4, dim, depth)}
    unfreeze_k = min(FinetuneConfig().unfreeze_k, depth)
    ft_base = {"lr": finetune_lr, "batch_size": finetune_batch_size, "max_epochs": finetune_epochs,
               "unfreeze_k": unfreeze_k, **(finetune_overrides or {})}
    FinetuneConfig(**ft_base)  # bad overrides fail before any training

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"data": [str(Path(d).resolve()) for d in data_roots], "machines": machines, "seeds": list(seeds),
                "r1_seeds": list(r1_seeds), "pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs,
                "dim": dim, "depth": depth, "seconds": seconds, "pretrain_batch_size": pretrain_batch_size,
                "finetune": ft_base, "quick": quick}
    _check_settings(out / "ablation_settings.json", settings, "an ablation")
    t_start = time.perf_counter()

    runs: list[dict] = []
    latencies: dict[str, list[float]] = {"ssm": [], "ast": []}
    for seed in seeds:
        sdir = out / "runs" / f"seed{seed}"
        pretrained: dict[str, Path] = {}
        # pre-training: r = 4 and r = 1 one after the other on the same data, seed and budget
        for key, enc in encoders.items():
            if key == "ssm_r1" and seed not in r1_seeds:
                continue
            _say(f"seed {seed}: pre-training {key} ({pretrain_epochs} epochs)", quiet)
            cfg = PretrainConfig(epochs=pretrain_epochs, batch_size=pretrain_batch_size, seed=seed)
            path = run_pretrain(data_roots, sdir / f"pretrain_{key}", enc, cfg, feature_cfg, cache_dir, device,
                                quiet=True)
            pretrained[key] = path
            hist = pd.read_csv(path.parent / "history.csv")
            last = hist.iloc[-1]
            runs.append({"run": f"pre:{key}", "seed": seed, "machine": "all",
                         "time_or_latency": float(hist["seconds"].mean()),
                         "val_accuracy": float(last.get("val_accuracy", math.nan)),
                         "val_map": float(last.get("val_map", math.nan)), "epochs_run": int(last["epoch"])})
        lat = measure_latency({"ssm": encoders["ssm_r4"], "ast": encoders["ast_r4"]}, device, latency_repeats)
        for k, v in lat.items():
            latencies[k].append(v)
        # fine-tuning + evaluation: the six recipes of Table 1 per machine
        for key, (start, overrides) in FINETUNE_RUNS.items():
            cfg = FinetuneConfig(**{**ft_base, **overrides, "seed": seed})
            frames, reports = [], []
            for machine in machines:
                run_dir = sdir / f"finetune_{key}" / machine
                eval_dir = run_dir / "evaluate"
                if not (run_dir / "model.pt").exists() or not (eval_dir / "scores.csv").exists():
                    _say(f"seed {seed}: fine-tuning {key} ({cfg.variant}) on {machine}", quiet)
                    pre = pretrained[start] if start else None
                    enc = None if start else encoders["ssm_r4"]
                    model = run_finetune(data_roots, run_dir, cfg, [machine], pre, enc, "ssm", cache_dir, device,
                                         quiet=True, feature_cfg=None if start else feature_cfg)
                    run_evaluate(model, data_roots, eval_dir, system=key, cache_dir=cache_dir, quiet=True)
                scores = pd.read_csv(eval_dir / "scores.csv", dtype={"section": str})
                frames.append(scores)
                reports.append(json.loads((run_dir / "finetune_report.json").read_text()))
            report = evaluate_scores(pd.concat(frames, ignore_index=True))
            summary = report.summary["hmean"]
            runs.append({"run": f"ft:{key}", "seed": seed, "machine": "+".join(machines),
                         "variant": cfg.variant, "auc_source": float(summary["AUC (source)"]),
                         "auc_target": float(summary["AUC (target)"]), "pauc": float(summary["pAUC"]),
                         "official_score": float(report.official_score),
                         "best_val_auc": float(np.mean([r["best_val_auc"] for r in reports])),
                         "epochs_run": float(np.mean([r["epochs_run"] for r in reports]))})
        for name in ("ssm", "ast"):
            runs.append({"run": f"latency:{name}", "seed": seed, "machine": "-",
                         "time_or_latency": latencies[name][-1]})
    runs_df = pd.DataFrame(runs)
    atomic_write_csv(runs_df, out / "runs.csv")

    rows = []
    for component, configuration, source in TABLE1_ROWS:
        sel = runs_df[runs_df["run"] == source]
        row: dict[str, Any] = {"component": component, "configuration": configuration}
        values: dict[str, list[float]] = {m: [] for m in ABLATION_METRICS}
        if source.startswith("pre:"):
            values["time_or_latency"] = sel["time_or_latency"].tolist()
            values["val_accuracy"] = sel["val_accuracy"].tolist()
            values["val_map"] = sel["val_map"].tolist()
            row["time_unit"] = "s / pre-training epoch"
        else:
            for m in ("auc_source", "auc_target", "pauc"):
                values[m] = sel[m].tolist()
            row["time_unit"] = ""
            if component == "Backbone":
                name = "ssm" if source == "ft:full" else "ast"
                values["time_or_latency"] = runs_df.loc[runs_df["run"] == f"latency:{name}", "time_or_latency"].tolist()
                row["time_unit"] = f"ms / {CLIP_SECONDS:g} s clip"
        for m in ABLATION_METRICS:
            row[m], row[f"{m}_std"] = _mean_std(values[m])
        row["n_seeds"] = int(sel["seed"].nunique())
        rows.append(row)
    cols = ["component", "configuration", "time_or_latency", "time_or_latency_std", "time_unit"]
    for m in ABLATION_METRICS[1:]:
        cols += [m, f"{m}_std"]
    table = pd.DataFrame(rows)[cols + ["n_seeds"]]
    atomic_write_csv(table, out / "ablation.csv")
    atomic_write_text(out / "ablation.md", ablation_markdown(table) + "\n" + _ablation_note(settings, t_start))
    from .plots import plot_ablation  # written by the plotting module's owner

    plot_ablation(table, out / "ablation.png")
    _say(f"ablation done in {time.perf_counter() - t_start:.0f} s: {out}", quiet)
    return table


def _pm(mean: float, std: float, decimals: int) -> str:
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(std) or std == 0:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def ablation_markdown(table: pd.DataFrame) -> str:
    """The table in the paper's layout (mean ± std over seeds) as Markdown."""
    from .reporting import to_markdown

    view = pd.DataFrame({
        "Component": table["component"],
        "Configuration": table["configuration"],
        "Time/Latency": [(_pm(m, s, 1 if "ms" in u else 2) + (f" {u}" if u else "")) if np.isfinite(m) else "–"
                         for m, s, u in zip(table["time_or_latency"], table["time_or_latency_std"], table["time_unit"])],
        "AUC (src)": [_pm(m, s, 3) for m, s in zip(table["auc_source"], table["auc_source_std"])],
        "AUC (tgt)": [_pm(m, s, 3) for m, s in zip(table["auc_target"], table["auc_target_std"])],
        "pAUC": [_pm(m, s, 3) for m, s in zip(table["pauc"], table["pauc_std"])],
        "val acc (pre)": [_pm(m, s, 3) for m, s in zip(table["val_accuracy"], table["val_accuracy_std"])],
        "val mAP (pre)": [_pm(m, s, 4) for m, s in zip(table["val_map"], table["val_map_std"])],
        "seeds": table["n_seeds"],
    }).set_index(["Component", "Configuration"])
    return to_markdown(view)


def _ablation_note(settings: dict, t_start: float) -> str:
    return (f"\nMachines: {', '.join(settings['machines'])} (AUCs: harmonic mean over machines); seeds "
            f"{settings['seeds']} (r = 1: {settings['r1_seeds']}); encoder dim {settings['dim']}, depth "
            f"{settings['depth']}; pre-training {settings['pretrain_epochs']} epochs, fine-tuning "
            f"{settings['finetune_epochs']} epochs; clips {settings['seconds']:g} s; latency per "
            f"{CLIP_SECONDS:g} s clip, batch 1, median; wall time {time.perf_counter() - t_start:.0f} s.\n")


# =================================================================================================
# searcher comparison


def _result_order_callback():
    from ray.tune import Callback

    class ResultOrder(Callback):
        """Arrival order of every trial result at the driver (one row per reported epoch)."""

        def __init__(self):
            self.rows: list[dict] = []
            self.t0 = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.rows.append({"seq": len(self.rows), "trial_id": str(trial.trial_id),
                              "epoch": result.get("epoch"), "wall_s": time.time() - self.t0})

    return ResultOrder()


def budget_curve(trials: pd.DataFrame, order: pd.DataFrame | None = None) -> pd.DataFrame:
    """Best validation AUC so far against the epochs spent so far, summed over all trials.

    ``trials``: a search's trials.csv (one row per trial and epoch). Results are put in the order the
    driver received them (``order``: trial_id, epoch, seq from the result callback) or, without it,
    by ``timestamp`` / ``time_total_s``. Each row adds the epochs its trial trained since its previous
    row. Returns budget, best, val_auc, trial_id, epoch.
    """
    t = trials.copy()
    if "status" in t:
        t = t[t["status"] != "FAILED"]
    t = t.dropna(subset=["epoch"])
    if t.empty:
        return pd.DataFrame(columns=["budget", "best", "val_auc", "trial_id", "epoch"])
    t["trial_id"] = t["trial_id"].astype(str)
    t["epoch"] = t["epoch"].astype(int)
    fallback = "timestamp" if "timestamp" in t else ("time_total_s" if "time_total_s" in t else "epoch")
    if order is not None and not order.empty:
        o = order[["trial_id", "epoch", "seq"]].copy()
        o["trial_id"] = o["trial_id"].astype(str)
        o["epoch"] = o["epoch"].astype(int)
        t = t.merge(o.drop_duplicates(["trial_id", "epoch"]), on=["trial_id", "epoch"], how="left")
        t["_ordered"] = t["seq"].notna()  # results from before a resume (no seq) come first
        t = t.sort_values(["_ordered", "seq", fallback], kind="stable")
    else:
        t = t.sort_values([fallback, "epoch"], kind="stable")
    prev = t.groupby("trial_id")["epoch"].shift(1).fillna(0)
    # a trial's rows are in epoch order within the arrival order; epochs_per_iteration may exceed 1
    t = t.assign(step=(t["epoch"] - prev).clip(lower=0))
    metric = t["best_val_auc"] if "best_val_auc" in t else t["val_auc"]
    curve = pd.DataFrame({"budget": t["step"].cumsum().astype(int).to_numpy(),
                          "best": metric.cummax().to_numpy(),
                          "val_auc": t["val_auc"].to_numpy() if "val_auc" in t else np.nan,
                          "trial_id": t["trial_id"].to_numpy(), "epoch": t["epoch"].to_numpy()})
    return curve


def budget_to_reach(curve: pd.DataFrame, target: float) -> float:
    """The first budget at which ``curve`` reaches ``target`` (NaN if never)."""
    hit = curve[curve["best"] >= target - 1e-12]
    return float(hit["budget"].iloc[0]) if len(hit) else math.nan


def summarize_searchers(curves: pd.DataFrame, reference: str = REFERENCE_SEARCHER) -> tuple[pd.DataFrame, float]:
    """Per searcher: final best (mean ± std over seeds), budget used, and the budget needed to reach
    the mean final best of ``reference`` (plain random search)."""
    finals = curves.groupby(["searcher", "seed"]).agg(final=("best", "last"), used=("budget", "max"))
    target = float(finals.loc[reference, "final"].mean()) if reference in finals.index.get_level_values(0) else math.nan
    rows = []
    for searcher in dict.fromkeys(curves["searcher"]):
        f = finals.loc[searcher]
        need = [budget_to_reach(g, target) for _, g in curves[curves["searcher"] == searcher].groupby("seed")]
        reached = [b for b in need if np.isfinite(b)]
        mean, std = _mean_std(f["final"].tolist())
        rows.append({"searcher": searcher, "seeds": len(f), "final_best_mean": mean, "final_best_std": std,
                     "budget_used_mean": float(f["used"].mean()),
                     "budget_to_random_best_mean": float(np.mean(reached)) if reached else math.nan,
                     "reached_random_best": f"{len(reached)}/{len(need)}"})
    return pd.DataFrame(rows), target


def reference_searcher(names: Sequence[str]) -> str:
    """The searcher whose final best the others must reach: plain random search when it ran, else the
    first random searcher of the comparison (e.g. random + HyperBand when comparing samplers only)."""
    names = list(names)
    if REFERENCE_SEARCHER in names:
        return REFERENCE_SEARCHER
    return next((n for n in names if SEARCHER_VARIANTS.get(n, ("",))[0] == "random"), names[0])


def searchers_markdown(summary: pd.DataFrame, reference_value: float, reference: str = REFERENCE_SEARCHER) -> str:
    from .reporting import to_markdown

    view = pd.DataFrame({
        "Searcher": summary["searcher"],
        "seeds": summary["seeds"],
        "final best val AUC": [_pm(m, s, 3) for m, s in zip(summary["final_best_mean"], summary["final_best_std"])],
        "epochs used": [f"{b:.1f}" for b in summary["budget_used_mean"]],
        f"epochs to reach {reference}'s final best ({reference_value:.3f})": [
            f"{b:.1f} ({r})" if np.isfinite(b) else f"not reached ({r})"
            for b, r in zip(summary["budget_to_random_best_mean"], summary["reached_random_best"])],
    })
    if "model_based_picks" in summary and summary["model_based_picks"].astype(str).str.len().gt(0).any():
        # BOHB only: how many of its configurations came from the density model rather than at random
        view["model-based picks"] = summary["model_based_picks"].fillna("").astype(str).replace("", "–").to_numpy()
    return to_markdown(view)


def run_compare_searchers(
    data_roots: Sequence[str | Path],
    machine: str,
    pretrained: str | Path | None,
    out_dir: str | Path,
    budget_epochs: int,
    seeds: Sequence[int] = (0, 1, 2),
    max_epochs: int = 9,
    eta: int = 3,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    device: str = "auto",
    space: str | Path | None = None,
    cpus_per_trial: float = 1.0,
    max_concurrent: int = 0,
    tracking_uri: str | None = None,
    searchers: Sequence[str] | None = None,
    base_config: dict | None = None,
    seconds: float = 10.0,
    dim: int = 64,
    depth: int = 4,
    pretrain_epochs: int = 2,
    quiet: bool = True,
) -> dict:
    """BOHB vs random + HyperBand vs random + ASHA vs random without early stopping.

    Every run has the same trainable, search space, data, ``max_epochs``/``eta`` and total budget
    (``epoch_budget = budget_epochs`` epochs summed over its trials); only the searcher, the scheduler
    and the seed change. Without ``pretrained`` an encoder (``dim``, ``depth``) is pre-trained once on
    ``data_roots`` for ``pretrain_epochs`` and shared by all runs. Writes ``curves.csv``,
    ``summary.csv``, ``summary.md`` and ``searchers.png`` into ``out_dir`` (the searches themselves under
    ``out_dir/searches``, MLflow in ``out_dir/mlflow.db`` unless ``tracking_uri``). Returns a dict with
    ``summary`` and ``curves`` (DataFrames), ``reference`` (random search's mean final best), the
    ``best_configs`` per run and the written ``paths``.
    """
    from .configs import FinetuneConfig, PretrainConfig
    from .search import SearchSettings, default_space, run_search

    seeds = _seeds(seeds)
    if budget_epochs < 1:
        raise ValueError(f"--budget-epochs must be >= 1, got {budget_epochs}")
    if budget_epochs < max_epochs:
        raise ValueError(f"--budget-epochs ({budget_epochs}) must be at least --max-epochs ({max_epochs}) so that "
                         "random search without early stopping can finish one trial")
    names = list(searchers) if searchers else list(SEARCHER_VARIANTS)
    unknown = [n for n in names if n not in SEARCHER_VARIANTS]
    if unknown:
        raise ValueError(f"unknown searcher(s) {', '.join(unknown)}; choose from {', '.join(SEARCHER_VARIANTS)}")
    data_roots = [str(Path(d)) for d in data_roots]
    _machines_present(data_roots, [machine])
    if base_config:
        FinetuneConfig(**base_config)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if pretrained is None:
        from data.audio import AudioConfig
        from data.features import FeatureConfig

        from .pipeline import run_pretrain

        _say(f"pre-training a shared encoder (dim {dim}, depth {depth}, {pretrain_epochs} epochs)", quiet)
        pretrained = run_pretrain(data_roots, out / "pretrain", _encoder("ssm", 4, dim, depth),
                                  PretrainConfig(epochs=pretrain_epochs, batch_size=batch_size),
                                  FeatureConfig(audio=AudioConfig(seconds=seconds)), cache_dir, device, quiet=True)
    pretrained = Path(pretrained)
    if not pretrained.exists():
        raise ValueError(f"--pretrained: {pretrained} does not exist")
    space = str(space or default_space(False))
    settings_common = {"data": [str(Path(d).resolve()) for d in data_roots], "machine": machine,
                       "pretrained": str(pretrained.resolve()), "budget_epochs": budget_epochs, "seeds": list(seeds),
                       "max_epochs": max_epochs, "eta": eta, "batch_size": batch_size, "space": space,
                       "base_config": base_config or {}, "searchers": names}
    _check_settings(out / "compare_settings.json", settings_common, "a searcher comparison")
    tracking_uri = tracking_uri or f"sqlite:///{out / 'mlflow.db'}"

    curves, best_configs = [], {}
    model_picks: dict[str, list[int]] = {}  # BOHB: [configurations from its density model, all configurations]
    for name in names:
        searcher, scheduler, slug = SEARCHER_VARIANTS[name]
        for seed in seeds:
            run_name = f"{slug}-s{seed}"
            run_dir = out / "searches" / run_name
            if not (run_dir / "best_config.json").exists():
                _say(f"search {name}, seed {seed}: budget {budget_epochs} epochs", quiet)
                settings = SearchSettings(
                    name=run_name, data=data_roots, machines=[machine], pretrained=str(pretrained), space=space,
                    num_samples=budget_epochs, max_epochs=max_epochs, eta=eta, cpus_per_trial=cpus_per_trial,
                    max_concurrent=max_concurrent, seed=seed, storage_path=str(out / "searches"),
                    tracking_uri=tracking_uri, cache_dir=None if cache_dir is None else str(cache_dir),
                    batch_size=batch_size, device=device, base_config=dict(base_config or {}),
                    searcher=searcher, scheduler=scheduler, epoch_budget=budget_epochs)
                order_cb = _result_order_callback()
                resume = (run_dir / "search_settings.json").exists()
                t0 = time.perf_counter()
                run_search(settings, resume=resume, verbose=0, extra_callbacks=[order_cb])
                order = pd.DataFrame(order_cb.rows, columns=["seq", "trial_id", "epoch", "wall_s"])
                if resume and (run_dir / "result_order.csv").exists():
                    old = pd.read_csv(run_dir / "result_order.csv")
                    order["seq"] += len(old)
                    order = pd.concat([old, order], ignore_index=True)
                atomic_write_csv(order, run_dir / "result_order.csv")
                _say(f"search {name}, seed {seed}: {time.perf_counter() - t0:.0f} s", quiet)
            trials = pd.read_csv(run_dir / "trials.csv")
            if "model_based_pick" in trials:
                per_trial = trials.drop_duplicates("trial_id")["model_based_pick"].dropna()
                model_picks.setdefault(name, [0, 0])
                model_picks[name][0] += int(per_trial.sum())
                model_picks[name][1] += int(len(per_trial))
            order_path = run_dir / "result_order.csv"
            order = pd.read_csv(order_path) if order_path.exists() else None
            curve = budget_curve(trials, order)
            curve.insert(0, "seed", seed)
            curve.insert(0, "searcher", name)
            curves.append(curve)
            best_configs[run_name] = json.loads((run_dir / "best_config.json").read_text())
    curves_df = pd.concat(curves, ignore_index=True)
    reference_name = reference_searcher(names)
    summary, reference = summarize_searchers(curves_df, reference_name)
    summary["model_based_picks"] = [f"{model_picks[n][0]}/{model_picks[n][1]}" if n in model_picks else ""
                                    for n in summary["searcher"]]
    paths = {"curves": out / "curves.csv", "summary": out / "summary.csv", "markdown": out / "summary.md",
             "plot": out / "searchers.png"}
    atomic_write_csv(curves_df, paths["curves"])
    atomic_write_csv(summary, paths["summary"])
    note = (f"\nMachine {machine}; budget {budget_epochs} epochs per run (summed over trials), max_epochs "
            f"{max_epochs}, η = {eta}; seeds {list(seeds)}; reference = mean final best of "
            f"{reference_name} = {reference:.4f}.\n")
    atomic_write_text(paths["markdown"], searchers_markdown(summary, reference, reference_name) + note)
    from .plots import plot_budget_curves  # written by the plotting module's owner

    plot_budget_curves({n: g[["budget", "best", "seed"]].reset_index(drop=True)
                        for n, g in curves_df.groupby("searcher", sort=False)}, paths["plot"],
                       reference=reference if np.isfinite(reference) else None)
    return {"summary": summary, "curves": curves_df, "reference": reference, "reference_searcher": reference_name,
            "best_configs": best_configs,
            "paths": paths}


# =================================================================================================
# CLI glue (the lead registers these in cli.py)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_ablate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ablate", help="Table 1 ablation (unshuffle, backbone, pre-training, fine-tuning recipe)",
        description="Reproduce the paper's Table 1 on one data set: every row with the same data, seeds and "
                    "budget; writes ablation.csv, ablation.md and ablation.png.")
    p.add_argument("--data", type=Path, action="append", required=True, help="data root (repeat for several)")
    p.add_argument("--machines", nargs="+", default=["fan"], help="machine types fine-tuned and evaluated (default fan)")
    p.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds 0..N-1 (default 3)")
    p.add_argument("--r1-seeds", type=_positive_int, default=None,
                   help="run the slow r = 1 pre-training for the first N seeds only (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny model and budgets (tests/CI)")
    p.add_argument("--pretrain-epochs", type=_positive_int, default=None, help="default 5 (quick: 1)")
    p.add_argument("--finetune-epochs", type=_positive_int, default=None, help="default 20 (quick: 2)")
    p.add_argument("--dim", type=_positive_int, default=None, help="encoder width (default 192; quick: 32)")
    p.add_argument("--depth", type=_positive_int, default=None, help="encoder blocks (default 24; quick: 2)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="pre-training and fine-tuning batch (default 32)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default 1e-3)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache root")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda …")
    p.add_argument("--out", type=Path, default=Path("results/ablation"), help="default results/ablation")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_ablate)
    return p


def cmd_ablate(args: argparse.Namespace) -> int:
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
    p.add_argument("--budget-epochs", type=_positive_int, required=True,
                   help="total epochs per search, summed over its trials")
    p.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 per searcher (default 3)")
    p.add_argument("--max-epochs", type=_positive_int, default=9, help="max epochs of one trial (default 9)")
    p.add_argument("--eta", type=int, default=3, help="reduction factor η (default 3)")
    p.add_argument("--searchers", nargs="+", default=None, choices=list(SEARCHER_VARIANTS),
                   help="subset of the searchers (default all four)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="fine-tuning batch (default 32)")
    p.add_argument("--space", type=Path, default=None, help="search-space YAML (default machine_default.yaml)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--max-concurrent", type=int, default=0, help="concurrent trials (default: as CPUs allow)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length for the automatic pre-training")
    p.add_argument("--dim", type=_positive_int, default=64, help="encoder width of the automatic pre-training")
    p.add_argument("--depth", type=_positive_int, default=4, help="encoder depth of the automatic pre-training")
    p.add_argument("--pretrain-epochs", type=_positive_int, default=2, help="automatic pre-training epochs")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite under --out)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache root")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("results/compare_searchers"), help="default results/compare_searchers")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_compare_searchers)
    return p


def cmd_compare_searchers(args: argparse.Namespace) -> int:
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

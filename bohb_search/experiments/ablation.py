"""Paper Table 1 on one data set, every row with the same data, seeds and budget.

Pixel-unshuffle r = 4 vs r = 1 (pre-training wall time per epoch, validation accuracy and mAP),
Audio-Mamba vs AST (inference latency per 10 s clip, measured side by side, and AUCs after
pre-training + fine-tuning), with vs without pre-training, and the four fine-tuning recipes (pOE +
GRL, pOE only, OC-SVDD + GRL, OC-SVDD only). Every number comes from the project's own runners and
the official metrics; variants are configurations, never a second training loop.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from data.atomic import atomic_write_csv, atomic_write_text

from .common import check_seeds, check_settings, machines_present, mean_std, plus_minus, say, small_encoder

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

CLIP_SECONDS = 10.0  # latency is reported per 10 s clip (1024 frames), as in the paper


def measure_latency(encoder_cfgs: dict[str, Any], device: str = "auto", repeats: int = 20, warmup: int = 3,
                    seconds: float = CLIP_SECONDS) -> dict[str, float]:
    """Median forward latency (ms) of each encoder on one log-mel clip of ``seconds`` (batch 1).

    The encoders are timed side by side (interleaved, same input, same threads) so that machine
    load affects them alike. Weights do not change the cost, so each is built fresh at the clip's
    frame count; inference uses ``torch.no_grad`` in eval mode.
    """
    import torch

    from models import EncoderConfig, build_encoder

    from ..train.base import resolve_device

    dev = resolve_device(device)
    models, x = {}, None
    for name, cfg in encoder_cfgs.items():
        step = cfg.frame_step
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

    from ..evaluate.metrics import evaluate_scores
    from data.config import RunOptions

    from ..evaluate.run import run_evaluate
    from ..train.runs import run_finetune, run_pretrain
    from ..train.configs import FinetuneConfig, PretrainConfig

    seeds = check_seeds(seeds)
    r1_seeds = seeds if r1_seeds is None else check_seeds(r1_seeds)
    if not set(r1_seeds) <= set(seeds):
        raise ValueError(f"r1_seeds {r1_seeds} must be a subset of seeds {seeds}")
    machines = list(dict.fromkeys(machines))
    if not machines:
        raise ValueError("--machines: give at least one machine type")
    data_roots = [str(Path(d)) for d in data_roots]
    machines_present(data_roots, machines)
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
    encoders = {"ssm_r4": small_encoder("ssm", 4, dim, depth), "ssm_r1": small_encoder("ssm", 1, dim, depth),
                "ast_r4": small_encoder("ast", 4, dim, depth)}
    unfreeze_k = min(FinetuneConfig().unfreeze_k, depth)
    # Table 1 compares stage-2 variants, so their models are scored with the paper's cosine score, which
    # depends on stage 2 (the default patch-statistics score does not)
    ft_base = {"score": "cosine", "lr": finetune_lr, "batch_size": finetune_batch_size, "max_epochs": finetune_epochs,
               "unfreeze_k": unfreeze_k, **({"min_steps_per_epoch": 0} if quick else {}), **(finetune_overrides or {})}
    FinetuneConfig(**ft_base)  # bad overrides fail before any training

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"data": [str(Path(d).resolve()) for d in data_roots], "machines": machines, "seeds": list(seeds),
                "r1_seeds": list(r1_seeds), "pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs,
                "dim": dim, "depth": depth, "seconds": seconds, "pretrain_batch_size": pretrain_batch_size,
                "finetune": ft_base, "quick": quick}
    check_settings(out / "ablation_settings.json", settings, "an ablation")
    t_start = time.perf_counter()
    opts = RunOptions(cache_dir=cache_dir, device=device, quiet=True)

    runs: list[dict] = []
    latencies: dict[str, list[float]] = {"ssm": [], "ast": []}
    for seed in seeds:
        sdir = out / "runs" / f"seed{seed}"
        pretrained: dict[str, Path] = {}
        # pre-training: r = 4 and r = 1 one after the other on the same data, seed and budget
        for key, enc in encoders.items():
            if key == "ssm_r1" and seed not in r1_seeds:
                continue
            say(f"seed {seed}: pre-training {key} ({pretrain_epochs} epochs)", quiet)
            cfg = PretrainConfig(epochs=pretrain_epochs, batch_size=pretrain_batch_size, seed=seed)
            path = run_pretrain(cfg, data_roots, sdir / f"pretrain_{key}", enc, feature_cfg, opts)
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
                    say(f"seed {seed}: fine-tuning {key} ({cfg.variant}) on {machine}", quiet)
                    pre = pretrained[start] if start else None
                    enc = None if start else encoders["ssm_r4"]
                    model = run_finetune(cfg, data_roots, run_dir, [machine], pretrained=pre, encoder_cfg=enc,
                                         feature_cfg=None if start else feature_cfg, opts=opts)
                    run_evaluate(model, data_roots, eval_dir, system=key, opts=opts)
                scores = pd.read_csv(eval_dir / "scores.csv", dtype={"section": str})
                frames.append(scores)
                reports.append(json.loads((run_dir / "finetune_report.json").read_text()))
            report = evaluate_scores(pd.concat(frames, ignore_index=True))
            summary = report.summary["hmean"]
            runs.append({"run": f"ft:{key}", "seed": seed, "machine": "+".join(machines),
                         "variant": cfg.variant, "auc_source": float(summary["AUC (source)"]),
                         "auc_target": float(summary["AUC (target)"]), "pauc": float(summary["pAUC"]),
                         "official_score": float(report.official_score),
                         "best_val_score": float(np.mean([np.nan if r["best_val_score"] is None else r["best_val_score"]
                                                      for r in reports])),  # null: a fixed-budget run
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
            row[m], row[f"{m}_std"] = mean_std(values[m])
        row["n_seeds"] = int(sel["seed"].nunique())
        rows.append(row)
    cols = ["component", "configuration", "time_or_latency", "time_or_latency_std", "time_unit"]
    for m in ABLATION_METRICS[1:]:
        cols += [m, f"{m}_std"]
    table = pd.DataFrame(rows)[cols + ["n_seeds"]]
    atomic_write_csv(table, out / "ablation.csv")
    atomic_write_text(out / "ablation.md", ablation_markdown(table) + "\n" + _ablation_note(settings, t_start))
    from ..evaluate.search_plots import plot_ablation

    plot_ablation(table, out / "ablation.png")
    say(f"ablation done in {time.perf_counter() - t_start:.0f} s: {out}", quiet)
    return table


def ablation_markdown(table: pd.DataFrame) -> str:
    """The table in the paper's layout (mean ± std over seeds) as Markdown."""
    from ..evaluate.tables import to_markdown

    view = pd.DataFrame({
        "Component": table["component"],
        "Configuration": table["configuration"],
        "Time/Latency": [(plus_minus(m, s, 1 if "ms" in u else 2) + (f" {u}" if u else "")) if np.isfinite(m) else "–"
                         for m, s, u in zip(table["time_or_latency"], table["time_or_latency_std"], table["time_unit"])],
        "AUC (src)": [plus_minus(m, s, 3) for m, s in zip(table["auc_source"], table["auc_source_std"])],
        "AUC (tgt)": [plus_minus(m, s, 3) for m, s in zip(table["auc_target"], table["auc_target_std"])],
        "pAUC": [plus_minus(m, s, 3) for m, s in zip(table["pauc"], table["pauc_std"])],
        "val acc (pre)": [plus_minus(m, s, 3) for m, s in zip(table["val_accuracy"], table["val_accuracy_std"])],
        "val mAP (pre)": [plus_minus(m, s, 4) for m, s in zip(table["val_map"], table["val_map_std"])],
        "seeds": table["n_seeds"],
    }).set_index(["Component", "Configuration"])
    return to_markdown(view)


def _ablation_note(settings: dict, t_start: float) -> str:
    return (f"\nMachines: {', '.join(settings['machines'])} (AUCs: harmonic mean over machines); seeds "
            f"{settings['seeds']} (r = 1: {settings['r1_seeds']}); encoder dim {settings['dim']}, depth "
            f"{settings['depth']}; pre-training {settings['pretrain_epochs']} epochs, fine-tuning "
            f"{settings['finetune_epochs']} epochs; clips {settings['seconds']:g} s; latency per "
            f"{CLIP_SECONDS:g} s clip, batch 1, median; wall time {time.perf_counter() - t_start:.0f} s.\n")

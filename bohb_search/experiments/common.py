"""What both experiments share: settings checks for reusable output folders, seeds, machine checks,
the small encoder they train, and mean ± std formatting."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from data.atomic import atomic_write_text


def say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def check_settings(path: Path, settings: dict, what: str, free: Sequence[str] = ("seeds", "r1_seeds")) -> None:
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


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: duplicates in {seeds}")
    return seeds


def machines_present(data_roots: Sequence[str | Path], machines: Sequence[str]) -> list[str]:
    from data.datasets import read_manifests

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


def small_encoder(kind: str, unshuffle: int, dim: int, depth: int, scan_backend: str = "auto"):
    from models import encoder_preset

    return encoder_preset("tiny", kind=kind, unshuffle=unshuffle, dim=dim, depth=depth, scan_backend=scan_backend)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def plus_minus(mean: float, std: float, decimals: int) -> str:
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(std) or std == 0:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"

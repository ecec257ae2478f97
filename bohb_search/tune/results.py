"""What a finished search is: one row per trial and epoch (``trials.csv``), and the best configuration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from data.atomic import to_python

from .searchers import BOHB_PICKS_FILE
from .settings import METRIC, SearchError, SearchSettings
from .spaces import SearchSpace


def trials_table(result_grid, settings: SearchSettings) -> pd.DataFrame:
    """One row per trial and budget (epoch) from Ray's ResultGrid, with config, status and error."""
    frames = []
    for res in result_grid:
        trial_id = res.metrics.get("trial_id") if res.metrics else None
        if trial_id is None and res.path:
            trial_id = Path(res.path).name
        config = {f"config/{k}": v for k, v in (res.config or {}).items()}
        df = res.metrics_dataframe
        if df is None or df.empty:
            df = pd.DataFrame([{"trial_id": trial_id}])
        df = df.copy()
        df["trial_id"] = trial_id
        last_epoch = int(df["epoch"].max()) if "epoch" in df and df["epoch"].notna().any() else 0
        if res.error is not None:
            status = "FAILED"
        elif last_epoch == 0:
            status = "NOT_STARTED"  # created, then the search ended (epoch budget) before its first result
        elif bool(df.get("early_stopped", pd.Series([False])).fillna(False).astype(bool).any()) or \
                last_epoch >= settings.max_epochs:
            status = "FINISHED"
        else:
            status = "KILLED"  # stopped by the Hyperband scheduler before max_epochs
        df["status"] = status
        df["error"] = "" if res.error is None else " ".join(str(res.error).split())[-500:]
        for k, v in config.items():
            df[k] = v if not isinstance(v, (list, dict)) else json.dumps(v)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    picks_path = settings.out_dir / BOHB_PICKS_FILE
    if picks_path.exists() and "trial_id" in table:
        picks = pd.read_csv(picks_path, dtype={"trial_id": str})
        table = table.merge(picks.drop_duplicates("trial_id", keep="last"), on="trial_id", how="left")
    keep_first = ["trial_id", "status", "epoch", "val_score", METRIC, "val_auc", "error"]
    cols = [c for c in keep_first if c in table] + sorted(c for c in table if c not in keep_first)
    drop = {"config", "hostname", "node_ip", "pid", "date", "checkpoint_dir_name", "should_checkpoint"}
    return table[[c for c in cols if c not in drop]]


def best_config(table: pd.DataFrame, space: SearchSpace, settings: SearchSettings) -> dict:
    ok = table[table["status"] != "FAILED"].dropna(subset=[METRIC]) if METRIC in table else table.iloc[0:0]
    if ok.empty:
        raise SearchError(f"search {settings.name}: every trial failed; see trials.csv")
    # best metric; ties → the larger budget (more evidence)
    row = ok.sort_values([METRIC, "epoch"], ascending=[False, False]).iloc[0]
    hp = {c[len("config/"):]: to_python(row[c]) for c in ok.columns if c.startswith("config/") and pd.notna(row[c])}
    cfg = space.to_finetune_config(hp, settings.base_finetune_config())
    hp = {k: getattr(cfg, k) for k in hp}  # typed as FinetuneConfig declares them (pandas made ints floats)
    return {
        "search": settings.name,
        "hyperparameters": hp,
        "finetune_config": cfg.to_dict(),
        "metric": {"name": METRIC, "value": float(row[METRIC]), "val_score_at_budget": float(row.get("val_score", math.nan))},
        "budget_epochs": int(row["epoch"]),
        "trial_id": str(row["trial_id"]),
        "space_file": str(space.path),
        "space_sha256": space.sha256,
        "data": settings.data,
        "machines": settings.machines,
        "generalized": settings.generalized,
        "pretrained": settings.pretrained,
        "seed": settings.seed,
        "max_epochs": settings.max_epochs,
        "eta": settings.eta,
    }

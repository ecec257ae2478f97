"""The no-training statistics yardstick (``baseline --kind stats``): per-band statistics over time of the
log-mel (:mod:`models.statistics`), per-domain k-NN banks of the training clips, nothing learned.

It is "fitted" the way a model is trained, so it sits beside every system as a ``model.pt``: the training
clips' statistics are stored and every score is fitted on them when the model is loaded
(:class:`~bohb_search.scoring.model.AnomalyModel`). With ``pooling="auto"`` the pooling is chosen per
machine, as TWFR-GMM chooses its r per machine type, among :data:`AUTO_CANDIDATES` by the official score on
the validation half of the labelled test split — never on the report half the tables use. Without labelled
test clips it falls back to ``meanstd_max`` and says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data.datasets import make_finetune_data

from ..evaluate.metrics import evaluate_scores
from ..scoring.config import StatsBaselineConfig
from ..scoring.statistics import fit_stats_scorer, stats_embeddings

AUTO_CANDIDATES = ("meanstd", "meanstd_max", "max", "twfr")
UNLABELLED_POOLING = "meanstd_max"  # measured: best single pooling on the synthetic benchmark, second on valve (to max)


def _validation_score(scorer, data, machine: str, pooling: str, twfr_r: float) -> float:
    s = scorer.score(stats_embeddings(data.val_x, pooling, twfr_r), machine).numpy()
    report = evaluate_scores(pd.DataFrame({
        "machine": data.val_machine, "section": data.val_section, "label": data.val_y,
        "domain": np.where(data.val_domain == 0, "source", "target"), "score": s}))
    return float(report.official_score)


def fit_stats_baseline(table, machines: list[str], cfg: StatsBaselineConfig) -> dict:
    """Per machine: the pooling (chosen on the validation half where ``auto``) and its training statistics.

    Returns ``{"machines": {name: {"pooling", "twfr_r", "train_embeddings", "train_domains", "selection",
    "validation_scores"}}, "notes": [...]}``, the part of the checkpoint :class:`AnomalyModel` reads.
    """
    per_machine, notes = {}, []
    for machine in machines:
        data = make_finetune_data(table, [machine], validation="auto")
        domains = data.base_domain.tolist()
        labelled = data.val_y is not None and data.val_domain is not None
        candidates = AUTO_CANDIDATES if cfg.pooling == "auto" else (cfg.pooling,)
        if cfg.pooling == "auto" and not labelled:
            candidates = (UNLABELLED_POOLING,)
            notes.append(f"{machine}: no labelled validation clips ({data.val_source}), so pooling "
                         f"{UNLABELLED_POOLING} without a choice")
        scores, embeddings = {}, {}
        for pooling in candidates:
            embeddings[pooling] = z = stats_embeddings(data.train_base, pooling, cfg.twfr_r)
            scores[pooling] = (_validation_score(fit_stats_scorer(z, domains, machine, cfg), data, machine, pooling,
                                                 cfg.twfr_r) if labelled and len(candidates) > 1 else float("nan"))
        best = max(candidates, key=lambda p: -1.0 if np.isnan(scores[p]) else scores[p])  # ties: the earlier
        per_machine[machine] = {
            "pooling": best, "twfr_r": float(cfg.twfr_r),
            "train_embeddings": embeddings[best],
            "train_domains": [int(d) for d in domains],
            "selection": (f"chosen on {data.val_source}" if len(candidates) > 1 else
                          "as given" if cfg.pooling != "auto" else "default (no labelled validation clips)"),
            "validation_scores": {k: (None if np.isnan(v) else v) for k, v in scores.items()},
        }
    return {"machines": per_machine, "notes": notes}

"""bench/domain_diagnostics.py: within-domain vs domain-separation AUCs on hand-made score tables."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.domain_diagnostics import collect, score_diagnostics, summarize, to_markdown


def _table(scores: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [{"domain": d, "label": lab, "score": s} for (d, lab), v in scores.items() for s in v]
    return pd.DataFrame(rows)


def test_a_score_that_only_sees_the_domain():
    t = _table({("source", "normal"): [0, 0], ("source", "anomaly"): [0, 0],
                ("target", "normal"): [1, 1], ("target", "anomaly"): [1, 1]})
    d = score_diagnostics(t)
    assert d["auc_src_within"] == d["auc_tgt_within"] == 0.5
    assert d["domain_auc"] == 1.0 and d["domain_gap"] == 0.5
    # official AUCs move in opposite directions: source normals below every target anomaly
    assert d["auc_source"] == 0.75 and d["auc_target"] == 0.25


def test_a_perfect_detector_does_not_see_the_domain():
    t = _table({("source", "normal"): [0.1, 0.2], ("source", "anomaly"): [0.8, 0.9],
                ("target", "normal"): [0.2, 0.1], ("target", "anomaly"): [0.9, 0.8]})
    d = score_diagnostics(t)
    assert d["auc_src_within"] == d["auc_tgt_within"] == d["auc_source"] == d["auc_target"] == 1.0
    assert d["domain_auc"] == 0.5 and d["domain_gap"] == 0.0


def test_collect_reads_an_ablate_folder(tmp_path):
    perfect = _table({("source", "normal"): [0.0], ("source", "anomaly"): [1.0],
                      ("target", "normal"): [0.0], ("target", "anomaly"): [1.0]})
    for seed in (0, 1):
        for recipe in ("full", "poe_only"):
            p = tmp_path / "runs" / f"seed{seed}" / f"finetune_{recipe}" / "fan" / "evaluate" / "scores.csv"
            p.parent.mkdir(parents=True)
            perfect.to_csv(p, index=False)
    runs = collect(tmp_path)
    assert len(runs) == 4 and set(runs["recipe"]) == {"full", "poe_only"}
    s = summarize(runs).set_index("recipe")
    assert (s["n_runs"] == 2).all() and (s["auc_source_mean"] == 1.0).all()
    assert "| full | 2 |" in to_markdown(summarize(runs))
    with pytest.raises(ValueError, match="not an ablate output"):
        collect(tmp_path / "runs")

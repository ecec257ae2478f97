"""Domain-balanced training sets (paper 3.1)."""

from __future__ import annotations

import pandas as pd
import pytest

from data.balance import balance_domains, balanced_training_set


def _manifest(machines=("fan", "valve"), n_src=990, n_tgt=10):
    rows = []
    for m in machines:
        for d, n in (("source", n_src), ("target", n_tgt)):
            rows += [{"path": f"{m}/{d}/{i}.wav", "machine": m, "section": 0, "domain": d,
                      "split": "train", "label": "normal"} for i in range(n)]
        rows += [{"path": f"{m}/test/{i}.wav", "machine": m, "section": 0, "domain": "source",
                  "split": "test", "label": "anomaly"} for i in range(5)]
    return pd.DataFrame(rows)


def test_one_machine_balanced_like_the_paper():
    df = _manifest(("fan",))
    out = balanced_training_set(df, ["fan"], seed=0)
    counts = out["domain"].value_counts()
    assert counts["source"] == 990 and counts["target"] == 990
    assert out[out.domain == "source"]["path"].is_unique  # every source clip exactly once
    per_target = out[out.domain == "target"]["path"].value_counts()
    assert len(per_target) == 10 and per_target.min() == per_target.max() == 99  # all targets used evenly
    assert set(out["split"]) == {"train"} and set(out["label"]) == {"normal"}  # never test clips
    assert (df.loc[out["source_row"], "path"].to_numpy() == out["path"].to_numpy()).all()


def test_pooled_generalized_set_and_determinism():
    df = _manifest(("fan", "valve"), n_src=30, n_tgt=4)
    a = balanced_training_set(df, None, seed=1)
    b = balanced_training_set(df, None, seed=1)
    c = balanced_training_set(df, None, seed=2)
    assert a.equals(b) and not a["path"].equals(c["path"])
    assert a.groupby(["machine", "domain"]).size().to_dict() == {
        ("fan", "source"): 30, ("fan", "target"): 30, ("valve", "source"): 30, ("valve", "target"): 30}


def test_errors_name_the_parameter():
    df = _manifest(("fan",), n_src=4, n_tgt=1)
    with pytest.raises(ValueError, match="machines: no normal training clips for pump"):
        balanced_training_set(df, ["pump"])
    with pytest.raises(ValueError, match="target_ratio"):
        balance_domains(df, target_ratio=0)

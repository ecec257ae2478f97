"""Checkpoints written by earlier versions still load and score the same clips the same way
(tests/fixtures/legacy_checkpoints/README.md says which version wrote them and how)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import FIXTURES

LEGACY = FIXTURES / "legacy_checkpoints"


@pytest.mark.parametrize("name", ["knn_model", "ae_model"])
def test_legacy_model_scores_the_same(name):
    from bohb_search.scoring.model import AnomalyModel

    model = AnomalyModel.load(LEGACY / f"{name}.pt")
    expected = pd.read_csv(LEGACY / f"{name}_scores.csv")
    clips = [LEGACY / "clips" / f for f in expected["file"]]
    results, skipped = model.score_files(clips)
    assert not skipped
    got = np.array([r.score for r in results])
    np.testing.assert_allclose(got, expected["score"].to_numpy(), rtol=1e-4, atol=1e-7)


def test_legacy_pretrained_encoder_loads_for_finetuning():
    from bohb_search.train.setup import load_pretrained
    from models import build_encoder, load_weights

    enc_cfg, state, feature_cfg = load_pretrained(LEGACY / "encoder.pt")
    assert (enc_cfg.dim, enc_cfg.depth, feature_cfg.audio.seconds) == (32, 2, 2.0)
    load_weights(build_encoder(enc_cfg), state, "legacy encoder")


def test_a_best_config_from_before_the_patch_statistics_score_keeps_the_head_embedding(tmp_path):
    # Searches before the patch-statistics score existed wrote no `embedding`: they selected with the
    # head's embedding, and final-train must retrain that, not today's default (patch statistics)
    import json

    from bohb_search.final import load_best
    from bohb_search.train.configs import FinetuneConfig

    cfg = FinetuneConfig(score="knn", standardise=False).to_dict()
    old = {k: v for k, v in cfg.items() if k != "embedding"}
    path = tmp_path / "best_config.json"
    path.write_text(json.dumps({"finetune_config": old, "data": ["d"], "pretrained": "p.pt"}))
    assert FinetuneConfig.from_dict(load_best(path)["finetune_config"]).embedding == "head"
    path.write_text(json.dumps({"finetune_config": cfg, "data": ["d"], "pretrained": "p.pt"}))
    assert FinetuneConfig.from_dict(load_best(path)["finetune_config"]).embedding == "patch_stats"

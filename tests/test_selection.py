"""Training amount and honest model selection: steps per epoch, the AE's pass over every vector, the
validation/report split of the labelled test clips, held-out normals with a floor, GRL only with two domains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bohb_search.train.autoencoder import AETrainer
from bohb_search.train.configs import AEBaselineConfig, FinetuneConfig
from bohb_search.train.finetune import FinetuneTrainer
from data.datasets import DataError, FeatureTable, make_finetune_data, split_test_clips
from tests.test_training import FEATURES, N_FRAMES, _clips, tiny_encoder


def table(n_source=8, n_target=2, test_per_cell=0, machines=("fan",), seed=0) -> FeatureTable:
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for m in machines:
        for domain, n in (("source", n_source), ("target", n_target)):
            for i in range(n):
                rows.append(dict(machine=m, section="00", domain=domain, label="normal", split="train",
                                 file=f"section_00_{domain}_train_normal_{i:04d}.wav"))
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                for i in range(test_per_cell):
                    rows.append(dict(machine=m, section="00", domain=domain, label=label, split="test",
                                     file=f"section_00_{domain}_test_{label}_{i:04d}.wav"))
    df = pd.DataFrame(rows)
    df["path"] = df["machine"] + "/" + df["file"]
    feats = _clips(rng, len(df))
    return FeatureTable(df, feats, FEATURES)


CFG = FinetuneConfig(batch_size=8, accum_steps=2, max_epochs=3, unfreeze_k=1, emb_dim=8, head_hidden=16,
                     domain_hidden=8, seed=1, min_steps_per_epoch=6)


def test_an_epoch_has_at_least_the_configured_steps_on_a_ten_clip_machine():
    data = make_finetune_data(table(8, 2, test_per_cell=4), ["fan"])
    assert data.n_train == 16  # 8 source + the 2 target clips repeated up to 8
    t = FinetuneTrainer(CFG, tiny_encoder(), data, device="cpu")
    m = t.step()
    assert m["optimizer_steps"] >= 6  # one pass would be 2 batches = 1 step
    few = FinetuneTrainer(FinetuneConfig(**{**CFG.to_dict(), "min_steps_per_epoch": 0}), tiny_encoder(), data,
                          device="cpu")
    assert few.step()["optimizer_steps"] == 1


def test_the_ae_trains_on_every_training_vector_once_per_epoch():
    data = make_finetune_data(table(8, 2), ["fan"], heldout_floor=10**9)
    cfg = AEBaselineConfig(max_epochs=2, batch_size=64, seed=0)
    t = AETrainer(cfg, data, device="cpu", )
    n_vectors = 10 * (N_FRAMES - 5 + 1)
    assert len(t.train_vectors) + len(t.heldout_vectors) == n_vectors
    assert len(t.heldout_vectors) == round(0.1 * n_vectors)  # the official 10 % validation split of vectors
    t.step()
    assert (t.vectors_seen[t.train_vectors] == 1).all() and (t.vectors_seen[t.heldout_vectors] == 0).all()
    t.step()
    assert (t.vectors_seen[t.train_vectors] == 2).all()
    assert t.history[-1]["optimizer_steps"] == -(-len(t.train_vectors) // 64)
    # no selection: the last epoch is kept
    assert t.best_epoch == 2 and not t.early_stopping


def test_the_ae_takes_min_steps_in_whole_passes():
    data = make_finetune_data(table(8, 2), ["fan"], heldout_floor=10**9)
    t = AETrainer(AEBaselineConfig(max_epochs=1, batch_size=64, min_steps_per_epoch=20), data, device="cpu")
    t.step()
    per_pass = -(-len(t.train_vectors) // 64)
    passes = -(-20 // per_pass)
    assert (t.vectors_seen[t.train_vectors] == passes).all()


def test_validation_and_report_parts_never_share_a_clip_and_are_stratified():
    tbl = table(4, 2, test_per_cell=25, machines=("fan", "valve"))
    test = tbl.manifest[tbl.manifest["split"] == "test"].reset_index(drop=True)
    parts = split_test_clips(test)
    val, rep = set(test.loc[parts == "validation", "path"]), set(test.loc[parts == "report", "path"])
    assert val and rep and not (val & rep) and len(val) + len(rep) == len(test)
    counts = test.assign(part=parts).groupby(["machine", "domain", "label", "part"]).size()
    assert (counts.xs("validation", level="part") == 12).all() and (counts.xs("report", level="part") == 13).all()
    # the same clip is on the same side whatever the order of the rows
    shuffled = test.sample(frac=1, random_state=3)
    assert (split_test_clips(shuffled) == pd.Series(parts, index=test.index)[shuffled.index].to_numpy()).all()
    # the trainer validates on exactly the validation part
    data = make_finetune_data(tbl, ["fan"])
    assert data.selection == "validation part" and len(data.val_x) == 4 * 12
    whole = make_finetune_data(tbl, ["fan"], select_on_all=True)
    assert whole.selection == "whole test split" and len(whole.val_x) == 4 * 25


def test_without_labels_held_out_normals_of_both_domains_or_a_fixed_budget():
    data = make_finetune_data(table(100, 10), ["fan"], heldout_fraction=0.1, heldout_floor=8)
    assert data.selection == "held-out normals"
    assert sorted(data.heldout_domain.tolist()) == [0] * 10 + [1] * 1
    assert data.n_train == 2 * 90  # held-out clips are never trained on; the balanced set is rebuilt
    few = make_finetune_data(table(20, 4), ["fan"], heldout_fraction=0.1, heldout_floor=16)
    assert few.selection == "fixed budget" and not few.early_stopping
    assert "no early stopping" in few.val_source and "3 normal clips" in few.val_source
    t = FinetuneTrainer(FinetuneConfig(**{**CFG.to_dict(), "max_epochs": 3, "patience": 1, "min_steps_per_epoch": 0}),
                        tiny_encoder(), few, device="cpu")
    history = []
    while not (history and history[-1]["done"]):
        history.append(t.step())
    assert len(history) == 3 and t.best_epoch == 3 and "val_score" not in history[-1]


def test_grl_is_off_with_a_single_domain_and_says_so():
    data = make_finetune_data(table(8, 0, test_per_cell=4), ["fan"])
    t = FinetuneTrainer(FinetuneConfig(**{**CFG.to_dict(), "lambda_adv": 0.5}), tiny_encoder(), data, device="cpu")
    assert t.lambda_adv == 0 and not t.grl_active
    assert t.notes and "one domain" in t.notes[0]
    m = t.step()
    assert "loss_adv" not in m and "domain_acc" not in m
    two = make_finetune_data(table(8, 2, test_per_cell=4), ["fan"])
    assert FinetuneTrainer(FinetuneConfig(**{**CFG.to_dict(), "lambda_adv": 0.5}), tiny_encoder(), two,
                           device="cpu").lambda_adv == 0.5


def test_a_test_split_too_small_to_halve_falls_back_to_the_label_free_selection():
    # one clip per domain × label cell: the validation half is empty, so no test clip can select an epoch
    tiny = make_finetune_data(table(100, 10, test_per_cell=1), ["fan"], heldout_fraction=0.1, heldout_floor=8)
    assert tiny.selection == "held-out normals"
    assert "validation half of the labelled test split (0 of 4 clips) lacks normals or anomalies" in tiny.val_source
    with pytest.raises(DataError, match="validation 'test'.*lacks normals or anomalies.*--select-on-all"):
        make_finetune_data(table(100, 10, test_per_cell=1), ["fan"], validation="test")
    # two per cell: one normal and one anomaly per domain validate, and that is enough
    assert make_finetune_data(table(8, 2, test_per_cell=2), ["fan"]).selection == "validation part"


def test_the_cut_of_the_test_split_does_not_depend_on_training_rows_passed_with_it():
    # the benchmarks pass the whole manifest; training normals share machine × section × domain × label
    # with the test normals and must not move which test clips validate and which are reported on
    tbl = table(40, 6, test_per_cell=25, machines=("fan", "valve"))
    whole = tbl.manifest.reset_index(drop=True)
    test = whole["split"] == "test"
    alone = split_test_clips(whole[test].reset_index(drop=True))
    together = split_test_clips(whole)
    assert (together[test.to_numpy()] == alone).all()
    assert (together[~test.to_numpy()] == "train").all()


@pytest.mark.parametrize("embedding,epochs", [("patch_stats", 1), ("head", 3)])
def test_a_score_that_training_does_not_change_trains_one_epoch_and_says_so(embedding, epochs):
    from bohb_search.train.setup import FinetuneSetup, build_trainer

    setup = FinetuneSetup(table(8, 2, test_per_cell=4), ["fan"], tiny_encoder(), None, FEATURES)
    cfg = FinetuneConfig(**{**CFG.to_dict(), "score": "knn", "embedding": embedding, "patience": 10})
    t = build_trainer(setup, cfg)
    history = []
    while not (history and history[-1]["done"]):
        history.append(t.step())
    assert len(history) == epochs and t.training_independent == (embedding == "patch_stats")
    assert any("one epoch trained" in note for note in t.notes) == (embedding == "patch_stats")

"""The margin objective: classes from clip metadata, pseudo classes, the angular-margin heads, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bohb_search.train.configs import FinetuneConfig
from bohb_search.train.margin import MarginTrainer, power_mix, pseudo_class_labels
from data.datasets import class_keys, make_finetune_data
from data.manifest import read_manifest
from models import ArcFace, SubClusterAdaCos
from tests.conftest import FIXTURES
from tests.test_selection import table
from tests.test_training import tiny_encoder


def _touch(root, machine, names, attributes_csv=None):
    folder = root / machine / "train"
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")
    if attributes_csv:
        (root / machine / "attributes_00.csv").write_text(attributes_csv)


def test_class_keys_from_every_naming_and_attribute_files(tmp_path):
    _touch(tmp_path, "ToyCar", ["section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav",
                                "section_00_target_train_normal_0000_car_C2_spd_31V_mic_2.wav"])
    _touch(tmp_path, "ToyCar2022", ["section_01_source_train_normal_0000_A1Spd28VMic1.wav"])
    _touch(tmp_path, "fan2020", ["normal_id_02_00000001.wav"])
    _touch(tmp_path, "pump2021", ["section_02_target_train_normal_0003.wav"])
    # DCASE 2024/2025 machines without attributes name them "noAttribute"; attribute files may add them
    _touch(tmp_path, "slider", ["section_00_source_train_normal_0000_noAttribute.wav",
                                "section_00_source_train_normal_0001_noAttribute.wav"],
           "file_name,d1p,d1v\nslider/train/section_00_source_train_normal_0000_noAttribute.wav,vel,500\n"
           "slider/train/section_00_source_train_normal_0001_noAttribute.wav,noAttribute,\n")
    df = read_manifest(tmp_path).sort_values("path")
    keys = dict(zip(df["file"], class_keys(df)))
    assert keys["section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav"] == "ToyCar|0|car_A1_spd_28V_mic_1|source"
    assert keys["section_00_target_train_normal_0000_car_C2_spd_31V_mic_2.wav"] == "ToyCar|0|car_C2_spd_31V_mic_2|target"
    assert keys["section_01_source_train_normal_0000_A1Spd28VMic1.wav"] == "ToyCar2022|1|A1Spd28VMic1|source"
    assert keys["normal_id_02_00000001.wav"] == "fan2020|2|-|source"
    assert keys["section_02_target_train_normal_0003.wav"] == "pump2021|2|-|target"  # the target clips: own classes
    assert keys["section_00_source_train_normal_0000_noAttribute.wav"] == "slider|0|vel_500|source"
    assert keys["section_00_source_train_normal_0001_noAttribute.wav"] == "slider|0|-|source"


def test_class_keys_of_the_real_clips():
    df = read_manifest(FIXTURES / "real_clips")
    keys = set(class_keys(df))
    assert "bearing|0|vel_8_loc_G|target" in keys and "fan|6|-|source" in keys


def test_pseudo_classes_cluster_each_domain_and_are_ordered_by_size():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (30, 8)) + np.eye(8)[0]
    b = rng.normal(0, 0.05, (12, 8)) + np.eye(8)[1]
    labels = pseudo_class_labels(np.concatenate([a, b]), n_clusters=2, seed=0)
    assert (labels[:30] == 0).all() and (labels[30:] == 1).all()  # the larger cluster is 0
    assert (pseudo_class_labels(a[:9], n_clusters=4, seed=0) == 0).all()  # fewer than 10 clips: one cluster


def test_the_trainer_splits_attribute_less_clips_into_pseudo_classes():
    tbl = table(20, 5, test_per_cell=4)
    tbl.manifest["attributes"] = ""  # no attributes at all
    data = make_finetune_data(tbl, ["fan"])
    cfg = FinetuneConfig(objective="margin", batch_size=8, accum_steps=1, max_epochs=1, unfreeze_k=1, emb_dim=8,
                         head_hidden=16, seed=0, min_steps_per_epoch=0, pseudo_classes=3)
    t = MarginTrainer(cfg, tiny_encoder(), data, device="cpu")
    source = [c for c in t.classes if c.endswith("|source")]
    target = [c for c in t.classes if c.endswith("|target")]
    assert len(source) == 3 and all("|pseudo" in c for c in source)  # 20 clips, 3 clusters
    assert len(target) == 1  # 5 clips: one cluster


def test_subcluster_adacos_pulls_a_sample_towards_its_class_and_adapts_its_scale():
    torch.manual_seed(0)
    head = SubClusterAdaCos(emb_dim=4, n_classes=3, n_subclusters=2, dynamic_scale=True, seed=0).train()
    assert head.scale.item() == pytest.approx(math.sqrt(2) * math.log(3 * 2 - 1))
    assert not list(head.parameters())  # fixed centres, scale not learned
    z = torch.randn(1, 4, requires_grad=True)
    y = torch.tensor([[0.0, 1.0, 0.0]])
    logp = head(z, y)
    assert torch.allclose(logp.exp().sum(), torch.tensor(1.0), atol=1e-5)
    (-logp[0, 1]).backward()
    step = z - 0.1 * z.grad
    best_before = head.cosines(z.detach())[0, 1].max()
    best_after = head.cosines(step.detach())[0, 1].max()
    assert best_after > best_before  # the gradient pulls towards the closest centre of its class
    before = head.scale.item()
    head(torch.randn(64, 4), torch.nn.functional.one_hot(torch.randint(0, 3, (64,)), 3).float())
    assert head.scale.item() != before and 1.0 <= head.scale.item() <= 2 * before
    head.eval()
    fixed = head.scale.item()
    head(torch.randn(64, 4), torch.nn.functional.one_hot(torch.randint(0, 3, (64,)), 3).float())
    assert head.scale.item() == fixed  # never updated outside training


def test_arcface_margin_lowers_the_target_probability_and_trains_its_centres():
    head = ArcFace(emb_dim=4, n_classes=3, margin=0.5, scale=10.0, seed=0)
    z = torch.randn(5, 4)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).float()
    with_margin = head.train()(z, y)
    without = head.eval()(z, y)
    assert (with_margin.gather(1, y.argmax(1, keepdim=True)) < without.gather(1, y.argmax(1, keepdim=True))).all()
    assert [n for n, _ in head.named_parameters()] == ["centres"]


def test_power_mix_adds_powers():
    a, b = torch.full((1, 2, 2), 10.0), torch.full((1, 2, 2), 10.0)
    assert torch.allclose(power_mix(a, b, torch.tensor([0.5])), torch.full((1, 2, 2), 10.0), atol=1e-5)
    loud, quiet = torch.full((1, 1, 1), 20.0), torch.full((1, 1, 1), -100.0)
    assert torch.allclose(power_mix(loud, quiet, torch.tensor([0.5])), torch.tensor(20.0 - 10 * math.log10(2)),
                          atol=1e-4)


CFG = FinetuneConfig(objective="margin", batch_size=8, accum_steps=2, max_epochs=10, unfreeze_k=1, emb_dim=8,
                     head_hidden=16, seed=2, min_steps_per_epoch=2, mixup_prob=0.5, perturbation_classes=True,
                     n_subclusters=2, score="knn")


@pytest.mark.parametrize("loss, train_tokenizer", [("adacos", False), ("arcface", False), ("adacos", True)])
def test_margin_trainer_resumes_exactly(loss, train_tokenizer):
    cfg = FinetuneConfig(**{**CFG.to_dict(), "margin_loss": loss, "adacos_dynamic": True,
                            "train_tokenizer": train_tokenizer})

    def data():
        return make_finetune_data(table(12, 3, test_per_cell=4, machines=("fan", "valve")), ["fan"])

    straight = MarginTrainer(cfg, tiny_encoder(), data(), device="cpu")
    m_straight = [straight.step() for _ in range(4)]
    first = MarginTrainer(cfg, tiny_encoder(), data(), device="cpu")
    m_first = [first.step() for _ in range(2)]
    state = first.state_dict()
    torch.manual_seed(999)
    resumed = MarginTrainer(cfg, tiny_encoder(), data(), device="cpu")
    resumed.load_state_dict(state)
    m_resumed = m_first + [resumed.step() for _ in range(2)]
    assert pd.DataFrame(m_straight).equals(pd.DataFrame(m_resumed))
    for a, b in zip(straight.margin_head.state_dict().values(), resumed.margin_head.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.head.state_dict().values(), resumed.head.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.encoder.state_dict().values(), resumed.encoder.state_dict().values()):
        assert torch.equal(a, b)
    if train_tokenizer:
        assert "loss_tokenizer" in m_straight[-1]
        for module in ("stats_map", "stats_head"):
            for a, b in zip(getattr(straight, module).state_dict().values(),
                            getattr(resumed, module).state_dict().values()):
                assert torch.equal(a, b)
    # other machines' normals are classes too; the perturbed copies are classes (class, kind)
    assert any(c.startswith("valve|") for c in straight.classes)
    assert any("#" in c for c in straight.classes)


def test_class_weights_keep_rare_target_classes_from_vanishing():
    data = make_finetune_data(table(40, 2, test_per_cell=4), ["fan"])
    t = MarginTrainer(FinetuneConfig(**{**CFG.to_dict(), "perturbation_classes": False, "class_weight_power": 1.0,
                                        "pseudo_classes": 1}),
                      tiny_encoder(), data, device="cpu")
    w = dict(zip(t.classes, t.class_weight.tolist()))
    # the balanced set already repeats target clips: both domains' classes weigh the same
    assert w["fan|00|-|source"] == pytest.approx(w["fan|00|-|target"], rel=1e-6)


def test_a_margin_model_with_every_clip_mixed_still_exports_a_centre_for_the_cosine_score():
    # mixup_prob 1 and perturbation classes: no batch ever holds a plain clip, so no centre is tracked;
    # the export (and the cosine score) use the normalised mean of the training embeddings instead
    data = make_finetune_data(table(12, 3, test_per_cell=4, machines=("fan", "valve")), ["fan"])
    t = MarginTrainer(FinetuneConfig(**{**CFG.to_dict(), "mixup_prob": 1.0, "score": "cosine"}), tiny_encoder(),
                      data, device="cpu")
    t.step()
    assert t.center is None
    bundle = t.export()
    z, _, _ = t.training_embeddings()
    assert torch.allclose(bundle["center"], torch.nn.functional.normalize(z.mean(0), dim=0), atol=1e-6)
    assert np.isfinite(t.score(data.train_base[:3])).all()


def test_margin_training_leaves_the_tokenizer_and_its_patch_statistics_untouched():
    # Stage 2 freezes the tokenizer under either objective, so the patch-statistics score of a margin model
    # equals that of a pOE model fine-tuned from the same encoder (BENCHMARKS.md "detection" relies on it)
    data = make_finetune_data(table(12, 3, test_per_cell=4, machines=("fan", "valve")), ["fan"])
    t = MarginTrainer(CFG, tiny_encoder(), data, device="cpu")
    x = torch.from_numpy(data.train_base[:4].astype(np.float32))
    before = {k: v.clone() for k, v in t.encoder.embed.state_dict().items()}
    stats_before = t.encoder.patch_statistics(x.to(t.device))
    blocks_before = [p.clone() for p in t.encoder.blocks[-1].parameters()]
    t.step()
    assert all(torch.equal(before[k], v) for k, v in t.encoder.embed.state_dict().items())
    assert torch.equal(stats_before, t.encoder.patch_statistics(x.to(t.device)))
    assert not all(torch.equal(a, b) for a, b in zip(blocks_before, t.encoder.blocks[-1].parameters()))


def test_train_tokenizer_trains_the_patch_projection_through_the_statistics_only():
    # --train-tokenizer: the patch projection (and so the patch statistics the default score reads) learns,
    # and only through the statistics head: the blocks' task reads the tokens without moving them
    data = make_finetune_data(table(12, 3, test_per_cell=4, machines=("fan", "valve")), ["fan"])
    t = MarginTrainer(FinetuneConfig(**{**CFG.to_dict(), "train_tokenizer": True}), tiny_encoder(), data,
                      device="cpu")
    x = torch.from_numpy(data.train_base[:4].astype(np.float32)).unsqueeze(1)
    t._set_train(True)
    t._forward(x).pow(2).sum().backward()
    assert t.encoder.embed.proj.weight.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.encoder.blocks[-1].parameters())
    t.stats_map(t.encoder.patch_statistics(x)).pow(2).sum().backward()
    assert t.encoder.embed.proj.weight.grad.abs().sum() > 0
    t.opt_f.zero_grad(set_to_none=True)

    before = {k: v.clone() for k, v in t.encoder.state_dict().items()}
    stats_before = t.encoder.patch_statistics(x)
    t.step()
    changed = {k for k, v in t.encoder.state_dict().items() if not torch.equal(before[k], v)}
    assert {"embed.proj.weight", "embed.proj.bias"} <= changed
    assert not {k for k in changed if k.startswith("embed.") and not k.startswith("embed.proj.")}
    assert not any(k.startswith(("blocks.0.", "blocks.1.")) for k in changed)  # unfreeze_k 1 of 3
    assert not torch.equal(stats_before, t.encoder.patch_statistics(x))
    # the exported model scores with the trained tokenizer: its training statistics are the new ones
    z = t.export()["train_patch_stats"]
    rows, _ = t._unique_training_rows()
    assert torch.allclose(z, t.encoder.patch_statistics(torch.from_numpy(data.train_base[rows].astype(np.float32))),
                          atol=1e-5)


def test_train_tokenizer_belongs_to_the_margin_objective():
    with pytest.raises(ValueError, match="finetune train_tokenizer: only the margin objective"):
        FinetuneConfig(objective="poe", train_tokenizer=True)

"""Trainers: exact resume, two-optimizer separation, frozen blocks, variants, scores (tiny models, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bohb_search.train.configs import FinetuneConfig, PretrainConfig
from bohb_search.train.finetune import FinetuneTrainer
from bohb_search.train.pretrain import PretrainTrainer
from data.datasets import FinetuneData, PretrainData
from data.audio import AudioConfig
from data.features import FeatureConfig
from models import encoder_preset

N_MELS, N_FRAMES = 32, 64
FEATURES = FeatureConfig(audio=AudioConfig(seconds=N_FRAMES * 10 / 1024), n_mels=N_MELS)


def tiny_encoder(kind: str = "ssm"):
    return encoder_preset("tiny", kind=kind, dim=16, depth=3, patch=4, unshuffle=2, n_mels=N_MELS,
                          n_frames=N_FRAMES, input_mean=-40.0, input_std=10.0)


def _clips(rng, n, shift=0.0):
    base = -40 + 10 * np.sin(np.linspace(0, 6, N_MELS))[:, None] + shift
    return (base + rng.standard_normal((n, N_MELS, N_FRAMES)) * 3).astype(np.float16)


def finetune_data(labelled: bool = True, seed: int = 0) -> FinetuneData:
    rng = np.random.default_rng(seed)
    train = _clips(rng, 24)
    domain = np.array([0] * 20 + [1] * 4)
    idx = np.concatenate([np.arange(20), np.tile(np.arange(20, 24), 5)])
    if labelled:
        val_x = np.concatenate([_clips(rng, 8), _clips(rng, 8, shift=4.0)])
        val_y = np.array([0] * 8 + [1] * 8)
        val_d = np.array([0, 1] * 8)
        return FinetuneData(["fan"], FEATURES, train, idx, domain[idx], _clips(rng, 6, shift=8.0),
                            val_x, val_y, val_d, "validation part", val_machine=np.array(["fan"] * 16),
                            val_section=np.array(["00"] * 16))
    return FinetuneData(["fan"], FEATURES, train, idx, domain[idx], None, None, None, None,
                        "held-out normals", heldout_normals=_clips(rng, 16), heldout_domain=np.array([0] * 12 + [1] * 4),
                        heldout_machine=np.array(["fan"] * 16))


CFG = FinetuneConfig(batch_size=8, max_epochs=50, unfreeze_k=1, emb_dim=8, head_hidden=16, domain_hidden=8,
                     lambda_adv=0.5, poe_ratio=1.0, seed=3, min_steps_per_epoch=0)


def _params(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_resume_is_exact():
    straight = FinetuneTrainer(CFG, tiny_encoder(), finetune_data(), device="cpu")
    m_straight = [straight.step() for _ in range(4)]

    first = FinetuneTrainer(CFG, tiny_encoder(), finetune_data(), device="cpu")
    m_first = [first.step() for _ in range(2)]
    state = first.state_dict()
    torch.manual_seed(12345)  # the global RNG is disturbed in between, as a new process would be
    resumed = FinetuneTrainer(CFG, tiny_encoder(), finetune_data(), device="cpu")
    resumed.load_state_dict(state)
    m_resumed = m_first + [resumed.step() for _ in range(2)]

    assert m_straight == m_resumed  # every metric of every epoch, exactly
    assert _same(_params(straight.encoder), _params(resumed.encoder))
    assert _same(_params(straight.head), _params(resumed.head))
    assert _same(_params(straight.domain_clf), _params(resumed.domain_clf))
    assert torch.equal(straight.center, resumed.center)


@pytest.mark.parametrize("perturbation_classes", [False, True])
def test_pretrain_resume_is_exact(perturbation_classes):
    from bohb_search.train.finetune import pseudo_outlier_config

    rng = np.random.default_rng(0)
    x = np.concatenate([_clips(rng, 12), _clips(rng, 12, shift=6)])
    y = np.array([0] * 12 + [1] * 12)
    data = PretrainData(x[::2], y[::2], x[1::2], y[1::2], ["a", "b"])
    cfg = PretrainConfig(batch_size=4, micro_batch_size=2, epochs=4, seed=1, perturbation_classes=perturbation_classes)
    outliers = pseudo_outlier_config(FinetuneConfig(), FEATURES)

    def trainer():
        return PretrainTrainer(cfg, tiny_encoder(), data, device="cpu", outliers=outliers)

    a = trainer()
    ma = [a.step() for _ in range(4)]
    b = trainer()
    mb = [b.step() for _ in range(2)]
    c = trainer()
    c.load_state_dict(b.state_dict())
    mb += [c.step() for _ in range(2)]
    assert ma == mb and _same(_params(a.encoder), _params(c.encoder))
    assert {"val_accuracy", "val_map", "train_loss"} <= set(ma[-1])
    n_kinds = len(outliers.kinds) if perturbation_classes else 0
    assert a.head.fc.out_features == 2 + n_kinds and len(a.state_dict()["classes"]) == 2 + n_kinds


def test_pretraining_perturbation_classes_label_the_perturbed_share_by_its_kind():
    from bohb_search.train.finetune import pseudo_outlier_config

    rng = np.random.default_rng(0)
    x = _clips(rng, 8)
    data = PretrainData(x, np.zeros(8, dtype=np.int64), x[:2], np.zeros(2, dtype=np.int64), ["a"])
    cfg = PretrainConfig(batch_size=8, epochs=1, seed=0, perturbation_classes=True, perturbed_share=0.5)
    t = PretrainTrainer(cfg, tiny_encoder(), data, device="cpu", outliers=pseudo_outlier_config(FinetuneConfig(), FEATURES))
    xb, yb = t._micro_batch(np.arange(8))
    assert (yb[:4] >= 1).all() and (yb[4:] == 0).all()  # half perturbed, labelled 1 + kind index
    assert not torch.equal(xb[:4, 0], torch.from_numpy(x[:4].astype(np.float32)))  # and really changed
    assert torch.equal(xb[4:, 0], torch.from_numpy(x[4:].astype(np.float32)))
    with pytest.raises(ValueError, match="perturbation_classes needs"):
        PretrainTrainer(cfg, tiny_encoder(), data, device="cpu")


def test_frozen_blocks_stay_bit_identical_and_top_blocks_move():
    t = FinetuneTrainer(CFG, tiny_encoder(), finetune_data(), device="cpu")
    before = [_params(b) for b in t.encoder.blocks]
    embed_before = _params(t.encoder.embed)
    t.step()
    after = [_params(b) for b in t.encoder.blocks]
    assert all(_same(x, y) for x, y in zip(before[:-1], after[:-1]))  # K = 1: all but the last block frozen
    assert _same(embed_before, _params(t.encoder.embed))
    assert not _same(before[-1], after[-1])


def test_domain_step_touches_only_theta_d_and_feature_step_only_theta_f():
    t = FinetuneTrainer(CFG, tiny_encoder(), finetune_data(), device="cpu")
    x = torch.from_numpy(t.data.train_base[:8].astype(np.float32)).unsqueeze(1)
    is_out = torch.zeros(8, dtype=torch.bool)
    is_out[4:] = True
    d = torch.tensor([0, 1, 0, 1])
    loss, _, z = t.feature_loss(x, is_out, d)

    d_before, h_before, e_before = _params(t.domain_clf), _params(t.head), _params(t.encoder)
    t.opt_f.zero_grad()
    loss.backward()
    t.opt_f.step()  # the L_total step (its gradient also reaches D through the GRL, but opt_f excludes θ_D)
    assert _same(d_before, _params(t.domain_clf))
    assert not _same(h_before, _params(t.head)) and not _same(e_before, _params(t.encoder))

    f_mid, d_mid = _params(t.encoder), _params(t.domain_clf)
    h_mid = _params(t.head)
    t.opt_f.zero_grad(set_to_none=True)
    t.domain_step(z[~is_out], d)  # θ_D step on detached embeddings
    assert _same(f_mid, _params(t.encoder)) and _same(h_mid, _params(t.head))
    assert not _same(d_mid, _params(t.domain_clf))
    assert all(p.grad is None for p in t.feature_parameters())  # no gradient leaked into θ_f


def test_gradient_reversal_sign_reaches_features():
    """With λ_adv > 0 the adversarial term pushes θ_f opposite to the domain classifier's gradient."""
    t = FinetuneTrainer(FinetuneConfig(**{**CFG.to_dict(), "poe_ratio": 0.0}), tiny_encoder(), finetune_data(), device="cpu")
    t._set_train(False)  # same forward twice: no dropout, BatchNorm on running statistics
    x = torch.from_numpy(t.data.train_base[:6].astype(np.float32)).unsqueeze(1)
    d = torch.tensor([0, 1, 0, 1, 0, 1])
    z = t._forward(x)
    z.retain_grad()
    logits = t.domain_clf(z)
    torch.nn.functional.cross_entropy(logits, d).backward()
    plain = z.grad.clone()
    z2 = t._forward(x)
    z2.retain_grad()
    from models import grad_reverse

    torch.nn.functional.cross_entropy(t.domain_clf(grad_reverse(z2, 1.0)), d).backward()
    assert torch.allclose(z2.grad, -plain)


@pytest.mark.parametrize("variant", [
    {"lambda_adv": 0.5, "poe_ratio": 1.0},  # pOE + GRL
    {"lambda_adv": 0.0, "poe_ratio": 1.0},  # pOE only
    {"lambda_adv": 0.5, "poe_ratio": 0.0},  # OC-SVDD + GRL
    {"lambda_adv": 0.0, "poe_ratio": 0.0},  # OC-SVDD only
])
def test_ablation_variants_train(variant):
    cfg = FinetuneConfig(**{**CFG.to_dict(), **variant})
    t = FinetuneTrainer(cfg, tiny_encoder(), finetune_data(), device="cpu")
    m = t.step()
    assert np.isfinite(m["loss_total"]) and 0 <= m["val_auc"] <= 1
    assert ("loss_adv" in m) == (variant["lambda_adv"] > 0)
    assert ("domain_acc" in m) == (variant["lambda_adv"] > 0)
    assert (m["loss_outlier"] != 0 or variant["poe_ratio"] == 0) and (variant["poe_ratio"] > 0 or m["loss_outlier"] == 0)


def test_heldout_validation_when_no_labels_and_knn_score():
    cfg = FinetuneConfig(**{**CFG.to_dict(), "score": "knn"})
    t = FinetuneTrainer(cfg, tiny_encoder(), finetune_data(labelled=False), device="cpu")
    m = t.step()
    assert t.data.selection == "held-out normals" and t.early_stopping
    assert len(t.val_y) == 32 and set(t.val_y.tolist()) == {0, 1} and "val_auc_source" not in m
    assert m["val_score"] == m["val_auc"]  # normals vs pseudo outliers: the AUC is the validation score
    z, dom, machines = t.training_embeddings()
    assert z.shape == (24, 8) and (dom == 0).sum() == 20 and (dom == 1).sum() == 4 and set(machines) == {"fan"}
    s_knn = t.score(t.data.train_base[:3])
    t.cfg.score = "cosine"
    s_cos = t.score(t.data.train_base[:3])
    assert s_knn.shape == s_cos.shape == (3,) and not np.allclose(s_knn, s_cos)
    assert np.all(s_knn < 1e-4)  # training clips are their own nearest neighbours


def test_early_stopping_and_best_state():
    cfg = FinetuneConfig(**{**CFG.to_dict(), "patience": 1, "max_epochs": 30, "lr": 1e-12, "domain_lr": 1e-12})
    t = FinetuneTrainer(cfg, tiny_encoder(), finetune_data(), device="cpu")
    history = []
    while not (history and history[-1]["done"]):
        history.append(t.step())
    # with lr ~0 the model cannot improve after its first epoch (the centre moves, weights do not)
    assert len(history) < 30
    assert history[-1]["epochs_since_best"] >= 1
    assert t.best_epoch == int(np.argmax([h["val_score"] for h in history])) + 1


def test_config_errors_name_the_parameter():
    with pytest.raises(ValueError, match="delta"):
        FinetuneConfig(delta=2.0)
    with pytest.raises(ValueError, match="unfreeze_k=9 exceeds the encoder depth 3"):
        FinetuneTrainer(FinetuneConfig(**{**CFG.to_dict(), "unfreeze_k": 9}), tiny_encoder(), finetune_data(), device="cpu")
    with pytest.raises(ValueError, match="unknown setting"):
        FinetuneConfig.from_dict({"lr": 1e-3, "learning_rate": 1})


def test_nan_loss_raises():
    t = FinetuneTrainer(CFG, tiny_encoder(), finetune_data(), device="cpu")
    t.data.train_base[:] = np.nan
    with pytest.raises(FloatingPointError, match="non-finite"):
        t.step()

"""Tests for bohb_search.losses: eq. 8-11 on hand-computed numbers, gradients, validation."""

from __future__ import annotations

import math

import pytest
import torch

from bohb_search.scoring.scores import cosine_anomaly_score
from bohb_search.train.losses import (
    combined_objective,
    domain_adversarial_loss,
    init_center,
    poe_loss,
    poe_loss_terms,
    update_center,
)

R2 = 1.0 / math.sqrt(2.0)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- eq. 9


def test_poe_loss_hand_computed():
    center = t([2.0, 0.0])  # direction (1, 0); its norm must not matter
    z = t([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, 0.0]])
    is_out = torch.tensor([False, False, True, True])
    terms = poe_loss_terms(z, is_out, center, delta=0.5)
    # normals: cos = 1 and 0 -> mean(0, 1) = 0.5
    assert terms.normal_term.item() == pytest.approx(0.5, abs=1e-6)
    # outliers: cos = 1/sqrt(2) (active: 0.7071 - 0.5) and -1 (inactive: 0)
    assert terms.outlier_term.item() == pytest.approx((R2 - 0.5) / 2.0, abs=1e-6)
    assert terms.total.item() == pytest.approx(0.5 + (R2 - 0.5) / 2.0, abs=1e-6)
    assert (terms.n_normal.item(), terms.n_outlier.item()) == (2, 2)
    assert poe_loss(z, is_out, center, 0.5).item() == pytest.approx(terms.total.item())


def test_poe_loss_delta_inactive_when_margin_above_cosine():
    center = t([1.0, 0.0])
    z = t([[1.0, 1.0], [0.0, 1.0]])
    is_out = torch.tensor([True, False])
    # cos(outlier) = 0.7071 < delta = 0.8: the push term is exactly zero
    terms = poe_loss_terms(z, is_out, center, delta=0.8)
    assert terms.outlier_term.item() == 0.0
    assert terms.total.item() == pytest.approx(1.0, abs=1e-6)
    # negative margin: even an orthogonal outlier (cos 0) is pushed
    terms = poe_loss_terms(t([[0.0, 1.0]]), torch.tensor([True]), center, delta=-0.25)
    assert terms.outlier_term.item() == pytest.approx(0.25, abs=1e-6)


def test_poe_loss_single_group_batches():
    center = t([0.0, 1.0])
    z = t([[1.0, 1.0], [0.0, 1.0]])
    only_normals = poe_loss_terms(z, torch.tensor([False, False]), center, 0.1)
    # OC-SVDD variant: pull-to-centre only, mean of (1 - 0.7071, 0)
    assert only_normals.outlier_term.item() == 0.0
    assert only_normals.total.item() == pytest.approx((1.0 - R2) / 2.0, abs=1e-6)
    only_outliers = poe_loss_terms(z, torch.tensor([True, True]), center, 0.1)
    assert only_outliers.normal_term.item() == 0.0
    assert only_outliers.total.item() == pytest.approx(((R2 - 0.1) + (1.0 - 0.1)) / 2.0, abs=1e-6)


def test_poe_loss_terms_are_group_means_not_batch_means():
    center = t([1.0, 0.0])
    normal = t([[0.0, 1.0]])  # contributes 1.0
    outliers = t([[1.0, 0.0]] * 3)  # each contributes 1 - 0 = 1.0 with delta 0
    z = torch.cat([normal, outliers])
    is_out = torch.tensor([False, True, True, True])
    terms = poe_loss_terms(z, is_out, center, 0.0)
    assert terms.normal_term.item() == pytest.approx(1.0)
    assert terms.outlier_term.item() == pytest.approx(1.0)


def test_poe_gradients_only_where_expected():
    center = torch.tensor([1.0, 0.0], requires_grad=True)
    z = t([[1.0, 1.0], [1.0, 0.2], [-0.2, 1.0], [1.0, 1.0]]).requires_grad_(True)
    is_out = torch.tensor([False, True, True, False])
    # outlier 1: cos ~ 0.98 > 0.5 (active); outlier 2: cos ~ -0.196 < 0.5 (inactive)
    poe_loss(z, is_out, center, delta=0.5).backward()
    grad_norm = z.grad.norm(dim=1)
    assert grad_norm[0] > 0 and grad_norm[3] > 0  # normals not at the centre are pulled
    assert grad_norm[1] > 0  # active outlier is pushed
    assert torch.equal(z.grad[2], torch.zeros(2))  # already beyond the margin: no gradient
    assert center.grad is None  # the centre is a running estimate, never a gradient target


def test_poe_gradient_step_moves_embeddings_the_right_way():
    center = t([1.0, 0.0])
    z = t([[1.0, 1.0], [1.0, 0.5]]).requires_grad_(True)
    is_out = torch.tensor([False, True])
    poe_loss(z, is_out, center, delta=0.0).backward()
    with torch.no_grad():
        before = cosine_anomaly_score(z, center)
        after = cosine_anomaly_score(z - 0.1 * z.grad, center)
    assert after[0] < before[0]  # the normal moves towards the centre
    assert after[1] > before[1]  # the outlier moves away


def test_poe_loss_is_scale_invariant():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 5, generator=g)
    c = torch.randn(5, generator=g)
    is_out = torch.tensor([False, True] * 3)
    a = poe_loss(z, is_out, c, 0.2)
    b = poe_loss(7.0 * z, is_out, 0.01 * c, 0.2)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"delta": 1.5}, "delta"),
        ({"delta": float("nan")}, "delta"),
        ({"is_outlier": torch.tensor([0, 1])}, "is_outlier"),
        ({"is_outlier": torch.tensor([True, False, True])}, "is_outlier"),
        ({"center": torch.zeros(3)}, "center"),
        ({"z": torch.zeros(2, 2, 1)}, "z"),
        ({"z": torch.zeros(0, 2), "is_outlier": torch.zeros(0, dtype=torch.bool)}, "z"),
    ],
)
def test_poe_loss_rejects_bad_arguments(kwargs, name):
    args = {"z": torch.ones(2, 2), "is_outlier": torch.tensor([True, False])}
    args.update(center=torch.ones(2), delta=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}:"):
        poe_loss(**args)


# ---------------------------------------------------------------- eq. 8 and the initial centre


def test_update_center_hand_computed_and_literal_momentum():
    c = t([1.0, 0.0])
    z = t([[0.0, 2.0], [0.0, 4.0]])  # mean (0, 3)
    new = update_center(c, z, momentum=0.99)
    assert torch.allclose(new, t([0.01, 2.97]), atol=1e-6)  # mu weights the batch mean (eq. 8)
    assert torch.allclose(update_center(c, z, 0.0), c)
    assert torch.allclose(update_center(c, z, 1.0), t([0.0, 3.0]))
    assert torch.equal(c, t([1.0, 0.0]))  # not modified in place


def test_update_center_has_no_gradient_and_keeps_dtype():
    c = torch.tensor([1.0, 0.0], dtype=torch.float64)
    z = t([[0.5, 0.5]]).requires_grad_(True)
    new = update_center(c, z * 2.0, 0.5)
    assert not new.requires_grad and new.grad_fn is None
    assert new.dtype == torch.float64
    assert torch.allclose(new, torch.tensor([1.0, 0.5], dtype=torch.float64))


def test_update_center_empty_batch_and_degenerate_result():
    c = t([1.0, 0.0])
    assert torch.equal(update_center(c, torch.zeros(0, 2), 0.99), c)
    # (1 - 0.5)(1, 0) + 0.5 (-1, 0) = 0: no direction, so the old centre is kept
    assert torch.equal(update_center(c, t([[-1.0, 0.0]]), 0.5), c)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan"), True])
def test_update_center_rejects_bad_momentum(momentum):
    with pytest.raises(ValueError, match=r"^momentum:"):
        update_center(t([1.0, 0.0]), t([[1.0, 0.0]]), momentum)


def test_update_center_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"^center:"):
        update_center(t([1.0, 0.0, 0.0]), t([[1.0, 0.0]]), 0.5)


def test_init_center_is_normalised_mean():
    c = init_center(t([[3.0, 0.0], [1.0, 2.0]]))  # mean (2, 1)
    assert torch.allclose(c, t([2.0, 1.0]) / math.sqrt(5.0), atol=1e-6)
    assert not c.requires_grad


def test_init_center_degenerate_cases():
    # Raw mean cancels but unit vectors do not: fall back to the mean direction of unit vectors.
    z = t([[2.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert torch.allclose(init_center(z), t([-1.0, 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match=r"^z_normal:"):
        init_center(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"^z_normal:"):
        init_center(t([[1.0, 0.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"^z_normal:"):
        init_center(torch.zeros(0, 3))


def test_init_center_promotes_half_precision():
    c = init_center(torch.tensor([[1.0, 1.0]], dtype=torch.float16))
    assert c.dtype == torch.float32
    assert torch.allclose(c, t([R2, R2]), atol=1e-3)


# ---------------------------------------------------------------- eq. 10 and 11


def test_domain_adversarial_loss_hand_computed():
    logits = t([[0.0, 0.0], [math.log(3.0), 0.0]]).requires_grad_(True)
    labels = torch.tensor([0, 1])
    loss = domain_adversarial_loss(logits, labels)
    # -log(1/2) and -log(1/4)
    assert loss.item() == pytest.approx((math.log(2.0) + math.log(4.0)) / 2.0, abs=1e-6)
    loss.backward()
    # d CE / d logits = (softmax - onehot) / B
    assert torch.allclose(logits.grad, t([[-0.25, 0.25], [0.375, -0.375]]), atol=1e-6)


@pytest.mark.parametrize(
    "logits, labels, name",
    [
        (torch.zeros(2, 2), torch.tensor([0, 2]), "domain_labels"),
        (torch.zeros(2, 2), torch.tensor([-1, 0]), "domain_labels"),
        (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), "domain_labels"),
        (torch.zeros(2, 2), torch.tensor([0, 1, 1]), "domain_labels"),
        (torch.zeros(2), torch.tensor([0, 1]), "domain_logits"),
        (torch.zeros(2, 1), torch.tensor([0, 0]), "domain_logits"),
    ],
)
def test_domain_adversarial_loss_rejects_bad_arguments(logits, labels, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        domain_adversarial_loss(logits, labels)


def test_combined_objective():
    assert combined_objective(t(1.0), t(2.0), 0.25).item() == pytest.approx(1.5)
    assert combined_objective(t(1.0), t(2.0), 0).item() == pytest.approx(1.0)  # "pOE only"
    for bad in (-0.1, float("inf"), None):
        with pytest.raises(ValueError, match=r"^lambda_adv:"):
            combined_objective(t(1.0), t(2.0), bad)


# ---------------------------------------------------------------- scores


def test_cosine_anomaly_score_hand_computed():
    z = t([[1.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    score = cosine_anomaly_score(z, t([2.0, 0.0]))
    assert torch.allclose(score, t([0.0, 1.0, 2.0, 1.0 - R2, 1.0]), atol=1e-6)

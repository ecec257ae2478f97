"""Fine-tuning objectives and anomaly scores (paper sections 2.5, eq. 8-11).

Everything here works on embeddings ``z`` of shape ``(B, E)`` (the anomaly head's output ``ẑ``)
and never touches the model, so the trainer, evaluation and tests can share it.

* :func:`poe_loss` / :func:`poe_loss_terms` - the pseudo-outlier-exposure loss of eq. 9. With a
  batch that holds only normals it reduces to the pull-to-centre term, which is the "OC-SVDD"
  ablation of Table 1.
* :func:`init_center` / :func:`update_center` - the SVDD-inspired centre ``c`` and its momentum
  update, eq. 8 (taken literally, see the note in :func:`update_center`).
* :func:`domain_adversarial_loss` - eq. 10; the gradient reversal layer belongs to the model and
  is applied by the caller *before* the domain classifier.
* :func:`combined_objective` - eq. 11.

The anomaly scores (``1 − cos(z, c)``, k-NN distances) live in :mod:`bohb_search.scoring`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..scoring.scores import DIRECTION_EPS, check_center, check_embeddings


class PoeLossTerms(NamedTuple):
    """Eq. 9 split into its parts, for logging. All are 0-dim tensors on ``z``'s device."""

    total: Tensor  # normal_term + outlier_term (what the optimiser minimises)
    normal_term: Tensor  # E_normals[1 - cos(z, c)]; 0 when the batch has no normals
    outlier_term: Tensor  # E_outliers[max(0, cos(z, c) - delta)]; 0 when it has no outliers
    n_normal: Tensor  # number of normals in the batch (int64)
    n_outlier: Tensor  # number of pseudo outliers in the batch (int64)


def poe_loss_terms(z: Tensor, is_outlier: Tensor, center: Tensor, delta: float) -> PoeLossTerms:
    """Pseudo-outlier-exposure loss, eq. 9, with its two parts.

    ``L_oe = E_{y=0}[1 - cos(ẑ, c)] + E_{y=1}[max(0, cos(ẑ, c) - δ)]``

    Args:
        z: ``(B, E)`` embeddings of normals and pseudo outliers.
        is_outlier: ``(B,)`` bool, True for pseudo outliers (``y = 1``).
        center: ``(E,)`` centre ``c``. It is treated as a constant (detached): it is a running
            estimate maintained by eq. 8, and letting the loss move it would let the optimiser
            chase its own target instead of shaping the embeddings.
        delta: margin ``δ`` in ``[-1, 1]``; an outlier whose cosine to ``c`` is already at or
            below ``δ`` contributes neither loss nor gradient.

    Each expectation is a mean over its own group, so the two terms keep their weight whatever
    the outlier ratio of the batch. A group that is absent contributes exactly 0: a batch of
    normals only gives the pull-to-centre term (the OC-SVDD variant), a batch of outliers only
    gives the push term. The masks are used as weights rather than boolean indexing so the
    computation never synchronises with the GPU.
    """
    check_embeddings("z", z)
    if z.shape[0] == 0:
        raise ValueError("z: empty batch, eq. 9 needs at least one sample")
    if (
        not isinstance(is_outlier, Tensor)
        or is_outlier.dtype != torch.bool
        or tuple(is_outlier.shape) != (z.shape[0],)
    ):
        got = (
            f"{tuple(is_outlier.shape)} {is_outlier.dtype}"
            if isinstance(is_outlier, Tensor)
            else type(is_outlier).__name__
        )
        raise ValueError(f"is_outlier: expected a bool tensor of shape ({z.shape[0]},), got {got}")
    check_center(center, z.shape[1])
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not -1.0 <= delta <= 1.0:
        raise ValueError(f"delta: expected a number in [-1, 1] (a cosine margin), got {delta!r}")

    c = center.detach().to(device=z.device, dtype=z.dtype)
    cos = F.cosine_similarity(z, c.unsqueeze(0).expand_as(z), dim=1, eps=DIRECTION_EPS)
    w_out = is_outlier.to(z.dtype)
    w_norm = 1.0 - w_out
    n_out = w_out.sum()
    n_norm = w_norm.sum()
    # clamp_min(1) only matters when a group is empty, where its weighted sum is 0 anyway.
    normal_term = ((1.0 - cos) * w_norm).sum() / n_norm.clamp_min(1.0)
    outlier_term = (torch.relu(cos - float(delta)) * w_out).sum() / n_out.clamp_min(1.0)
    return PoeLossTerms(
        total=normal_term + outlier_term,
        normal_term=normal_term,
        outlier_term=outlier_term,
        n_normal=n_norm.detach().round().long(),
        n_outlier=n_out.detach().round().long(),
    )


def poe_loss(z: Tensor, is_outlier: Tensor, center: Tensor, delta: float) -> Tensor:
    """Eq. 9 as a single scalar; see :func:`poe_loss_terms` for the parts and the details."""
    return poe_loss_terms(z, is_outlier, center, delta).total


def _check_momentum(momentum: float) -> None:
    if (
        isinstance(momentum, bool)
        or not isinstance(momentum, (int, float))
        or not 0.0 <= momentum <= 1.0
    ):
        raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")


@torch.no_grad()
def init_center(z_normal: Tensor) -> Tensor:
    """Initial centre: the unit-normalised mean of the first normal embeddings, ``(E,)``.

    Why the mean: eq. 8 tracks the mean of the raw normal embeddings, so starting from the same
    statistic means the first update does not jump between two different estimators. Why
    normalised: eq. 9 only sees the direction of ``c`` (cosines are scale-invariant), so the norm
    carries no information; a unit vector makes the stored centre independent of the head's
    output scale and keeps logged values comparable between runs.

    Degenerate case: if the mean has (near) zero norm - all embeddings zero, or opposite
    embeddings cancelling - it has no direction and every cosine to it would be 0 with zero
    gradient, silently disabling the loss. We then fall back to the mean of the *unit* embeddings
    (each sample votes for a direction regardless of its norm); if that also cancels there is no
    usable direction and a ``ValueError`` is raised rather than returning a meaningless centre.
    The result is detached and float32 at least, whatever the embedding dtype.
    """
    check_embeddings("z_normal", z_normal)
    if z_normal.shape[0] == 0:
        raise ValueError("z_normal: need at least one normal embedding to initialise the centre")
    z = z_normal.detach()
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()  # a centre kept in half precision would drift under repeated updates
    mean = z.mean(dim=0)
    norm = mean.norm()
    if norm > DIRECTION_EPS:
        return mean / norm
    unit = F.normalize(z, dim=1, eps=DIRECTION_EPS)
    mean = unit.mean(dim=0)
    norm = mean.norm()
    if norm > DIRECTION_EPS:
        return mean / norm
    raise ValueError(
        "z_normal: the normal embeddings average to the zero vector, so they define no centre "
        "direction (are the embeddings all zero?)"
    )


@torch.no_grad()
def update_center(center: Tensor, z_normal: Tensor, momentum: float) -> Tensor:
    """Momentum update of the centre, eq. 8: ``c ← (1 − μ)·c + μ·mean(ẑ_normal)``.

    This follows the paper's formula *literally*: ``μ`` weights the new batch mean. With the
    paper's ``μ = 0.99`` (section 3.2) the centre is therefore almost entirely the current batch
    mean and keeps only 1 % of its history - the opposite of a conventional slow EMA, which would
    be this formula with ``μ → 1 − μ`` (e.g. ``μ = 0.01``). We do not guess which was meant; the
    trainer exposes ``μ`` as a config value so both readings can be run.

    Args:
        center: ``(E,)`` current centre.
        z_normal: ``(N, E)`` embeddings of the batch's normal samples only. The raw ``ẑ`` is
            averaged as in eq. 8 (not unit vectors); since the loss is cosine-based only the
            resulting direction matters.
        momentum: ``μ`` in ``[0, 1]``.

    Returns a new detached tensor (``center`` is not modified in place) with ``center``'s dtype
    and device. ``N = 0`` returns an unchanged copy. If the update would land on (near) the zero
    vector - possible only when the batch mean nearly cancels the old centre - the old centre is
    kept, because a zero centre has no direction and would zero every cosine in eq. 9.
    """
    _check_momentum(momentum)
    check_embeddings("z_normal", z_normal)
    check_center(center, z_normal.shape[1])
    c = center.detach()
    if z_normal.shape[0] == 0:
        return c.clone()
    mean = z_normal.detach().to(device=c.device, dtype=c.dtype).mean(dim=0)
    new = (1.0 - momentum) * c + momentum * mean
    # torch.where instead of an `if` keeps this free of a GPU->CPU synchronisation.
    return torch.where(new.norm() > DIRECTION_EPS, new, c.clone())


def domain_adversarial_loss(domain_logits: Tensor, domain_labels: Tensor) -> Tensor:
    """Adversarial domain loss, eq. 10: ``L_adv = CE(D(GRL(ẑ)), d)``, mean over the batch.

    This is the plain cross-entropy; the caller has already passed ``ẑ`` through the gradient
    reversal layer before the domain classifier ``D`` (so minimising this trains ``D`` and pushes
    the feature extractor towards domain-invariant ``ẑ``). The same function serves the second
    optimiser's loss ``CE(D(detach(ẑ)), d)``, which differs only in what was fed to ``D``.

    Args:
        domain_logits: ``(B, n_domains)`` unnormalised scores.
        domain_labels: ``(B,)`` integer domain indices in ``[0, n_domains)``.
    """
    if not isinstance(domain_logits, Tensor) or domain_logits.dim() != 2:
        shape = tuple(domain_logits.shape) if isinstance(domain_logits, Tensor) else None
        raise ValueError(f"domain_logits: expected shape (B, n_domains), got {shape}")
    n, k = domain_logits.shape
    if n == 0 or k < 2:
        raise ValueError(
            f"domain_logits: need B >= 1 and n_domains >= 2, got shape {tuple(domain_logits.shape)}"
        )
    if (
        not isinstance(domain_labels, Tensor)
        or tuple(domain_labels.shape) != (n,)
        or domain_labels.is_floating_point()
        or domain_labels.dtype == torch.bool
    ):
        got = (
            f"{tuple(domain_labels.shape)} {domain_labels.dtype}"
            if isinstance(domain_labels, Tensor)
            else type(domain_labels).__name__
        )
        raise ValueError(f"domain_labels: expected an integer tensor of shape ({n},), got {got}")
    lo, hi = int(domain_labels.min()), int(domain_labels.max())
    if lo < 0 or hi >= k:
        raise ValueError(f"domain_labels: values must lie in [0, {k}), got range [{lo}, {hi}]")
    return F.cross_entropy(domain_logits, domain_labels.long())


def combined_objective(loss_oe: Tensor, loss_adv: Tensor, lambda_adv: float) -> Tensor:
    """Eq. 11: ``L_total = L_oe + λ_adv · L_adv`` (minimised by the feature-extractor optimiser).

    ``λ_adv = 0`` is the "pOE only" ablation. It must be finite and non-negative: the sign
    reversal already happens in the GRL, so a negative weight would undo it.
    """
    if (
        isinstance(lambda_adv, bool)
        or not isinstance(lambda_adv, (int, float))
        or not math.isfinite(lambda_adv)
        or lambda_adv < 0
    ):
        raise ValueError(f"lambda_adv: expected a finite number >= 0, got {lambda_adv!r}")
    return loss_oe + float(lambda_adv) * loss_adv

"""Anomaly scores of embeddings: the functions the trainer's validation, ``evaluate`` and ``score`` share.

* :func:`cosine_anomaly_score` — ``1 − cos(ẑ, c)``, the paper's score (the per-sample normal term of eq. 9);
* :func:`knn_cosine_score` — k-NN cosine distance to the training embeddings of each domain, min over domains.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

# Norm below which a vector is treated as having no direction. Embeddings from the head are
# O(1) in norm, so this only catches genuinely degenerate (all-zero or cancelling) vectors.
DIRECTION_EPS = 1e-8


def check_embeddings(name: str, z: Tensor) -> None:
    if not isinstance(z, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name}: expected shape (B, E), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {z.dtype}")


def check_center(center: Tensor, emb_dim: int) -> None:
    if not isinstance(center, Tensor) or center.dim() != 1 or center.shape[0] != emb_dim:
        shape = tuple(center.shape) if isinstance(center, Tensor) else type(center).__name__
        raise ValueError(f"center: expected shape ({emb_dim},) to match z, got {shape}")


def cosine_anomaly_score(z: Tensor, center: Tensor) -> Tensor:
    """Anomaly score ``1 − cos(ẑ, c)`` per sample, ``(B,)``, in ``[0, 2]``; higher = more anomalous.

    It is the per-sample normal term of eq. 9, so the score is what training minimised for
    normals. A zero embedding has no direction and scores 1 (cosine 0).
    """
    check_embeddings("z", z)
    check_center(center, z.shape[1])
    c = center.to(device=z.device, dtype=z.dtype)
    return 1.0 - F.cosine_similarity(z, c.unsqueeze(0).expand_as(z), dim=1, eps=DIRECTION_EPS)


def knn_cosine_score(
    z: Tensor, bank_by_domain: Mapping[str, Tensor], k: int = 1, chunk_size: int = 1024
) -> Tensor:
    """k-NN cosine-distance score, ``(B,)``; higher = more anomalous.

    For each domain ``d`` with training embeddings ``bank_d`` (``(N_d, E)``), the per-domain
    score is the mean of the ``k`` smallest cosine distances ``1 − cos(z, b)``; the final score is
    the minimum over domains. Scoring each domain separately keeps a large source bank from
    crowding out the few target-domain neighbours (DCASE target domains have ~10 clips), and the
    minimum says "normal if it looks like the normals of *any* domain".

    If a domain has fewer than ``k`` embeddings all of them are used (mean over ``N_d``); that
    keeps a searched ``k`` usable with tiny target banks. Rows of ``z`` are processed in chunks of
    ``chunk_size`` so the ``(B, N_d)`` distance matrix stays bounded in memory.
    """
    check_embeddings("z", z)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    if not isinstance(bank_by_domain, Mapping) or len(bank_by_domain) == 0:
        raise ValueError("bank_by_domain: expected a non-empty dict of domain -> (N, E) embeddings")
    banks = []
    for name, bank in bank_by_domain.items():
        check_embeddings(f"bank_by_domain[{name!r}]", bank)
        if bank.shape[0] == 0 or bank.shape[1] != z.shape[1]:
            raise ValueError(
                f"bank_by_domain[{name!r}]: expected shape (N >= 1, {z.shape[1]}), "
                f"got {tuple(bank.shape)}"
            )
        # Normalise once per bank; then a matrix product gives all cosines.
        banks.append(F.normalize(bank.to(device=z.device, dtype=z.dtype), dim=1, eps=DIRECTION_EPS))
    zn = F.normalize(z, dim=1, eps=DIRECTION_EPS)
    out = []
    for start in range(0, zn.shape[0], chunk_size):
        zc = zn[start : start + chunk_size]
        per_domain = []
        for bank in banks:
            dist = 1.0 - zc @ bank.T  # (chunk, N_d)
            kk = min(k, bank.shape[0])
            per_domain.append(torch.topk(dist, kk, dim=1, largest=False).values.mean(dim=1))
        out.append(torch.stack(per_domain, dim=1).min(dim=1).values)
    if not out:
        return z.new_zeros((0,))
    return torch.cat(out)


def embedding_scores(z: Tensor, method: str, center: Tensor | None = None,
                     bank: Mapping[str, Tensor] | None = None, k: int = 1) -> Tensor:
    """The anomaly score of embeddings ``z`` by ``method`` ("cosine" or "knn"); one path for the
    trainer's validation and for the deployed model, so the two can never disagree."""
    if method == "knn":
        if bank is None:
            raise ValueError("knn score: no reference bank of training embeddings")
        return knn_cosine_score(z, bank, k=k)
    if method == "cosine":
        if center is None:
            raise ValueError("cosine score: no centre")
        return cosine_anomaly_score(z, center)
    raise ValueError(f"unknown embedding score {method!r} (cosine, knn)")


def autoencoder_scores(errors: Tensor, method: str, mahalanobis=None) -> Tensor:
    """The DCASE AE's clip score from per-clip reconstruction errors: mean squared error ("mse"), or
    the Mahalanobis distance to the training errors, min over domains ("mahalanobis")."""
    from models import mahalanobis_scores, mse_scores

    if method == "mahalanobis" and mahalanobis is not None:
        return mahalanobis_scores(errors, mahalanobis)
    return mse_scores(errors)

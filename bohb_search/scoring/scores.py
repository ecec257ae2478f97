"""The elementary anomaly scores: ``1 − cos(ẑ, c)`` to the centre (the paper's, the per-sample normal term
of eq. 9) and the DCASE AE's two scores of reconstruction errors. The k-NN banks are in :mod:`.banks`."""

from __future__ import annotations

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


def autoencoder_scores(errors: Tensor, method: str, mahalanobis=None) -> Tensor:
    """The DCASE AE's clip score from per-clip reconstruction errors: mean squared error ("mse"), or
    the Mahalanobis distance to the training errors, min over domains ("mahalanobis")."""
    from models import mahalanobis_scores, mse_scores

    if method == "mahalanobis" and mahalanobis is not None:
        return mahalanobis_scores(errors, mahalanobis)
    return mse_scores(errors)

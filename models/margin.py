"""Angular-margin classification heads on embeddings (the discriminative fine-tuning objective).

Both heads compare the L2-normalised embedding with L2-normalised class centres and return
log-probabilities over classes; the loss (soft labels, class weights) is computed by the caller.

* :class:`SubClusterAdaCos` (Wilkinghoff, "Sub-cluster AdaCos", IJCNN 2021; the DCASE 2023-2025 systems
  of ssl4asd and the ASD toolkit): ``n_subclusters`` centres per class, **fixed** at initialisation
  (Xavier-uniform from a seeded generator, so the classes stay spread and cannot collapse onto each
  other), a softmax over all C·K cosines scaled by ``s``, summed over each class's K centres
  (``logsumexp`` per class minus ``logsumexp`` over all: no probability underflows to 0). The scale
  starts at √2·ln(C·K − 1) (AdaCos's fixed scale). With ``dynamic_scale`` it follows the AdaCos rule,
  B_avg over the *non-target* logits and the median angle to the closest target centre, clamped to
  [1, 2·s₀]: the variant of the reference code that keeps the target logits inside B_avg grows without
  bound once the target cosines exceed 1/√2, so it is not used.
* :class:`ArcFace` (Deng et al., CVPR 2019): one trainable centre per class, the additive angular margin
  ``m`` on the target class only (cos(θ + m), with the usual fallback cos θ − m·sin m beyond π − m),
  fixed scale ``s``. With soft (mixup) labels the margin is applied to every class in proportion to
  its label weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-7


class SubClusterAdaCos(nn.Module):
    def __init__(self, emb_dim: int, n_classes: int, n_subclusters: int = 16, dynamic_scale: bool = False,
                 seed: int = 0):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"sub-cluster AdaCos needs at least 2 classes, got {n_classes}")
        if n_subclusters < 1:
            raise ValueError(f"n_subclusters must be >= 1, got {n_subclusters}")
        self.n_classes, self.n_sub, self.dynamic = n_classes, n_subclusters, dynamic_scale
        centres = torch.empty(n_classes * n_subclusters, emb_dim)
        nn.init.xavier_uniform_(centres, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("centres", centres)  # fixed: a buffer, never seen by the optimiser
        s0 = math.sqrt(2.0) * math.log(max(n_classes * n_subclusters - 1, 2))
        self.register_buffer("scale", torch.tensor(s0))
        self.s_max = 2.0 * s0

    def cosines(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, K) cosines of the embeddings to every sub-cluster centre."""
        cos = F.normalize(z.float(), dim=1) @ F.normalize(self.centres, dim=1).T
        return cos.clamp(-1 + _EPS, 1 - _EPS).view(-1, self.n_classes, self.n_sub)

    def forward(self, z: torch.Tensor, y_soft: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C) log-probabilities; in training with ``dynamic_scale`` the scale is updated first."""
        cos = self.cosines(z)
        if self.training and self.dynamic and y_soft is not None:
            self._update_scale(cos.detach(), y_soft)
        logits = self.scale * cos
        return torch.logsumexp(logits, dim=2) - torch.logsumexp(logits.flatten(1), dim=1, keepdim=True)

    @torch.no_grad()
    def _update_scale(self, cos: torch.Tensor, y_soft: torch.Tensor) -> None:
        theta_best = torch.acos(cos).min(dim=2).values  # (B, C): angle to each class's closest centre
        theta_target = (y_soft * theta_best).sum(dim=1)
        nontarget = (y_soft == 0).unsqueeze(2).expand_as(cos)
        logits = (self.scale * cos).masked_fill(~nontarget, -float("inf"))
        ln_bavg = torch.logsumexp(torch.logsumexp(logits.flatten(1), dim=1), dim=0) - math.log(cos.shape[0])
        s_new = ln_bavg / math.cos(min(math.pi / 4, float(theta_target.median())))
        if math.isfinite(float(s_new)):
            self.scale.fill_(float(s_new.clamp(1.0, self.s_max)))


class ArcFace(nn.Module):
    def __init__(self, emb_dim: int, n_classes: int, margin: float = 0.5, scale: float = 30.0, seed: int = 0):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"ArcFace needs at least 2 classes, got {n_classes}")
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace margin must be in [0, π/2), got {margin}")
        centres = torch.empty(n_classes, emb_dim)
        nn.init.xavier_uniform_(centres, generator=torch.Generator().manual_seed(seed))
        self.centres = nn.Parameter(centres)
        self.margin, self.s = margin, float(scale)

    def forward(self, z: torch.Tensor, y_soft: torch.Tensor | None = None) -> torch.Tensor:
        cos = (F.normalize(z.float(), dim=1) @ F.normalize(self.centres, dim=1).T).clamp(-1 + _EPS, 1 - _EPS)
        if self.training and y_soft is not None and self.margin > 0:
            m = self.margin
            with_margin = torch.where(cos > math.cos(math.pi - m), torch.cos(torch.acos(cos) + m),
                                      cos - m * math.sin(m))
            cos = cos + y_soft * (with_margin - cos)
        return torch.log_softmax(self.s * cos, dim=1)

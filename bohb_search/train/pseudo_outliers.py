"""Pseudo outliers for pseudo outlier exposure (pOE, paper section 2.5, eq. 9): the batch mix.

Two sources, mixed by :class:`~bohb_search.train.perturbations.PseudoOutlierConfig`: normal clips of
other machine types (a pool passed in by the caller), and the machine's own normals with one of the
log-mel perturbations of :mod:`bohb_search.train.perturbations` applied. No test audio is ever used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .perturbations import ALL_KINDS, PERTURBATIONS, PseudoOutlierConfig, check_generator, check_logmel, randint

__all__ = ["ALL_KINDS", "OTHER_MACHINE", "PERTURBATIONS", "PseudoOutlierConfig", "make_pseudo_outliers"]

OTHER_MACHINE = "other_machine"  # kind label of outliers taken from the other-machine pool


def _balanced_draw(gen: torch.Generator, count: int, n_items: int) -> Tensor:
    """``count`` indices into ``n_items``, each used equally often (±1), in random order."""
    reps = -(-count // n_items)  # ceil
    perms = [torch.randperm(n_items, generator=gen, device=gen.device) for _ in range(reps)]
    return torch.cat(perms)[:count].cpu()


def _crop_or_wrap(pool: Tensor, idx: Tensor, t: int, gen: torch.Generator) -> Tensor:
    """Clips ``pool[idx]`` cut to ``t`` frames: a random window if longer, wrapped if shorter."""
    t_pool = pool.shape[2]
    max_start = t_pool - t if t_pool >= t else t_pool - 1
    start = randint(gen, (idx.shape[0],), 0, max_start, "cpu")
    frames = (start.unsqueeze(1) + torch.arange(t).unsqueeze(0)) % t_pool  # (k, t)
    picked = pool[idx.to(pool.device)]
    frames = frames.to(pool.device).unsqueeze(1).expand(-1, pool.shape[1], -1)
    return picked.gather(2, frames)


def make_pseudo_outliers(
    normals: Tensor,
    generator: torch.Generator,
    cfg: PseudoOutlierConfig | None = None,
    other_pool: Tensor | None = None,
) -> tuple[Tensor, list[str]]:
    """Pseudo outliers for one batch of normal log-mels.

    Args:
        normals: ``(B, n_mels, T)`` log-mels (dB) of the machine's normal clips in this batch.
        generator: the only source of randomness (its state is saved/restored by the trainer).
        cfg: mix and strengths; ``None`` uses the defaults.
        other_pool: optional ``(P, n_mels, T')`` normal log-mels of *other* machine types or
            sections (never test audio). Clips longer than ``T`` are cropped at a random offset,
            shorter ones wrapped around.

    Returns ``(outliers, kinds)``: ``round(ratio·B)`` outliers (halves round up) with ``normals``'
    dtype and device, and for each its kind (``"other_machine"`` or a perturbation name).
    Exactly ``round(other_machine_share·N)`` come from the pool when one is given and non-empty
    (fixed counts keep every batch's composition the same); the rest are perturbed normals, each
    normal used equally often and each kind equally often (±1). Pool outliers come first.
    """
    cfg = PseudoOutlierConfig() if cfg is None else cfg
    if not isinstance(cfg, PseudoOutlierConfig):
        raise ValueError(f"cfg: expected a PseudoOutlierConfig, got {type(cfg).__name__}")
    check_logmel("normals", normals)
    check_generator(generator)
    b, n_mels, t = normals.shape
    n_total = int(math.floor(cfg.ratio * b + 0.5))
    if other_pool is not None:
        if (
            not isinstance(other_pool, Tensor)
            or other_pool.dim() != 3
            or not other_pool.is_floating_point()
        ):
            raise ValueError("other_pool: expected a float tensor of shape (P, n_mels, T')")
        if other_pool.shape[1] != n_mels:
            raise ValueError(
                f"other_pool: has {other_pool.shape[1]} mel bins, normals have {n_mels}"
            )
    has_pool = other_pool is not None and other_pool.shape[0] > 0
    n_other = int(math.floor(cfg.other_machine_share * n_total + 0.5)) if has_pool else 0
    n_pert = n_total - n_other
    kinds = cfg.kinds
    if n_pert > 0 and not kinds:
        raise ValueError("kinds: empty, so outliers can only come from other_pool, and none was given")

    pieces: list[Tensor] = []
    labels: list[str] = []
    if n_other > 0:
        idx = randint(generator, (n_other,), 0, other_pool.shape[0] - 1, "cpu")
        picked = _crop_or_wrap(other_pool, idx, t, generator)
        pieces.append(picked.to(device=normals.device, dtype=normals.dtype))
        labels += [OTHER_MACHINE] * n_other
    if n_pert > 0:
        src = _balanced_draw(generator, n_pert, b)
        kind_idx = _balanced_draw(generator, n_pert, len(kinds))
        perturbed = torch.empty((n_pert, n_mels, t), dtype=normals.dtype, device=normals.device)
        for k, name in enumerate(kinds):
            slots = (kind_idx == k).nonzero().flatten()
            if slots.numel() == 0:
                continue
            chosen = normals[src[slots].to(normals.device)]
            perturbed[slots.to(normals.device)] = PERTURBATIONS[name](chosen, generator, cfg)
        pieces.append(perturbed)
        labels += [kinds[int(k)] for k in kind_idx]
    if not pieces:
        return normals.new_empty((0, n_mels, t)), []
    return torch.cat(pieces), labels

"""Pooling over time of per-band (or per-channel) sequences: the statistics of the no-training yardstick
(``baseline --kind stats``) and of the encoder's statistics pooling (``EncoderConfig.pool = "stats"``).

    mean / std      what a band does on average and how much it varies (the classic DCASE probe)
    max             the loudest moment of each band: a click, a knock, a valve's hard closing
    twfr (GWRP)     global weighted ranking pooling of TWFR-GMM (Guan et al., DCASE 2022): the frames of
                    each band sorted from the largest down and averaged with weights r⁰, r¹, r², …
                    (normalised); r = 1 is the mean, r = 0 the max, in between a soft top-k

Averaging over time discards exactly what many machine faults are: short events. DCASE 2023 ``valve``
(first-shot split, BENCHMARKS "detection") is the measured case: per-band mean/std scores at chance, the
per-band max detects.
"""

from __future__ import annotations

import torch
from torch import Tensor

# pooling name -> the statistics it concatenates, in this order
STAT_POOLINGS: dict[str, tuple[str, ...]] = {
    "meanstd": ("mean", "std"),
    "max": ("max",),
    "meanstd_max": ("mean", "std", "max"),
    "twfr": ("twfr",),
}


def gwrp(x: Tensor, r: float, dim: int = -1) -> Tensor:
    """Global weighted ranking pooling along ``dim``: Σᵢ rⁱ x₍ᵢ₎ / Σᵢ rⁱ over the values sorted descending.

    r = 1 is the mean, r = 0 the max (0⁰ = 1). The weights come from the sorted order, so the pooling is
    blind to *when* an event happens, as mean and max are."""
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"twfr_r must be in [0, 1], got {r}")
    n = x.shape[dim]
    w = torch.pow(torch.full((n,), float(r), dtype=x.dtype, device=x.device), torch.arange(n, device=x.device))
    w = w / w.sum()
    ranked = x.sort(dim=dim, descending=True).values
    shape = [1] * x.dim()
    shape[dim] = n
    return (ranked * w.view(shape)).sum(dim=dim)


def time_statistics(x: Tensor, pooling: str, twfr_r: float = 0.9, dim: int = -1) -> Tensor:
    """(…, T) → (…, k): the statistics of ``pooling`` over the time axis ``dim``, stacked on a new last axis
    (k = 1, 2 or 3). float32 math whatever the input's dtype (float16 caches)."""
    if pooling not in STAT_POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(STAT_POOLINGS)}, got {pooling!r}")
    x = x.float()
    parts = {
        "mean": lambda: x.mean(dim=dim),
        "std": lambda: x.std(dim=dim, unbiased=False),
        "max": lambda: x.amax(dim=dim),
        "twfr": lambda: gwrp(x, twfr_r, dim=dim),
    }
    return torch.stack([parts[name]() for name in STAT_POOLINGS[pooling]], dim=-1)


def band_statistics(features: Tensor, pooling: str, twfr_r: float = 0.9) -> Tensor:
    """(B, n_mels, T) log-mel → (B, k·n_mels): every band's statistics over time, statistic-major
    (all bands' means, then all stds, …), the embedding of the statistics yardstick."""
    if features.dim() != 3:
        raise ValueError(f"expected a (batch, mels, frames) log-mel, got shape {tuple(features.shape)}")
    return time_statistics(features, pooling, twfr_r).transpose(1, 2).flatten(1)

"""The decision rule of the deployed model: a clip is anomalous when its score is above the machine's
threshold, fitted on training-clip scores as the DCASE baseline does."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.stats


def fit_gamma_threshold(train_scores: Any, percentile: float = 0.9) -> float:
    """Decision threshold as in the DCASE baseline: fit a gamma distribution (shape, loc and scale
    all free, ``scipy.stats.gamma.fit``) to the anomaly scores of the *training* clips and return
    its ``percentile`` quantile (``ppf``).  A clip is then "anomalous" when its score is above it."""
    try:
        p = float(percentile)
    except (TypeError, ValueError):
        raise ValueError(f"percentile must be a number in (0, 1), got {percentile!r}") from None
    if not (0.0 < p < 1.0):
        raise ValueError(f"percentile must be in (0, 1) (0.9 = DCASE baseline), got {percentile!r}")
    arr = np.asarray(train_scores)
    if arr.ndim != 1:
        raise ValueError(f"train_scores must be one-dimensional, got shape {arr.shape}")
    try:
        x = arr.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"train_scores must be numeric, got dtype {arr.dtype}") from None
    if x.size < 2:
        raise ValueError(f"train_scores needs at least 2 scores to fit a gamma distribution, got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError(f"train_scores has {int((~np.isfinite(x)).sum())} non-finite value(s) (NaN/inf)")
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        raise ValueError(f"train_scores are all equal ({lo!r}); a gamma distribution cannot be fitted")
    # The gamma distribution lives on (loc, inf).  The DCASE baseline's scores (reconstruction
    # errors) are positive, but ours need not be (negated similarities, log-likelihood ratios, ...).
    # scipy's maximum-likelihood fit starts from a moment-based guess and a data point at or
    # below the current loc makes the likelihood -inf, so the optimiser is far better behaved on
    # strictly positive data.  A pure translation does not change the fitted shape or scale
    # (the MLE is translation-equivariant: loc simply moves with the data), so we shift the scores
    # to a small positive minimum, fit, and shift the quantile back into the original units.
    shift = 0.0
    if lo <= 0.0:
        shift = -lo + 0.01 * (hi - lo)
    a, loc, scale = scipy.stats.gamma.fit(x + shift)
    threshold = float(scipy.stats.gamma.ppf(p, a, loc=loc, scale=scale)) - shift
    if not math.isfinite(threshold):
        raise ValueError(
            f"train_scores: the gamma fit (shape={a:.4g}, loc={loc:.4g}, scale={scale:.4g}) "
            f"gives a non-finite threshold at percentile {p}"
        )
    return threshold

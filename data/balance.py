"""Domain-balanced training sets (paper section 3.1).

DCASE 2025 gives 990 source and only 10 target normal clips per machine. Fine-tuning on that mix
would let the source domain dominate every batch, so target clips are oversampled (repeated,
cycling through all of them before any repeats twice) until they match the source count. The
generalized model pools the individually balanced sets of every machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def balance_domains(df: pd.DataFrame, seed: int = 0, target_ratio: float = 1.0) -> np.ndarray:
    """Row positions (into ``df``) of a domain-balanced set for ONE machine/section group.

    Every source clip appears once; target clips are repeated until there are
    ``round(target_ratio * n_source)`` of them. Order is shuffled deterministically by ``seed``.
    """
    if target_ratio <= 0:
        raise ValueError(f"target_ratio must be > 0, got {target_ratio}")
    pos = np.arange(len(df))
    domain = df["domain"].to_numpy()
    src = pos[domain == "source"]
    tgt = pos[domain == "target"]
    rng = np.random.default_rng(seed)
    if len(tgt) == 0 or len(src) == 0:
        out = pos.copy()  # nothing to balance against
    else:
        want = max(len(tgt), int(round(target_ratio * len(src))))
        # cycle through shuffled target clips so each is used ⌊want/len⌋ or ⌈want/len⌉ times
        reps = -(-want // len(tgt))
        cycled = np.concatenate([rng.permutation(tgt) for _ in range(reps)])[:want]
        out = np.concatenate([src, cycled])
    return rng.permutation(out)


def balanced_training_set(
    manifest: pd.DataFrame,
    machines: list[str] | None = None,
    seed: int = 0,
    target_ratio: float = 1.0,
) -> pd.DataFrame:
    """Normal training clips of ``machines`` (all if None), domain-balanced per machine and section.

    Returns a DataFrame of manifest rows (repeats included) with a fresh 0..N-1 index and a
    ``source_row`` column pointing back into ``manifest``; for several machines the per-machine
    balanced sets are pooled (the generalized model's training set).
    """
    train = manifest[(manifest["split"] == "train") & (manifest["label"] == "normal")]
    if machines is not None:
        missing = sorted(set(machines) - set(train["machine"]))
        if missing:
            raise ValueError(f"machines: no normal training clips for {', '.join(missing)}")
        train = train[train["machine"].isin(machines)]
    if train.empty:
        raise ValueError("manifest: no normal training clips to balance")
    parts = []
    for i, (_, group) in enumerate(train.groupby(["machine", "section"], sort=True)):
        idx = balance_domains(group, seed=seed + i, target_ratio=target_ratio)
        parts.append(group.iloc[idx].assign(source_row=group.index.to_numpy()[idx]))
    return pd.concat(parts, ignore_index=True)

"""A first-shot training split carved out of a labelled test set: a real-data benchmark where no training
clips exist (the DCASE 2023 ``valve`` test set in ``shared/data/dcase2023_valve`` is one).

    first_shot_training_mask(manifest, n_source=30, n_target=5)  -> which test normals become training clips
    write_first_shot_tree(src, out, n_source=30, n_target=5)     -> a DCASE tree every command reads as is

The choice is fixed by the file names alone (no seed, no file order, nothing else in the folder): per
machine × section × domain, the normal clips are grouped by their attributes (for valve: the open/close
pattern), each group is ordered by the SHA-1 of the file name, and the groups are taken in turn (round
robin, groups in name order) until ``n_source`` (source) or ``n_target`` (target) clips are chosen, so
every pattern of a domain is represented as evenly as the counts allow. Everything else stays a test
clip, and the validation / report halves of those are cut by :func:`data.datasets.split_test_clips`
exactly as for any other data set.

The tree holds symbolic links, never copies: ``<machine>/train/section_SS_<domain>_train_normal_NNNN_<attrs>.wav``
for the chosen clips (renamed, so the manifest reads them as training clips) and ``<machine>/test/<same
name>`` for the rest, with ``first_shot_split.csv`` (new name → original file) beside them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_write_csv
from .manifest import read_manifest

SPLIT_FILE = "first_shot_split.csv"


class FirstShotError(ValueError):
    """A first-shot split that cannot be made (too few normals, no labels, an occupied output); one line."""


def _sha1(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def first_shot_training_mask(manifest: pd.DataFrame, n_source: int = 30, n_target: int = 5) -> np.ndarray:
    """True for the labelled test normals that become training clips (see the module docstring)."""
    for name, n in (("n_source", n_source), ("n_target", n_target)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise FirstShotError(f"{name} must be a non-negative integer, got {n!r}")
    chosen = np.zeros(len(manifest), dtype=bool)
    normals = manifest[(manifest["split"] == "test") & (manifest["label"] == "normal")]
    for (machine, section, domain), rows in normals.groupby(["machine", "section", "domain"], sort=True):
        want = {"source": n_source, "target": n_target}.get(domain, 0)
        if want == 0:
            continue
        if want >= len(rows):
            raise FirstShotError(
                f"{machine} section {section} {domain}: {len(rows)} normal test clips, cannot take {want} for "
                f"training and keep any for the test split")
        groups = [g.index[np.argsort(g["file"].map(_sha1).to_numpy(), kind="stable")].tolist()
                  for _, g in rows.groupby(rows["attributes"].fillna("").astype(str), sort=True)]
        order = [i for turn in range(max(map(len, groups))) for g in groups if turn < len(g) for i in [g[turn]]]
        chosen[manifest.index.get_indexer(order[:want])] = True
    return chosen


def _training_name(row: pd.Series, index: int) -> str:
    attrs = f"_{row['attributes']}" if isinstance(row["attributes"], str) and row["attributes"] else ""
    return f"section_{int(row['section']):02d}_{row['domain']}_train_normal_{index:04d}{attrs}.wav"


def first_shot_table(src: str | Path, n_source: int = 30, n_target: int = 5) -> pd.DataFrame:
    """One row per clip of ``src``: machine, split (train/test), the name in the new tree, the original path."""
    manifest = read_manifest(src)
    labelled = manifest[manifest["split"] == "test"]
    if labelled.empty or not labelled["label"].isin(["normal"]).any():
        raise FirstShotError(f"{src}: no labelled normal test clips to carve a training split from")
    manifest = labelled.reset_index(drop=True)
    train = first_shot_training_mask(manifest, n_source, n_target)
    rows = []
    counters: dict[tuple, int] = {}
    for i, row in manifest.iterrows():
        if train[i]:
            key = (row["machine"], row["section"], row["domain"])
            counters[key] = counters.get(key, -1) + 1
            name, split = _training_name(row, counters[key]), "train"
        else:
            name, split = row["file"], "test"
        rows.append({"machine": row["machine"], "split": split, "file": name,
                     "original": str(Path(row["path"]).resolve())})
    return pd.DataFrame(rows)


def write_first_shot_tree(src: str | Path, out: str | Path, n_source: int = 30, n_target: int = 5) -> pd.DataFrame:
    """Write the split as a tree of symbolic links under ``out`` (atomically: a finished tree or none).

    An existing ``out`` holding the same split is reused as it is; any other existing ``out`` is refused.
    """
    out = Path(out)
    table = first_shot_table(src, n_source, n_target)
    if out.exists():
        previous = out / SPLIT_FILE
        if previous.is_file() and pd.read_csv(previous).equals(table):
            return table
        raise FirstShotError(f"{out}: exists and holds something else than this split; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for row in table.itertuples():
            link = tmp / row.machine / row.split / row.file
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(row.original, link)
        atomic_write_csv(table, tmp / SPLIT_FILE)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return table

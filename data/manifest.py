"""DCASE Task 2 layout reader: a folder of clips → one pandas DataFrame (the manifest).

Every naming scheme DCASE has used is recognised from the file name alone:

=========  ==================================================================  ==========================
naming     file name                                                           domain / label
=========  ==================================================================  ==========================
dcase2020  ``{normal,anomaly}_id_NN_NNNNNNNN.wav``                              source / from name
dcase2021  ``section_NN_{source,target}_{train,test}_{normal,anomaly}_NNNN.wav``  from name / from name
dcase2022+ same, followed by ``_<attributes>`` (2022: ``A1Spd28VMic1``;          from name / from name
           2023–2025: ``key_value`` pairs such as ``car_C2_spd_34V_mic_1``)
eval       ``section_NN_test_NNNN.wav`` (DCASE evaluation sets)                  ground truth or unknown
=========  ==================================================================  ==========================

The machine type is the folder above the split folder (``train``, ``test`` or ``supplemental``), so the
layouts DCASE distributes — ``<root>/<machine>/<split>/``, ``dev_data/raw/<machine>/<split>/`` and
year-prefixed trees such as ``dcase2023/<machine>/<split>/`` — are all found by one recursive walk.
``attributes_00.csv`` files (DCASE 2023+) next to the split folders fill in attributes, and
ground-truth CSVs (``ground_truth_<machine>_section_NN_test.csv`` with ``file,label`` rows, and
``ground_truth_domain`` files with ``file,domain`` rows) label evaluation clips when present.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

SPLIT_DIRS = ("train", "test", "supplemental")
LABELS = ("normal", "anomaly", "unknown")
DOMAINS = ("source", "target")

MANIFEST_COLUMNS = [
    "path", "file", "machine", "section", "domain", "split", "label", "index",
    "attributes", "attrs", "naming", "year",
]

# section_00_source_train_normal_0000[_attrs].wav ; split also "supplemental", label any lower-case word
_RE_SECTION = re.compile(
    r"^section_(?P<section>\d+)_(?P<domain>source|target)_(?P<split>train|test|supplemental)_"
    r"(?P<label>[a-z]+)_(?P<index>\d+)(?:_(?P<attrs>.+))?$"
)
_RE_EVAL = re.compile(r"^section_(?P<section>\d+)_test_(?P<index>\d+)$")
_RE_2020 = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<section>\d+)_(?P<index>\d+)$")
_RE_YEAR = re.compile(r"(?:dcase)?(20[12]\d)", re.I)


class ManifestError(ValueError):
    """A file or folder that does not fit any DCASE layout; the message names it."""


def parse_attributes(attrs: str | None) -> dict[str, str]:
    """``car_C2_spd_34V_mic_1`` → ``{'car': 'C2', 'spd': '34V', 'mic': '1'}``.

    DCASE 2022 used packed strings like ``A1Spd28VMic1`` that have no key/value separator; those
    keep only the raw string (``attributes`` column) and give an empty dict.
    """
    if not attrs:
        return {}
    parts = attrs.split("_")
    if len(parts) % 2:
        return {}
    return {parts[i]: parts[i + 1] for i in range(0, len(parts), 2)}


def parse_clip_name(path: str | Path, split_hint: str | None = None) -> dict:
    """Parse one file name. Raises :class:`ManifestError` naming the file if no scheme matches."""
    p = Path(path)
    stem = p.stem
    m = _RE_SECTION.match(stem)
    if m:
        attrs = m.group("attrs") or ""
        return {
            "section": int(m.group("section")),
            "domain": m.group("domain"),
            "split": m.group("split"),
            "label": m.group("label"),
            "index": int(m.group("index")),
            "attributes": attrs,
            "attrs": parse_attributes(attrs),
            "naming": "dcase2022+" if attrs else "dcase2021",
        }
    m = _RE_EVAL.match(stem)
    if m:
        return {
            "section": int(m.group("section")),
            "domain": "unknown",
            "split": "test",
            "label": "unknown",
            "index": int(m.group("index")),
            "attributes": "",
            "attrs": {},
            "naming": "eval",
        }
    m = _RE_2020.match(stem)
    if m:
        # DCASE 2020 has no domains; its machine IDs play the role of sections
        return {
            "section": int(m.group("section")),
            "domain": "source",
            "split": split_hint or "test",
            "label": m.group("label"),
            "index": int(m.group("index")),
            "attributes": "",
            "attrs": {},
            "naming": "dcase2020",
        }
    raise ManifestError(f"{p}: file name matches no DCASE naming scheme (e.g. section_00_source_train_normal_0000_<attrs>.wav)")


def _year_of(parts: tuple[str, ...]) -> int | None:
    for part in parts:
        m = _RE_YEAR.fullmatch(part)
        if m:
            return int(m.group(1))
    return None


def _read_attributes_csv(csv_path: Path) -> dict[str, dict[str, str]]:
    """``attributes_00.csv``: ``file_name,d1p,d1v,d2p,d2v,…`` → {basename: {d1p-value: d1v-value, …}}."""
    out: dict[str, dict[str, str]] = {}
    with open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0].strip() != "file_name":
            raise ManifestError(f"{csv_path}: expected a header starting with 'file_name'")
        for row in reader:
            if not row:
                continue
            pairs = row[1:]
            attrs = {}
            for i in range(0, len(pairs) - 1, 2):
                if pairs[i] and pairs[i] != "noAttribute":
                    attrs[pairs[i]] = pairs[i + 1]
            out[Path(row[0]).name] = attrs
    return out


def _read_ground_truth(root: Path) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """Ground-truth CSVs (DCASE evaluator layout) → {(machine, file): label}, {(machine, file): domain}."""
    labels: dict[tuple[str, str], str] = {}
    domains: dict[tuple[str, str], str] = {}
    for f in root.rglob("ground_truth_*.csv"):
        m = re.match(r"ground_truth_(?P<machine>.+)_section_\d+_test\.csv$", f.name)
        if not m:
            continue
        machine = m.group("machine")
        is_domain = "domain" in f.parent.name or "domain" in f.name
        with open(f, newline="") as fh:
            for row in csv.reader(fh):
                if len(row) < 2 or not row[0].endswith(".wav"):
                    continue
                value = row[1].strip()
                key = (machine, Path(row[0]).name)
                if is_domain:
                    domains[key] = {"0": "source", "1": "target"}.get(value, value)
                else:
                    labels[key] = {"0": "normal", "1": "anomaly"}.get(value, value)
    return labels, domains


def read_manifest(root: str | Path, strict: bool = False) -> pd.DataFrame:
    """Walk ``root`` and return one row per clip (columns :data:`MANIFEST_COLUMNS`).

    Files whose names match no scheme raise :class:`ManifestError` when ``strict``; otherwise they
    are listed in ``df.attrs['unparsed']`` (a list of one-line reasons) and left out.
    """
    root = Path(root)
    if not root.exists():
        raise ManifestError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise ManifestError(f"{root}: not a folder")
    rows: list[dict] = []
    unparsed: list[str] = []
    attr_tables: dict[Path, dict[str, dict[str, str]]] = {}
    gt_labels, gt_domains = _read_ground_truth(root)
    for wav in sorted(root.rglob("*")):
        if wav.suffix.lower() != ".wav":
            continue
        if wav.is_symlink() and not wav.exists():  # dangling, or a loop: say so instead of losing the clip quietly
            unparsed.append(f"{wav}: symbolic link to nothing (dangling or looping)")
            continue
        if not wav.is_file():
            continue
        split_dir = wav.parent
        if split_dir.name not in SPLIT_DIRS:
            msg = f"{wav}: not inside a train/, test/ or supplemental/ folder"
            if strict:
                raise ManifestError(msg)
            unparsed.append(msg)
            continue
        machine_dir = split_dir.parent
        try:
            info = parse_clip_name(wav, split_hint=split_dir.name)
        except ManifestError as err:
            if strict:
                raise
            unparsed.append(str(err))
            continue
        machine = machine_dir.name
        if info["naming"] == "eval":
            key = (machine, wav.name)
            info["label"] = gt_labels.get(key, "unknown")
            info["domain"] = gt_domains.get(key, "unknown")
        if machine_dir not in attr_tables:
            tables: dict[str, dict[str, str]] = {}
            for csv_path in sorted(machine_dir.glob("attributes_*.csv")):
                tables.update(_read_attributes_csv(csv_path))
            attr_tables[machine_dir] = tables
        extra = attr_tables[machine_dir].get(wav.name)
        if extra:
            info["attrs"] = {**info["attrs"], **extra}
        rel_parts = wav.relative_to(root).parts
        rows.append(
            {
                "path": str(wav),
                "file": wav.name,
                "machine": machine,
                **info,
                "year": _year_of(rel_parts) or _year_of(root.resolve().parts),
            }
        )
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df["year"] = df["year"].astype("Int64")
    df.attrs["unparsed"] = unparsed
    df.attrs["root"] = str(root)
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Counts by machine × domain × split × label (the ``data summary`` table)."""
    if df.empty:
        return pd.DataFrame(columns=["machine", "domain", "split", "label", "clips"])
    return (
        df.groupby(["machine", "domain", "split", "label"], sort=True)
        .size()
        .rename("clips")
        .reset_index()
    )


def empty_machine_dirs(root: str | Path) -> list[Path]:
    """Machine folders that hold no clip at all — worth a warning, since a typo'd or half-copied
    machine would otherwise silently drop out of training.

    A machine folder is one holding a split folder, or any sibling of such a folder (an empty
    ``pump/`` next to ``fan/train/`` is a machine folder with nothing in it).
    """
    root = Path(root)
    machine_dirs = {d.parent for d in root.rglob("*") if d.is_dir() and d.name in SPLIT_DIRS}
    candidates = set(machine_dirs)
    for parent in {m.parent for m in machine_dirs}:
        candidates.update(c for c in parent.iterdir()
                          if c.is_dir() and not c.name.startswith((".", "ground_truth")))
    return sorted(d for d in candidates if not any(d.rglob("*.wav")) and d.name not in SPLIT_DIRS)

"""Synthetic DCASE-format machine sounds: layout, file format, determinism, difficulty, validation.

Everything is written to real WAV files and read back with soundfile; log-mels come from the
project's own front end (data.features). Sets are small (1–2 s clips) so the file runs in well
under a minute on two shared cores.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from sklearn.metrics import roc_auc_score

from data import synth
from data.audio import AudioConfig
from data.features import FeatureConfig, LogMelExtractor
from data.synth import ANOMALY_KINDS, ATTRIBUTE_VALUES, DEV_MACHINES, SynthConfig, render_clip, synthesize

NAME_RE = re.compile(
    r"^section_00_(?P<domain>source|target)_(?P<split>train|test)_(?P<label>normal|anomaly)_(?P<index>\d{4})_(?P<attrs>.+)\.wav$"
)

SMALL = SynthConfig(train_source=3, train_target=2, test_per_cell=2, seconds=1.0, toy_seconds=1.25, seed=3)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_small")
    df = synthesize(out, SMALL, workers=1, progress=False)
    return out, df


def _bytes_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ layout and file format


def test_layout_names_counts_and_wav_format(small_set):
    out, df = small_set
    assert len(df) == len(DEV_MACHINES) * SMALL.clips_per_machine
    assert set(df.columns) >= {"path", "machine", "domain", "split", "label", "attributes", "anomaly_kind"}
    for machine in DEV_MACHINES:
        mdir = out / machine
        assert sorted(p.name for p in mdir.iterdir()) == ["attributes_00.csv", "test", "train"]
        names = {"train": sorted(p.name for p in (mdir / "train").iterdir()), "test": sorted(p.name for p in (mdir / "test").iterdir())}
        counts: dict[tuple, list[int]] = {}
        for split, files in names.items():
            for name in files:
                m = NAME_RE.match(name)
                assert m, f"bad file name {machine}/{split}/{name}"
                assert m["split"] == split
                if split == "train":
                    assert m["label"] == "normal"
                key = (m["split"], m["domain"], m["label"])
                counts.setdefault(key, []).append(int(m["index"]))
                # attributes are key_value pairs from the domain's value table, keys in fixed order
                tokens = m["attrs"].split("_")
                pairs = dict(zip(tokens[::2], tokens[1::2]))
                table = ATTRIBUTE_VALUES[machine][m["domain"]]
                assert list(pairs) == list(table), name
                assert all(pairs[k] in table[k] for k in pairs), name
        expected = {
            ("train", "source", "normal"): SMALL.train_source,
            ("train", "target", "normal"): SMALL.train_target,
            **{("test", d, lab): SMALL.test_per_cell for d in ("source", "target") for lab in ("normal", "anomaly")},
        }
        assert {k: sorted(v) for k, v in counts.items()} == {k: list(range(n)) for k, n in expected.items()}

        seconds = SMALL.toy_seconds if machine in ("ToyCar", "ToyTrain") else SMALL.seconds
        for p in list((mdir / "train").iterdir())[:3] + list((mdir / "test").iterdir())[:3]:
            assert p.stat().st_mode & 0o044 == 0o044  # shared data: readable by group and others
            info = sf.info(str(p))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            assert info.frames == round(seconds * 16000)
            wave, _ = sf.read(str(p), dtype="float32")
            assert np.isfinite(wave).all() and 0.003 < np.sqrt(np.mean(wave**2)) < 0.5
    # no temporary files survive a completed run
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_attributes_csv_and_manifest_match_files(small_set):
    out, df = small_set
    for machine in DEV_MACHINES:
        table = pd.read_csv(out / machine / "attributes_00.csv", dtype=str, keep_default_na=False)
        n_attr = len(ATTRIBUTE_VALUES[machine]["source"])
        assert list(table.columns) == ["file_name"] + [f"d{i}{c}" for i in range(1, n_attr + 1) for c in "pv"]
        on_disk = sorted(f"{machine}/{split}/{p.name}" for split in ("train", "test") for p in (out / machine / split).iterdir())
        assert sorted(table["file_name"]) == on_disk
        for _, row in table.iterrows():
            pairs = "_".join(f"{row[f'd{i}p']}_{row[f'd{i}v']}" for i in range(1, n_attr + 1))
            assert row["file_name"].endswith(f"_{pairs}.wav"), row["file_name"]
    manifest = pd.read_csv(out / synth.MANIFEST_NAME, dtype=str, keep_default_na=False)
    assert len(manifest) == len(df)
    assert all((out / p).is_file() for p in manifest["path"])
    assert sorted(manifest["path"]) == sorted(str(Path(p).relative_to(out)) for p in df["path"])
    for _, row in df.iterrows():
        assert Path(row["path"]).name.endswith(f"_{row['attributes']}.wav")
        if row["label"] == "anomaly":
            assert row["anomaly_kind"] in ANOMALY_KINDS[row["machine"]]
        else:
            assert row["anomaly_kind"] == ""


# ------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_parallel_equals_serial_and_other_seed_differs(small_set, tmp_path):
    out, _ = small_set
    reference = _bytes_of(out)
    machines = ("fan", "valve", "ToyTrain")
    cfg = SynthConfig(machines=machines, train_source=3, train_target=2, test_per_cell=2, seconds=1.0, toy_seconds=1.25, seed=3)
    parallel = synthesize(tmp_path / "par", cfg, workers=2, progress=False)
    got = _bytes_of(tmp_path / "par")
    same_machines = {k: v for k, v in reference.items() if k.split("/")[0] in machines}
    assert set(got) - {synth.MANIFEST_NAME} == set(same_machines)
    assert all(got[k] == same_machines[k] for k in same_machines)  # workers=2 == workers=1, byte for byte
    assert len(parallel) == len(machines) * cfg.clips_per_machine

    # re-running into the same folder rewrites identical bytes
    synthesize(tmp_path / "par", cfg, workers=1, progress=False)
    assert _bytes_of(tmp_path / "par") == got

    other = SynthConfig(machines=machines, train_source=3, train_target=2, test_per_cell=2, seconds=1.0, toy_seconds=1.25, seed=4)
    synthesize(tmp_path / "other", other, workers=1, progress=False)
    wavs = {k: v for k, v in _bytes_of(tmp_path / "other").items() if k.endswith(".wav")}
    # a different seed changes every clip (names may coincide when the drawn attributes do)
    same_name = set(wavs) & set(same_machines)
    assert all(wavs[k] != same_machines[k] for k in same_name)
    audio_a = sorted(same_machines[k][44:] for k in same_machines if k.endswith(".wav"))
    audio_b = sorted(v[44:] for v in wavs.values())
    assert not set(audio_a) & set(audio_b)


def test_folder_with_foreign_clips_is_refused(tmp_path):
    cfg = SynthConfig(machines=("fan",), train_source=2, train_target=1, test_per_cell=1, seconds=0.5)
    synthesize(tmp_path, cfg, workers=1, progress=False)
    before = _bytes_of(tmp_path)
    smaller = SynthConfig(machines=("fan",), train_source=1, train_target=1, test_per_cell=1, seconds=0.5)
    reseeded = SynthConfig(machines=("fan",), train_source=2, train_target=1, test_per_cell=1, seconds=0.5, seed=9)
    for cfg_other in (smaller, reseeded):  # fewer clips, or other attributes in the names
        with pytest.raises(ValueError, match="^out: "):
            synthesize(tmp_path, cfg_other, workers=1, progress=False)
    assert _bytes_of(tmp_path) == before  # refused before touching anything


def test_render_clip_is_deterministic_and_seeded_by_identity():
    a = render_clip("gearbox", "source", "normal", 11, 1.0)
    assert a.dtype == np.float32 and a.shape == (16000,) and np.abs(a).max() <= 1.0
    assert np.array_equal(a, render_clip("gearbox", "source", "normal", 11, 1.0))
    assert not np.array_equal(a, render_clip("gearbox", "source", "normal", np.random.default_rng(5), 1.0))
    g1 = render_clip("gearbox", "source", "normal", np.random.default_rng(5), 1.0)
    g2 = render_clip("gearbox", "source", "normal", np.random.default_rng(5), 1.0)
    assert np.array_equal(g1, g2)
    assert not np.array_equal(a, render_clip("gearbox", "source", "normal", 12, 1.0))
    assert render_clip("ToyCar", "target", "anomaly", 2, 0.5, sample_rate=22050).shape == (11025,)
    # the clip seed depends on identity only: a different index or domain is a different clip
    e = synth.clip_entropy(0, "fan", "test", "source", "normal", 7)
    assert e != synth.clip_entropy(0, "fan", "test", "source", "normal", 8)
    assert e != synth.clip_entropy(0, "fan", "test", "target", "normal", 7)


# ------------------------------------------------------------------ variety and audibility


@lru_cache(maxsize=4)
def _extractor(seconds: float) -> LogMelExtractor:
    return LogMelExtractor(FeatureConfig(audio=AudioConfig(seconds=seconds)))


def _logmel(waves: list[np.ndarray], seconds: float) -> np.ndarray:
    with torch.inference_mode():
        return _extractor(seconds)(torch.from_numpy(np.stack(waves))).numpy()


def test_normal_clips_vary_even_with_fixed_attributes():
    for machine in DEV_MACHINES:
        attrs = synth.draw_attributes(machine, "source", 0)
        waves = [render_clip(machine, "source", "normal", s, 1.5, attrs=attrs) for s in range(5)]
        corr = np.corrcoef(np.stack(waves))[np.triu_indices(5, 1)]
        assert np.abs(corr).max() < 0.5, machine  # different phases, speeds, noise: not copies
        spectra = _logmel(waves, 1.5).mean(axis=2)
        spread = np.abs(spectra[:, None, :] - spectra[None, :, :]).mean(axis=2)[np.triu_indices(5, 1)]
        assert spread.min() > 0.3, machine  # time-averaged spectra differ by more than rounding


def test_anomalies_are_audible_in_principle_and_vanish_at_zero_severity():
    low = synth.SEVERITY_RANGE[0]
    cases, pairs = [], []
    for machine in DEV_MACHINES:
        for kind in ANOMALY_KINDS[machine]:
            for seed, domain in ((1, "source"), (2, "target"), (3, "source")):
                normal = render_clip(machine, domain, "normal", seed, 2.0)
                # same seed, same attributes, same machine state: only the fault differs
                faint = render_clip(machine, domain, "anomaly", seed, 2.0, anomaly_kind=kind, severity=1e-6)
                assert np.abs(faint - normal).max() < 1e-4, (machine, kind)
                faulty = render_clip(machine, domain, "anomaly", seed, 2.0, anomaly_kind=kind, severity=low)
                cases.append((machine, kind, np.sum((faulty - normal) ** 2) / np.sum(normal**2)))
                pairs += [faulty, normal]
    mels = _logmel(pairs, 2.0)
    changed = np.mean(np.abs(mels[0::2] - mels[1::2]) > 3.0, axis=(1, 2))
    table = pd.DataFrame(cases, columns=["machine", "kind", "share"]).assign(changed=changed)
    per_kind = table.groupby(["machine", "kind"])[["share", "changed"]].mean()
    assert len(per_kind) == sum(len(k) for k in ANOMALY_KINDS.values())
    # even the faintest fault carries > 0.1 % (-30 dB) of the clip's energy and moves some
    # log-mel cells by more than 3 dB
    assert (10 * np.log10(per_kind["share"]) > -30.0).all(), per_kind
    assert (per_kind["changed"] > 0.001).all(), per_kind


# ------------------------------------------------------------------ difficulty: not trivial, but learnable


@pytest.fixture(scope="module")
def auc_set(tmp_path_factory):
    """7 machines x (40 source + 3 target train, 20 per test cell) clips of 2 s, on disk."""
    out = tmp_path_factory.mktemp("synth_auc")
    cfg = SynthConfig(train_source=40, train_target=3, test_per_cell=20, seconds=2.0, seed=0)
    df = synthesize(out, cfg, workers=2, progress=False)
    waves = [sf.read(p, dtype="float32")[0] for p in df["path"]]
    df = df.assign(row=np.arange(len(df)))
    return df, _logmel(waves, 2.0)


def _frame_stats(mel: np.ndarray) -> np.ndarray:
    """Per-bin time mean, time std and mean frame-to-frame change: what a model can see per clip."""
    return np.concatenate([mel.mean(axis=2), mel.std(axis=2), np.abs(np.diff(mel, axis=2)).mean(axis=2)], axis=1)


def _scores(df: pd.DataFrame, mels: np.ndarray, machine: str):
    d = df[df.machine == machine]
    train, test = d[d.split == "train"], d[d.split == "test"]
    labels = (test.label == "anomaly").to_numpy()
    domains = test.domain.to_numpy()
    # 1) the trivial detector: distance of the time-averaged log-mel to the training mean
    mean_train = mels[train.row].mean(axis=2).mean(axis=0)
    trivial = np.linalg.norm(mels[test.row].mean(axis=2) - mean_train, axis=1)
    # 2) a simple frame-statistics nearest-neighbour detector (standardised per feature)
    ftr, fte = _frame_stats(mels[train.row]), _frame_stats(mels[test.row])
    mu, sd = ftr.mean(axis=0), ftr.std(axis=0) + 1e-3
    a, b = (ftr - mu) / sd, (fte - mu) / sd
    dist = ((b[:, None, :] - a[None, :, :]) ** 2).sum(axis=2)
    knn = np.sort(dist, axis=1)[:, :2].mean(axis=1)
    return labels, domains, trivial, knn, mels[test.row].mean(axis=2), mean_train


def test_mean_logmel_detector_stays_below_080_and_domains_really_shift(auc_set):
    df, mels = auc_set
    pooled, source = {}, {}
    for machine in DEV_MACHINES:
        labels, domains, trivial, _, test_means, mean_train = _scores(df, mels, machine)
        pooled[machine] = roc_auc_score(labels, trivial)  # = mean of DCASE AUC(source), AUC(target) here
        # within the source domain alone, where the training mean is most representative
        src = domains == "source"
        source[machine] = roc_auc_score(labels[src], trivial[src])
        # target normals sit farther from the (source-dominated) training mean than source normals
        normal = ~labels
        gap_t = np.linalg.norm(test_means[normal & (domains == "target")] - mean_train, axis=1).mean()
        gap_s = np.linalg.norm(test_means[normal & (domains == "source")] - mean_train, axis=1).mean()
        assert gap_t > gap_s, machine
    assert np.mean(list(pooled.values())) < 0.80, pooled
    assert np.mean(list(source.values())) < 0.80, source


def test_anomalies_are_learnable_on_the_easy_machines(auc_set):
    df, mels = auc_set
    knn_auc, trivial_auc = {}, {}
    for machine in DEV_MACHINES:
        labels, domains, trivial, knn, _, _ = _scores(df, mels, machine)
        src = domains == "source"
        knn_auc[machine] = roc_auc_score(labels[src], knn[src])
        trivial_auc[machine] = roc_auc_score(labels[src], trivial[src])
    # clearly better than chance on the easiest machines with only 40 training clips (with the
    # faults switched off the best three of seven score 0.56-0.66 here: chance plus selection),
    # and where the simple learned statistic works it beats the trivial mean-spectrum detector
    best = sorted(knn_auc, key=knn_auc.get, reverse=True)[:3]
    assert all(knn_auc[m] > 0.70 for m in best), knn_auc
    assert np.mean([knn_auc[m] for m in best]) > 0.75, knn_auc
    assert np.mean([knn_auc[m] for m in best]) > np.mean([trivial_auc[m] for m in best]), (knn_auc, trivial_auc)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"machines": ("ToyCar", "drill")}, "machines"),
        ({"machines": ()}, "machines"),
        ({"machines": ("fan", "fan")}, "machines"),
        ({"train_source": -1}, "train_source"),
        ({"train_target": 2.5}, "train_target"),
        ({"test_per_cell": -3}, "test_per_cell"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": -2.0}, "seconds"),
        ({"seconds": float("nan")}, "seconds"),
        ({"toy_seconds": 0.0}, "toy_seconds"),
        ({"sample_rate": 4000}, "sample_rate"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_config_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}") as err:
        SynthConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_invalid_calls_name_the_parameter(tmp_path):
    cfg = SynthConfig(machines=("fan",), train_source=1, train_target=0, test_per_cell=0, seconds=0.5)
    with pytest.raises(ValueError, match="^workers"):
        synthesize(tmp_path, cfg, workers=0)
    with pytest.raises(ValueError, match="^machine"):
        render_clip("drill", "source", "normal", 0, 1.0)
    with pytest.raises(ValueError, match="^domain"):
        render_clip("fan", "factory", "normal", 0, 1.0)
    with pytest.raises(ValueError, match="^label"):
        render_clip("fan", "source", "broken", 0, 1.0)
    with pytest.raises(ValueError, match="^anomaly_kind"):
        render_clip("fan", "source", "anomaly", 0, 1.0, anomaly_kind="gear_chip")
    with pytest.raises(ValueError, match="^anomaly_kind"):
        render_clip("fan", "source", "normal", 0, 1.0, anomaly_kind="imbalance")
    with pytest.raises(ValueError, match="^seconds"):
        render_clip("fan", "source", "normal", 0, 0.0)
    with pytest.raises(ValueError, match="^attrs"):
        render_clip("fan", "source", "normal", 0, 1.0, attrs={"mod": "F9", "rpm": "900"})
    with pytest.raises(ValueError, match="^rng_or_seed"):
        render_clip("fan", "source", "normal", -5, 1.0)
    assert synthesize(tmp_path, cfg, workers=1, progress=False).shape[0] == 1

"""DCASE layout reader on real clips (all naming schemes) and on constructed layouts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data.manifest import ManifestError, parse_attributes, parse_clip_name, read_manifest, summarize
from tests.conftest import FIXTURES, run_cli

# Expected (machine, domain, split, label) of every clip in ../shared/data/real_clips, written out by hand
# from the DCASE documentation of each year's naming (2020 clips have no domain: source).
REAL_CLIPS_EXPECTED = [
    ('dcase2020/ToyCar/test/anomaly_id_04_00000005.wav', 'ToyCar', 'source', 'test', 'anomaly'),
    ('dcase2020/ToyCar/test/anomaly_id_04_00000167.wav', 'ToyCar', 'source', 'test', 'anomaly'),
    ('dcase2020/ToyCar/test/anomaly_id_04_00000261.wav', 'ToyCar', 'source', 'test', 'anomaly'),
    ('dcase2020/ToyCar/test/normal_id_04_00000006.wav', 'ToyCar', 'source', 'test', 'normal'),
    ('dcase2020/ToyCar/test/normal_id_04_00000057.wav', 'ToyCar', 'source', 'test', 'normal'),
    ('dcase2020/ToyCar/test/normal_id_04_00000172.wav', 'ToyCar', 'source', 'test', 'normal'),
    ('dcase2020/ToyConveyor/test/anomaly_id_01_00000002.wav', 'ToyConveyor', 'source', 'test', 'anomaly'),
    ('dcase2020/ToyConveyor/test/anomaly_id_01_00000164.wav', 'ToyConveyor', 'source', 'test', 'anomaly'),
    ('dcase2020/ToyConveyor/test/anomaly_id_01_00000358.wav', 'ToyConveyor', 'source', 'test', 'anomaly'),
    ('dcase2020/ToyConveyor/test/normal_id_01_00000336.wav', 'ToyConveyor', 'source', 'test', 'normal'),
    ('dcase2020/ToyConveyor/test/normal_id_01_00000481.wav', 'ToyConveyor', 'source', 'test', 'normal'),
    ('dcase2020/ToyConveyor/test/normal_id_01_00000604.wav', 'ToyConveyor', 'source', 'test', 'normal'),
    ('dcase2020/fan/test/anomaly_id_06_00000002.wav', 'fan', 'source', 'test', 'anomaly'),
    ('dcase2020/fan/test/anomaly_id_06_00000129.wav', 'fan', 'source', 'test', 'anomaly'),
    ('dcase2020/fan/test/anomaly_id_06_00000208.wav', 'fan', 'source', 'test', 'anomaly'),
    ('dcase2020/fan/test/normal_id_06_00000012.wav', 'fan', 'source', 'test', 'normal'),
    ('dcase2020/fan/test/normal_id_06_00000066.wav', 'fan', 'source', 'test', 'normal'),
    ('dcase2020/fan/test/normal_id_06_00000098.wav', 'fan', 'source', 'test', 'normal'),
    ('dcase2020/pump/test/anomaly_id_04_00000001.wav', 'pump', 'source', 'test', 'anomaly'),
    ('dcase2020/pump/test/anomaly_id_04_00000055.wav', 'pump', 'source', 'test', 'anomaly'),
    ('dcase2020/pump/test/anomaly_id_04_00000096.wav', 'pump', 'source', 'test', 'anomaly'),
    ('dcase2020/pump/test/normal_id_04_00000004.wav', 'pump', 'source', 'test', 'normal'),
    ('dcase2020/pump/test/normal_id_04_00000049.wav', 'pump', 'source', 'test', 'normal'),
    ('dcase2020/pump/test/normal_id_04_00000096.wav', 'pump', 'source', 'test', 'normal'),
    ('dcase2020/slider/test/anomaly_id_00_00000000.wav', 'slider', 'source', 'test', 'anomaly'),
    ('dcase2020/slider/test/anomaly_id_00_00000096.wav', 'slider', 'source', 'test', 'anomaly'),
    ('dcase2020/slider/test/anomaly_id_00_00000268.wav', 'slider', 'source', 'test', 'anomaly'),
    ('dcase2020/slider/test/normal_id_00_00000013.wav', 'slider', 'source', 'test', 'normal'),
    ('dcase2020/slider/test/normal_id_00_00000036.wav', 'slider', 'source', 'test', 'normal'),
    ('dcase2020/slider/test/normal_id_00_00000098.wav', 'slider', 'source', 'test', 'normal'),
    ('dcase2020/valve/test/anomaly_id_02_00000000.wav', 'valve', 'source', 'test', 'anomaly'),
    ('dcase2020/valve/test/anomaly_id_02_00000076.wav', 'valve', 'source', 'test', 'anomaly'),
    ('dcase2020/valve/test/anomaly_id_02_00000106.wav', 'valve', 'source', 'test', 'anomaly'),
    ('dcase2020/valve/test/normal_id_02_00000017.wav', 'valve', 'source', 'test', 'normal'),
    ('dcase2020/valve/test/normal_id_02_00000042.wav', 'valve', 'source', 'test', 'normal'),
    ('dcase2020/valve/test/normal_id_02_00000095.wav', 'valve', 'source', 'test', 'normal'),
    ('dcase2021/pump/test/section_00_source_test_anomaly_0000.wav', 'pump', 'source', 'test', 'anomaly'),
    ('dcase2022/ToyCar/train/section_00_source_train_normal_0000_A1Spd28VMic1.wav', 'ToyCar', 'source', 'train', 'normal'),
    ('dcase2023/ToyCar/test/section_00_source_test_normal_0028_car_C2_spd_34V_mic_1.wav', 'ToyCar', 'source', 'test', 'normal'),
    ('dcase2023/ToyCar/test/section_00_source_test_normal_0029_car_C2_spd_34V_mic_1.wav', 'ToyCar', 'source', 'test', 'normal'),
    ('dcase2023/ToyCar/train/section_00_source_train_normal_0362_car_C2_spd_31V_mic_1.wav', 'ToyCar', 'source', 'train', 'normal'),
    ('dcase2023/ToyCar/train/section_00_source_train_normal_0835_car_D2_spd_34V_mic_1.wav', 'ToyCar', 'source', 'train', 'normal'),
    ('dcase2023/ToyTrain/test/section_00_target_test_anomaly_0015_car_A2_spd_6_mic_2.wav', 'ToyTrain', 'target', 'test', 'anomaly'),
    ('dcase2023/ToyTrain/test/section_00_target_test_normal_0049_car_E2_spd_9_mic_2.wav', 'ToyTrain', 'target', 'test', 'normal'),
    ('dcase2023/ToyTrain/train/section_00_source_train_normal_0385_car_C2_spd_7_mic_1.wav', 'ToyTrain', 'source', 'train', 'normal'),
    ('dcase2023/ToyTrain/train/section_00_source_train_normal_0977_car_D2_spd_10_mic_1.wav', 'ToyTrain', 'source', 'train', 'normal'),
    ('dcase2023/bearing/test/section_00_source_test_normal_0022_vel_9_loc_A.wav', 'bearing', 'source', 'test', 'normal'),
    ('dcase2023/bearing/test/section_00_target_test_anomaly_0021_vel_8_loc_G.wav', 'bearing', 'target', 'test', 'anomaly'),
    ('dcase2023/bearing/train/section_00_source_train_normal_0046_vel_21_loc_A.wav', 'bearing', 'source', 'train', 'normal'),
    ('dcase2023/bearing/train/section_00_source_train_normal_0742_vel_16_loc_A.wav', 'bearing', 'source', 'train', 'normal'),
    ('dcase2023/fan/test/section_00_source_test_anomaly_0022_m-n_W.wav', 'fan', 'source', 'test', 'anomaly'),
    ('dcase2023/fan/test/section_00_target_test_normal_0021_m-n_Y.wav', 'fan', 'target', 'test', 'normal'),
    ('dcase2023/fan/train/section_00_source_train_normal_0040_m-n_X.wav', 'fan', 'source', 'train', 'normal'),
    ('dcase2023/fan/train/section_00_source_train_normal_0397_m-n_X.wav', 'fan', 'source', 'train', 'normal'),
    ('dcase2023/gearbox/test/section_00_source_test_normal_0026_volt_1.5_wt_150.wav', 'gearbox', 'source', 'test', 'normal'),
    ('dcase2023/gearbox/test/section_00_target_test_anomaly_0040_volt_1.5_wt_130.wav', 'gearbox', 'target', 'test', 'anomaly'),
    ('dcase2023/gearbox/train/section_00_source_train_normal_0073_volt_1.5_wt_0.wav', 'gearbox', 'source', 'train', 'normal'),
    ('dcase2023/gearbox/train/section_00_source_train_normal_0616_volt_1.5_wt_50.wav', 'gearbox', 'source', 'train', 'normal'),
    ('dcase2023/slider/test/section_00_source_test_normal_0027_vel_730_ac_0.11.wav', 'slider', 'source', 'test', 'normal'),
    ('dcase2023/slider/test/section_00_target_test_normal_0013_vel_620_ac_0.08.wav', 'slider', 'target', 'test', 'normal'),
    ('dcase2023/slider/train/section_00_source_train_normal_0853_vel_500_ac_0.30.wav', 'slider', 'source', 'train', 'normal'),
    ('dcase2023/slider/train/section_00_source_train_normal_0959_vel_490_ac_0.05.wav', 'slider', 'source', 'train', 'normal'),
    ('dcase2023/valve/test/section_00_target_test_anomaly_0044_pat_03.wav', 'valve', 'target', 'test', 'anomaly'),
    ('dcase2023/valve/test/section_00_target_test_normal_0044_pat_03.wav', 'valve', 'target', 'test', 'normal'),
    ('dcase2023/valve/train/section_00_source_train_normal_0095_pat_01.wav', 'valve', 'source', 'train', 'normal'),
    ('dcase2023/valve/train/section_00_source_train_normal_0206_pat_01.wav', 'valve', 'source', 'train', 'normal'),
]


def test_every_real_clip_parsed_as_expected(shared_clips):
    df = read_manifest(shared_clips)
    assert df.attrs["unparsed"] == []
    got = {
        str(Path(p).relative_to(shared_clips)): (m, d, s, lab)
        for p, m, d, s, lab in df[["path", "machine", "domain", "split", "label"]].itertuples(index=False)
    }
    expected = {rel: rest for rel, *rest in REAL_CLIPS_EXPECTED}
    assert len(got) == 66
    assert got == {k: tuple(v) for k, v in expected.items()}


def test_naming_schemes_and_years(shared_clips):
    df = read_manifest(shared_clips).set_index("file")
    assert df.loc["anomaly_id_04_00000005.wav", "naming"] == "dcase2020"
    assert df.loc["anomaly_id_04_00000005.wav", "section"] == 4
    assert df.loc["section_00_source_test_anomaly_0000.wav", "naming"] == "dcase2021"
    row = df.loc["section_00_source_test_normal_0028_car_C2_spd_34V_mic_1.wav"]
    assert row["naming"] == "dcase2022+" and row["year"] == 2023 and row["index"] == 28
    assert row["attrs"] == {"car": "C2", "spd": "34V", "mic": "1"}
    packed = df.loc["section_00_source_train_normal_0000_A1Spd28VMic1.wav"]
    assert packed["attributes"] == "A1Spd28VMic1" and packed["attrs"] == {} and packed["year"] == 2022


def _counts(out: str) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """Parse the wide table printed by `data summary`: machine split label source target total."""
    rows = {}
    machine = split = None
    for line in out.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 6:
            machine, split, label, *nums = parts
        elif len(parts) == 5:
            split, label, *nums = parts
        elif len(parts) == 4:
            label, *nums = parts
        else:
            continue
        rows[(machine, split, label)] = tuple(int(n) for n in nums)
    return rows


def test_data_summary_dcase2023(shared_clips):
    res = run_cli("data", "summary", "--data", str(shared_clips / "dcase2023"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("28 clips under")
    c = _counts(res.stdout)
    # (source, target, total) — counted by hand from the file list
    assert c[("ToyCar", "test", "normal")] == (2, 0, 2)
    assert c[("ToyCar", "train", "normal")] == (2, 0, 2)
    assert c[("ToyTrain", "test", "anomaly")] == (0, 1, 1)
    assert c[("fan", "test", "anomaly")] == (1, 0, 1)
    assert c[("slider", "test", "normal")] == (1, 1, 2)
    assert c[("valve", "test", "normal")] == (0, 1, 1)
    assert sum(v[2] for v in c.values()) == 28
    assert sum(v[1] for v in c.values()) == 8  # target-domain clips
    assert sum(v[2] for (m, s, lab), v in c.items() if lab == "anomaly") == 5


def test_data_summary_dcase2020(shared_clips, tmp_path):
    csv = tmp_path / "counts.csv"
    res = run_cli("data", "summary", "--data", str(shared_clips / "dcase2020"), "--csv", str(csv))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("36 clips under")
    table = pd.read_csv(csv)
    assert set(table["machine"]) == {"ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve"}
    assert (table["clips"] == 3).all() and len(table) == 12  # 6 machines × {normal, anomaly} × 3 clips
    assert set(table["domain"]) == {"source"} and set(table["split"]) == {"test"}


def test_shipped_real_fixtures_parse():
    df = read_manifest(FIXTURES / "real_clips")
    assert len(df) == 12 and df.attrs["unparsed"] == []
    assert sorted(df["naming"].unique()) == ["dcase2020", "dcase2021", "dcase2022+"]


def _touch_wav(path: Path, seconds: float = 0.1):
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), dtype="float32"), 16000, subtype="PCM_16")


def test_eval_names_ground_truth_attributes_and_supplemental(tmp_path):
    root = tmp_path / "eval_data" / "raw"
    m = root / "bearing"
    _touch_wav(m / "train" / "section_00_source_train_normal_0000_vel_6_loc_A.wav")
    _touch_wav(m / "test" / "section_00_test_0000.wav")
    _touch_wav(m / "test" / "section_00_test_0001.wav")
    _touch_wav(m / "test" / "section_00_test_0002.wav")
    _touch_wav(m / "supplemental" / "section_00_target_supplemental_normal_0000_noise.wav")
    (m / "attributes_00.csv").write_text(
        "file_name,d1p,d1v,d2p,d2v\n"
        "bearing/train/section_00_source_train_normal_0000_vel_6_loc_A.wav,vel,6,loc,A\n"
        "bearing/test/section_00_test_0000.wav,vel,10,loc,B\n"
    )
    gt = tmp_path / "ground_truth_data"
    gt.mkdir()
    (gt / "ground_truth_bearing_section_00_test.csv").write_text("section_00_test_0000.wav,0\nsection_00_test_0001.wav,1\n")
    gtd = tmp_path / "ground_truth_domain"
    gtd.mkdir()
    (gtd / "ground_truth_bearing_section_00_test.csv").write_text("section_00_test_0000.wav,1\nsection_00_test_0001.wav,0\n")
    df = read_manifest(tmp_path).set_index("file")
    assert df.loc["section_00_test_0000.wav", ["label", "domain", "naming"]].tolist() == ["normal", "target", "eval"]
    assert df.loc["section_00_test_0001.wav", ["label", "domain"]].tolist() == ["anomaly", "source"]
    assert df.loc["section_00_test_0002.wav", ["label", "domain"]].tolist() == ["unknown", "unknown"]
    assert df.loc["section_00_test_0000.wav", "attrs"] == {"vel": "10", "loc": "B"}
    sup = df.loc["section_00_target_supplemental_normal_0000_noise.wav"]
    assert (sup["split"], sup["machine"], sup["domain"]) == ("supplemental", "bearing", "target")


def test_unparseable_name_listed_or_rejected(tmp_path):
    _touch_wav(tmp_path / "fan" / "train" / "section_00_source_train_normal_0000_m-n_X.wav")
    _touch_wav(tmp_path / "fan" / "train" / "my_recording.wav")
    df = read_manifest(tmp_path)
    assert len(df) == 1
    assert len(df.attrs["unparsed"]) == 1 and "my_recording.wav" in df.attrs["unparsed"][0]
    with pytest.raises(ManifestError, match=r"my_recording\.wav: file name matches no DCASE naming scheme"):
        read_manifest(tmp_path, strict=True)
    res = run_cli("data", "summary", "--data", str(tmp_path))
    assert res.returncode == 0 and "my_recording.wav" in res.stderr


def test_missing_root_and_empty_machine_folder(tmp_path):
    res = run_cli("data", "summary", "--data", str(tmp_path / "nope"))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "nope: data folder does not exist" in res.stderr
    (tmp_path / "valve" / "train").mkdir(parents=True)
    _touch_wav(tmp_path / "fan" / "train" / "section_00_source_train_normal_0000.wav")
    res = run_cli("data", "summary", "--data", str(tmp_path))
    assert res.returncode == 0
    assert "valve: machine folder holds no clips" in res.stderr
    (tmp_path / "fan" / "train" / "section_00_source_train_normal_0000.wav").unlink()
    res = run_cli("data", "summary", "--data", str(tmp_path))
    assert res.returncode == 2 and "no DCASE clips found" in res.stderr


def test_parse_helpers():
    assert parse_attributes("vel_8_loc_G") == {"vel": "8", "loc": "G"}
    assert parse_attributes("") == {}
    info = parse_clip_name("normal_id_02_00000017.wav", split_hint="train")
    assert (info["section"], info["split"], info["label"], info["naming"]) == (2, "train", "normal", "dcase2020")


def test_dev_data_raw_layout(tmp_path):
    _touch_wav(tmp_path / "dev_data" / "raw" / "slider" / "train" / "section_00_source_train_normal_0001_vel_1_ac_0.1.wav")
    _touch_wav(tmp_path / "dev_data" / "raw" / "slider" / "test" / "section_00_target_test_anomaly_0001_vel_1_ac_0.1.wav")
    s = summarize(read_manifest(tmp_path))
    assert s.to_dict("records") == [
        {"machine": "slider", "domain": "source", "split": "train", "label": "normal", "clips": 1},
        {"machine": "slider", "domain": "target", "split": "test", "label": "anomaly", "clips": 1},
    ]

"""Audio loading and the bad-input corpus: each case handled correctly or rejected in one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data.audio import AudioConfig, BadAudioError, fit_length, load_any_length, load_clip
from data.features import extract_features
from tests.conftest import FIXTURES, run_cli

CFG = AudioConfig(seconds=2.0)
SR = 16_000


def _sine(freq: float, seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else x


def _dominant_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()]


@pytest.fixture
def corpus(tmp_path) -> Path:
    """The bad-input corpus of the issue, as real files in a DCASE layout."""
    d = tmp_path / "corpus" / "fan" / "train"
    d.mkdir(parents=True)
    name = lambda i, attrs="m-n_X": d / f"section_00_source_train_normal_{i:04d}_{attrs}.wav"  # noqa: E731
    sf.write(name(0), _sine(1000, 3, SR), SR, subtype="PCM_16")  # good reference clip
    good = name(1)
    sf.write(good, _sine(1000, 3, SR), SR, subtype="PCM_16")
    data = good.read_bytes()
    name(2).write_bytes(data[: len(data) // 3])  # truncated: header promises more samples than present
    sf.write(name(3), np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")  # 0 samples
    sf.write(name(4), _sine(1000, 3, SR, channels=8), SR, subtype="PCM_16")  # 8 channels
    sf.write(name(5), _sine(1000, 3, 44_100), 44_100, subtype="PCM_16")  # 44.1 kHz
    sf.write(name(6), _sine(1000, 3, SR), SR, subtype="PCM_24")  # 24-bit
    name(7).write_text("this is not audio, just text with a .wav name\n")  # non-WAV with .wav name
    nan = _sine(1000, 3, SR)
    nan[100:200] = np.nan
    sf.write(name(8), nan, SR, subtype="FLOAT")  # NaN samples
    sf.write(name(9), _sine(1000, 0.2, SR), SR, subtype="PCM_16")  # too short
    sf.write(d / "recording from tuesday.wav", _sine(1000, 3, SR), SR)  # unparseable name
    sf.write(name(10), _sine(1000, 3, SR), SR, subtype="PCM_32")  # 32-bit PCM
    sf.write(name(11), _sine(1000, 3, SR), SR, subtype="FLOAT")  # float
    (tmp_path / "corpus" / "valve" / "train").mkdir(parents=True)  # empty machine folder
    (tmp_path / "corpus" / "pump").mkdir()  # empty machine folder without split folders
    return tmp_path / "corpus"


def _one_line_naming(err: BaseException, path: Path) -> None:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg


def test_bad_files_rejected_with_one_line_error(corpus):
    d = corpus / "fan" / "train"
    cases = {
        2: "truncated WAV",
        3: "empty audio",
        7: "unreadable audio",
        8: "NaN or Inf",
        9: "too short",
    }
    for i, reason in cases.items():
        path = next(d.glob(f"*_{i:04d}_*.wav"))
        with pytest.raises(BadAudioError, match=reason) as info:
            load_clip(path, CFG)
        _one_line_naming(info.value, path)


def test_supported_formats_load_correctly(corpus):
    d = corpus / "fan" / "train"
    ref = load_clip(next(d.glob("*_0000_*.wav")), CFG)
    assert ref.shape == (CFG.num_samples,) and ref.dtype == np.float32
    for i in (6, 10, 11):  # 24-bit, 32-bit, float: same signal within quantisation
        x = load_clip(next(d.glob(f"*_{i:04d}_*.wav")), CFG)
        assert np.max(np.abs(x - ref)) < 1e-4
    multi = next(d.glob("*_0004_*.wav"))
    ch0 = load_clip(multi, CFG)
    assert np.allclose(ch0, ref * 1 / 8, atol=1e-4)  # channel 0 carries 1/8 of the amplitude
    mean = load_clip(multi, AudioConfig(seconds=2.0, channel="mean"))
    assert np.allclose(mean, ref * np.mean([(c + 1) / 8 for c in range(8)]), atol=1e-4)
    with pytest.raises(BadAudioError, match="channel 9 requested but the file has 8"):
        load_clip(multi, AudioConfig(seconds=2.0, channel=9))
    resampled = load_clip(next(d.glob("*_0005_*.wav")), CFG)  # 44.1 kHz → 16 kHz, frequency preserved
    assert resampled.shape == (CFG.num_samples,)
    assert abs(_dominant_freq(resampled, SR) - 1000) < 2


def test_pad_and_crop():
    x = np.arange(5, dtype=np.float32)
    assert fit_length(x, 3).tolist() == [0, 1, 2]
    assert fit_length(x, 7).tolist() == [0, 1, 2, 3, 4, 0, 1]
    assert fit_length(x, 7, "zeros").tolist() == [0, 1, 2, 3, 4, 0, 0]


def test_real_clips_any_length_and_12s():
    toy = next((FIXTURES / "real_clips" / "dcase2023" / "ToyCar").rglob("*.wav"))
    full = load_any_length(toy)
    assert full.shape == (12 * SR,)
    assert load_clip(toy, AudioConfig(seconds=12.0)).shape == (12 * SR,)
    assert np.array_equal(load_clip(toy, AudioConfig(seconds=10.0)), full[: 10 * SR])


def test_skip_policy_summarises_bad_files(corpus):
    from data.features import FeatureConfig

    paths = sorted((corpus / "fan" / "train").glob("section_*.wav"))
    res = extract_features(paths, FeatureConfig(audio=CFG), on_bad_file="skip", progress=False)
    skipped = {Path(p).name.split("_")[5]: reason for p, reason in res.skipped}
    assert set(skipped) == {"0002", "0003", "0007", "0008", "0009"}
    assert res.features.shape[0] == len(paths) - 5
    assert [paths[i].name.split("_")[5] for i in res.index] == ["0000", "0001", "0004", "0005", "0006", "0010", "0011"]
    assert "5 bad file(s) skipped" in res.summary()
    with pytest.raises(BadAudioError):
        extract_features(paths, FeatureConfig(audio=CFG), on_bad_file="fail", progress=False)


def test_cli_fail_and_skip(corpus):
    res = run_cli("data", "features", "--data", str(corpus), "--seconds", "2", "--quiet")
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and "fan/train/section_00_source_train_normal_0002" in err[-1]
    assert "recording from tuesday.wav" in res.stderr  # unparseable name reported, not fatal
    res = run_cli("data", "features", "--data", str(corpus), "--seconds", "2", "--quiet", "--on-bad-file", "skip")
    assert res.returncode == 0, res.stderr
    assert "7 clips" in res.stdout and "5 bad file(s) skipped" in res.stdout
    assert res.stderr.count("skipped ") >= 5
    res = run_cli("data", "summary", "--data", str(corpus))
    assert "valve: machine folder holds no clips" in res.stderr
    assert "pump: machine folder holds no clips" in res.stderr

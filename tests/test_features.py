"""Log-mel front end and the feature cache (computed once; config-keyed; concurrent-safe)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from data.audio import AudioConfig
from data.features import FeatureCache, FeatureConfig, LogMelExtractor, extract_features
from tests.conftest import FIXTURES, REPO, run_cli


def test_ten_seconds_gives_1024_frames_and_128_mels():
    cfg = FeatureConfig()
    assert cfg.hop_length == 156 and cfg.n_frames == 1024
    out = LogMelExtractor(cfg)(torch.randn(2, 160_000) * 0.1)
    assert out.shape == (2, 128, 1024) and torch.isfinite(out).all()
    assert FeatureConfig(audio=AudioConfig(seconds=12.0)).n_frames == 1229


def test_log_floor_keeps_silence_finite():
    cfg = FeatureConfig(audio=AudioConfig(seconds=1.0))
    out = LogMelExtractor(cfg)(torch.zeros(1, 16_000))
    assert torch.isfinite(out).all() and float(out.min()) == pytest.approx(-100.0)


def test_matches_reference_log_mel_on_a_tone():
    """A 1 kHz tone must peak in the mel band that contains 1 kHz (HTK mel scale)."""
    cfg = FeatureConfig(audio=AudioConfig(seconds=1.0))
    t = torch.arange(16_000) / 16_000
    mel = LogMelExtractor(cfg)(torch.sin(2 * np.pi * 1000 * t)).mean(-1)[0]
    hz_to_mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = np.linspace(0, hz_to_mel(8000), 130)
    expected_band = int(np.searchsorted(edges, hz_to_mel(1000))) - 1
    assert abs(int(mel.argmax()) - expected_band) <= 1


def _clips(tmp_path, n=6, seconds=1.5):
    d = tmp_path / "data" / "fan" / "train"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        sf.write(d / f"section_00_source_train_normal_{i:04d}_m-n_X.wav", (rng.standard_normal(int(16000 * seconds)) * 0.1).astype("float32"), 16000)
    return sorted(d.glob("*.wav"))


def test_cache_computes_once_and_is_config_keyed(tmp_path):
    paths = _clips(tmp_path)
    cfg = FeatureConfig(audio=AudioConfig(seconds=1.5))
    cache = tmp_path / "cache"
    first = extract_features(paths, cfg, cache_dir=cache, progress=False)
    assert (first.n_computed, first.n_cached) == (6, 0)
    second = extract_features(paths, cfg, cache_dir=cache, progress=False)
    assert (second.n_computed, second.n_cached) == (0, 6)
    assert np.array_equal(first.features, second.features)
    # a changed config (fewer mels) never reads the old features
    other = FeatureConfig(audio=AudioConfig(seconds=1.5), n_mels=64)
    third = extract_features(paths, other, cache_dir=cache, progress=False)
    assert (third.n_computed, third.features.shape[1]) == (6, 64)
    # a changed clip (new content, new mtime) is recomputed, the others still read
    sf.write(paths[0], np.zeros(24_000, dtype="float32") + 0.01, 16000)
    fourth = extract_features(paths, cfg, cache_dir=cache, progress=False)
    assert (fourth.n_computed, fourth.n_cached) == (1, 5)
    assert not np.array_equal(fourth.features[0], first.features[0])
    assert FeatureCache(cache, cfg).dir != FeatureCache(cache, other).dir


def test_cli_second_run_reads_cache(tmp_path):
    _clips(tmp_path)
    args = ("data", "features", "--data", str(tmp_path / "data"), "--seconds", "1.5", "--cache-dir", str(tmp_path / "c"), "--quiet")
    r1 = run_cli(*args)
    r2 = run_cli(*args)
    assert r1.returncode == 0 and "6 computed, 0 read from cache" in r1.stdout and "clips/s" in r1.stdout
    assert r2.returncode == 0 and "0 computed, 6 read from cache" in r2.stdout
    r3 = run_cli(*args[:-1], "--quiet", "--min-seconds", "0.5")  # min_seconds is part of the config key
    assert "6 computed" in r3.stdout


def test_two_concurrent_extractions_leave_valid_files(tmp_path):
    paths = _clips(tmp_path, n=24, seconds=1.0)
    cache = tmp_path / "cache"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path;"
        "from data.audio import AudioConfig; from data.features import FeatureConfig, extract_features;"
        "p = sorted(Path(sys.argv[2]).glob('*.wav'));"
        "r = extract_features(p, FeatureConfig(audio=AudioConfig(seconds=1.0)), cache_dir=sys.argv[3], batch_size=4, progress=False);"
        "print(r.n_computed, r.n_cached)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(REPO), str(paths[0].parent), str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    cfg = FeatureConfig(audio=AudioConfig(seconds=1.0))
    files = list((cache / cfg.key()).rglob("*.npy"))
    assert len(files) == 24
    assert not list((cache / cfg.key()).rglob("*.tmp"))
    fresh = extract_features(paths, cfg, use_cache=False, progress=False).features
    cached = extract_features(paths, cfg, cache_dir=cache, progress=False)
    assert cached.n_cached == 24 and np.array_equal(cached.features, fresh)


def test_real_clips_features():
    paths = sorted((FIXTURES / "real_clips").rglob("*.wav"))
    res = extract_features(paths, FeatureConfig(), progress=False)
    assert res.features.shape == (12, 128, 1024) and np.isfinite(res.features.astype(np.float32)).all()
    # real machine sound is far above the silence floor
    assert float(res.features.astype(np.float32).mean()) > -90

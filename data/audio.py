"""Audio loading with soundfile: channel choice, resampling to the model rate, pad/crop.

Every failure is a :class:`BadAudioError` whose message is one line that starts with the file
path, so a bad clip in a corpus of 10,000 can be found at a glance. ``torchaudio.load`` is
avoided on purpose: since torchaudio 2.9 it needs torchcodec + FFmpeg, which PyPI-only machines
do not have; soundfile reads WAV/FLAC (PCM 16/24/32 and float) through libsndfile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .config import AudioConfig


class BadAudioError(ValueError):
    """A clip that cannot be used; ``str(err)`` is a single line naming the file."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # force one line
        super().__init__(f"{self.path}: {self.reason}")


def check_wav_complete(path: Path) -> None:
    """Reject a RIFF/WAVE file whose ``data`` chunk is shorter than its header declares.

    libsndfile silently returns the samples that are present, so an interrupted copy or download
    would otherwise enter training as a shorter, padded clip.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not RIFF/WAVE (FLAC, RF64, or not audio): soundfile decides
        size = path.stat().st_size
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            cid, clen = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if cid == b"data":
                if clen not in (0, 0xFFFFFFFF) and pos + 8 + clen > size:
                    raise BadAudioError(
                        path, f"truncated WAV: header declares {clen} bytes of audio, file holds {size - pos - 8}"
                    )
                return
            pos += 8 + clen + (clen & 1)


def read_audio(path: str | Path, channel: int | str = 0) -> tuple[np.ndarray, int]:
    """Read a file as float32 mono at its native rate. Raises :class:`BadAudioError`."""
    path = Path(path)
    try:
        check_wav_complete(path)
    except OSError as exc:  # permission denied, a symlink loop or a dangling link: a bad file like any other
        raise BadAudioError(path, f"cannot open ({exc.strerror or type(exc).__name__})") from None
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile errors are RuntimeError/LibsndfileError/TypeError
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadAudioError(path, f"unreadable audio ({msg})") from None
    if data.shape[0] == 0:
        raise BadAudioError(path, "empty audio (0 samples)")
    if channel == "mean":
        mono = data.mean(axis=1)
    else:
        ch = int(channel)
        if not 0 <= ch < data.shape[1]:
            raise BadAudioError(path, f"channel {ch} requested but the file has {data.shape[1]} channel(s)")
        mono = data[:, ch]
    if not np.isfinite(mono).all():
        raise BadAudioError(path, "audio contains NaN or Inf samples")
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr)


def fit_length(wave: np.ndarray, num_samples: int, pad_mode: str = "repeat") -> np.ndarray:
    """Crop to the first ``num_samples`` or pad (by repetition or zeros) up to it."""
    n = wave.shape[-1]
    if n >= num_samples:
        return wave[..., :num_samples]
    if pad_mode == "repeat":
        reps = -(-num_samples // n)
        return np.tile(wave, reps)[..., :num_samples]
    out = np.zeros(num_samples, dtype=wave.dtype)
    out[:n] = wave
    return out


def load_any_length(path: str | Path, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Load a clip at the model rate WITHOUT pad/crop (for scoring recordings of any length)."""
    wave, sr = read_audio(path, cfg.channel)
    if wave.shape[0] < cfg.min_seconds * sr:
        raise BadAudioError(
            path, f"too short: {wave.shape[0] / sr:.3f} s < min_seconds={cfg.min_seconds} s"
        )
    if sr != cfg.sample_rate:
        wave = AF.resample(torch.from_numpy(wave), sr, cfg.sample_rate).numpy()
    return wave


def load_clip(path: str | Path, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Load one clip as a float32 array of exactly ``cfg.num_samples`` samples at ``cfg.sample_rate``."""
    return fit_length(load_any_length(path, cfg), cfg.num_samples, cfg.pad_mode)

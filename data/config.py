"""The configuration of the data layer, kept free of torch so the command line can build its flags
(and answer ``--help``) without loading it: how files become waveforms (:class:`AudioConfig`), how
waveforms become log-mels (:class:`FeatureConfig`), and how a run reads its data (:class:`RunOptions`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

#: the seven DCASE 2025 development machine types (as the dataset spells them)
DEV_MACHINES = ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve")
FEATURE_VERSION = 1  # bump when the extraction code changes numerically


@dataclass(frozen=True)
class AudioConfig:
    """How a file on disk becomes a fixed-length mono waveform."""

    sample_rate: int = 16_000  # the paper resamples everything to 16 kHz (section 3.2)
    seconds: float = 10.0  # clip length after pad/crop; DCASE ToyCar/ToyTrain clips are 12 s
    channel: int | Literal["mean"] = 0  # DCASE clips are mono; multi-channel uses channel 0 by default
    min_seconds: float = 1.0  # shorter input is rejected rather than padded into a fake clip
    pad_mode: Literal["repeat", "zeros"] = "repeat"  # repeat keeps the spectrum stationary-looking

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel settings. Defaults are the paper's: 16 kHz, n_fft 1024, 128 mels, 1024 frames per 10 s."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    n_mels: int = 128
    n_fft: int = 1024
    win_length: int = 1024
    frames_per_10s: int = 1024  # hop = 10 s * sr // 1024 = 156 samples; frames are cropped to exactly this
    f_min: float = 0.0
    f_max: float | None = None  # None = Nyquist
    power: float = 2.0
    log_floor: float = 1e-10  # power floor before 10*log10: silence maps to -100 dB, never -inf

    @property
    def hop_length(self) -> int:
        return int(10 * self.audio.sample_rate // self.frames_per_10s)

    @property
    def n_frames(self) -> int:
        """Frames of one clip after pad/crop: 1024 for 10 s, 1229 for 12 s."""
        return int(round(self.audio.seconds * self.frames_per_10s / 10.0))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        d = dict(d)
        audio = AudioConfig(**d.pop("audio", {}))
        return cls(audio=audio, **d)

    def key(self) -> str:
        """Stable hash of everything that changes the features (config + code version)."""
        blob = json.dumps({"v": FEATURE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs (never what it computes): the same results whatever these are."""

    cache_dir: Path | None = None  # feature cache root (default $BOHB_SEARCH_CACHE or ~/.cache/bohb-search/features)
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:1 …
    on_bad_file: Literal["fail", "skip"] = "fail"  # unreadable/empty/NaN/too-short clips: stop, or leave out and list
    quiet: bool = False  # no progress bars

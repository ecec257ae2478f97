"""The configuration of the data layer, kept free of torch so the command line can build its flags
(and answer ``--help``) without loading it: how files become waveforms (:class:`AudioConfig`), how
waveforms become log-mels (:class:`FeatureConfig`), and how a run reads its data (:class:`RunOptions`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

#: the audio files ``score`` reads from a folder (what libsndfile decodes; DCASE data is WAV)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
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

    def __post_init__(self):
        check_fields(self, "audio")
        if self.sample_rate < 1000:
            raise ValueError(f"audio sample_rate: expected at least 1000 Hz, got {self.sample_rate}")
        if self.seconds <= 0:
            raise ValueError(f"--seconds must be > 0, got {self.seconds}")
        if self.min_seconds < 0:
            raise ValueError(f"--min-seconds must be >= 0, got {self.min_seconds}")
        if isinstance(self.channel, int) and self.channel < 0:
            raise ValueError(f"--channel must be a channel index >= 0 or 'mean', got {self.channel}")

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel settings. Defaults are the paper's: 16 kHz, n_fft 1024, 128 mels, 1024 frames per 10 s
    (torchaudio's HTK mel scale, reflect padding). :func:`dcase_ae_features` gives the DCASE AE
    baseline's own setting (librosa's defaults: Slaney mel scale and filters, hop 512)."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    n_mels: int = 128  # mel bins
    n_fft: int = 1024  # FFT size
    win_length: int = 1024  # window length
    frames_per_10s: int = 1024  # hop = 10 s * sr // 1024 = 156 samples; frames are cropped to exactly this
    f_min: float = 0.0  # lowest filter edge (Hz)
    f_max: float | None = None  # None = Nyquist
    power: float = 2.0  # magnitude exponent: 2 = power spectrogram
    log_floor: float = 1e-10  # power floor before 10*log10: silence maps to -100 dB, never -inf
    hop: int | None = None  # explicit hop in samples (then frames_per_10s is ignored and clips keep 1 + samples // hop frames)
    mel_scale: Literal["htk", "slaney"] = "htk"  # mel scale of the filter bank (librosa's default is slaney)
    mel_norm: Literal["slaney"] | None = None  # filter normalisation (librosa's default is slaney: equal area)
    pad_mode: Literal["reflect", "constant"] = "reflect"  # STFT centre padding (librosa >= 0.10 pads with zeros)

    def __post_init__(self):
        check_fields(self, "features")
        for name in ("n_mels", "n_fft", "win_length", "frames_per_10s"):
            if getattr(self, name) < 1:
                raise ValueError(f"features {name}: expected a positive integer, got {getattr(self, name)}")
        if self.hop is not None and self.hop < 1:
            raise ValueError(f"features hop: expected a positive integer or None, got {self.hop!r}")
        if self.audio.num_samples < self.win_length:
            raise ValueError(f"--seconds {self.audio.seconds:g} gives {self.audio.num_samples} samples, fewer than one "
                             f"{self.win_length}-sample analysis window ({self.win_length / self.audio.sample_rate:g} s)")

    @property
    def hop_length(self) -> int:
        if self.hop is not None:
            return self.hop
        return int(10 * self.audio.sample_rate // self.frames_per_10s)

    @property
    def n_frames(self) -> int:
        """Frames of one clip after pad/crop: 1024 for 10 s, 1229 for 12 s (with an explicit hop: the
        centred STFT's 1 + samples // hop, e.g. 313 for 10 s at hop 512)."""
        if self.hop is not None:
            return 1 + self.audio.num_samples // self.hop
        return int(round(self.audio.seconds * self.frames_per_10s / 10.0))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        d = dict(d)
        audio = AudioConfig(**d.pop("audio", {}))
        return cls(audio=audio, **d)

    def key(self) -> str:
        """Stable hash of everything that changes the features (config + code version). Settings added
        after version 1 count only when they differ from their default, so existing caches stay valid."""
        d = self.to_dict()
        for name, default in _LATER_FEATURE_FIELDS.items():
            if d.get(name) == default:
                d.pop(name)
        blob = json.dumps({"v": FEATURE_VERSION, **d}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


_LATER_FEATURE_FIELDS = {"hop": None, "mel_scale": "htk", "mel_norm": None, "pad_mode": "reflect"}


def dcase_ae_features(seconds: float = 10.0, sample_rate: int = 16_000) -> FeatureConfig:
    """The DCASE 2023-2025 AE baseline's log-mel: librosa defaults (Slaney mel scale and filter norm,
    zero centre padding), n_fft 1024, hop 512, 128 mels, power 2, 10·log10(max(x, machine epsilon)),
    channels averaged as ``librosa.load(mono=True)`` does (313 frames for 10 s)."""
    import sys

    return FeatureConfig(audio=AudioConfig(sample_rate=sample_rate, seconds=seconds, channel="mean"), n_mels=128,
                         n_fft=1024, win_length=1024, hop=512, power=2.0, mel_scale="slaney", mel_norm="slaney",
                         pad_mode="constant", log_floor=sys.float_info.epsilon)


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs (never what it computes): the same results whatever these are."""

    cache_dir: Path | None = None  # feature cache root (default $BOHB_SEARCH_CACHE or ~/.cache/bohb-search/features)
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:1 …
    on_bad_file: Literal["fail", "skip"] = "fail"  # unreadable/empty/NaN/too-short clips: stop, or leave out and list
    quiet: bool = False  # no progress bars
    threads: int | None = None  # torch intra-op threads; default: the CPUs this process may run on (affinity mask)


def check_fields(obj, what: str) -> None:
    """Every field of dataclass ``obj`` holds a value of its declared type: an ``int`` field an integer
    (not 32.5, not True), a ``float`` field a finite number, a ``Literal`` one of its values, … A wrong
    value raises a one-line ``ValueError`` naming ``what`` and the field."""
    import math
    import typing
    from dataclasses import fields as dc_fields

    hints = typing.get_type_hints(type(obj))

    def ok(tp, v) -> bool:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is typing.Any:
            return True
        if origin is typing.Literal:
            return any(v == a and type(v) is type(a) for a in args) or (v in args and not isinstance(v, bool))
        if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
            return any(ok(a, v) for a in args)
        if tp is type(None):
            return v is None
        if tp is bool:
            return isinstance(v, bool)
        if tp is int:
            return isinstance(v, int) and not isinstance(v, bool)
        if tp is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if tp is str:
            return isinstance(v, str)
        if origin is tuple:
            if not isinstance(v, tuple):
                return False
            inner = [a for a in args if a is not Ellipsis]
            return all(ok(inner[0], x) for x in v) if len(inner) == 1 else len(v) == len(inner) and all(
                ok(a, x) for a, x in zip(inner, v))
        if origin is dict or tp is dict:
            return isinstance(v, dict)
        if isinstance(tp, type):
            return isinstance(v, tp)
        return True

    for f in dc_fields(obj):
        v = getattr(obj, f.name)
        tp = hints[f.name]
        if not ok(tp, v):
            if typing.get_origin(tp) is typing.Literal:
                expected = "one of " + ", ".join(map(str, typing.get_args(tp)))
            else:
                expected = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(
                    tp, str(tp).replace("typing.", ""))
            raise ValueError(f"{what} {f.name}: expected {expected}, got {v!r}")


def load_yaml(text: str):
    """``yaml.safe_load`` that also reads ``1e-3`` as a number (YAML 1.1 wants ``1.0e-3``), so settings
    files are written as people write numbers."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass

"""Option groups several commands share (features, encoder, how a run runs), each derived from its
configuration dataclass, and their conversion back into configuration objects."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data.config import AudioConfig, RunOptions
from data.threads import use_threads
from models import EncoderConfig

from .flags import UsageError, add_config_flags, given

# EncoderConfig fields that follow from the data (input size, normalisation), never from a flag
DERIVED_ENCODER_FIELDS = ("n_mels", "n_frames", "input_mean", "input_std")


def add_feature_flags(p: argparse.ArgumentParser) -> list[str]:
    return add_config_flags(p, AudioConfig, title="features (audio → log-mel)")


def feature_config(args: argparse.Namespace, file_section: dict | None = None):
    """The FeatureConfig from a ``features`` file section (FeatureConfig.to_dict layout) and the audio flags."""
    from data.features import FeatureConfig

    section = dict(file_section or {})
    audio = {**(section.pop("audio", None) or {}), **given(args, AUDIO_FLAGS)}
    if "channel" in audio and audio["channel"] != "mean":
        try:
            audio["channel"] = int(audio["channel"])
        except (TypeError, ValueError):
            raise UsageError(f"--channel must be an integer index or 'mean', got {audio['channel']!r}") from None
    seconds = audio.get("seconds", AudioConfig.seconds)
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        raise UsageError(f"--seconds must be > 0, got {seconds}")
    try:
        return FeatureConfig.from_dict({**section, "audio": audio})
    except (TypeError, ValueError) as err:
        raise UsageError(f"features: {err}") from None


AUDIO_FLAGS = tuple(f for f in AudioConfig.__dataclass_fields__)


def add_encoder_flags(p: argparse.ArgumentParser, title: str = "encoder (ignored when a pre-trained encoder is given)") -> None:
    g = p.add_argument_group(title)
    g.add_argument("--preset", choices=["tiny", "small", "base"], default=argparse.SUPPRESS,
                   help="encoder size: D 192/384/768, depth 24 (default tiny); the flags below override it")
    add_config_flags(g, EncoderConfig, exclude=DERIVED_ENCODER_FIELDS, rename={"kind": "backbone"})


ENCODER_FLAGS = tuple(f for f in EncoderConfig.__dataclass_fields__ if f not in DERIVED_ENCODER_FIELDS)


def encoder_config(args: argparse.Namespace, file_section: dict | None = None) -> EncoderConfig:
    """The named preset with the file's and the command line's overrides (the runners size it to the features)."""
    from models import encoder_preset

    section = dict(file_section or {})
    preset = getattr(args, "preset", None) or section.pop("preset", "tiny")
    section.pop("preset", None)
    overrides = {**{k: v for k, v in section.items() if k not in DERIVED_ENCODER_FIELDS}, **given(args, ENCODER_FLAGS)}
    try:
        return encoder_preset(preset, **overrides)
    except (ValueError, TypeError) as err:
        raise UsageError(f"encoder: {err}") from None


RUN_FLAGS = tuple(RunOptions.__dataclass_fields__)


def add_run_flags(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    add_config_flags(p, RunOptions, title="how the run runs", only=only)


def run_options(args: argparse.Namespace, file_section: dict | None = None) -> RunOptions:
    d = {**(file_section or {}), **given(args, RUN_FLAGS)}
    if d.get("cache_dir") is not None:
        d["cache_dir"] = Path(d["cache_dir"])
    if d.get("on_bad_file", "fail") not in ("fail", "skip"):
        raise UsageError(f"--on-bad-file must be 'fail' or 'skip', got {d['on_bad_file']!r}")
    threads = d.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UsageError(f"--threads must be a positive integer, got {threads!r}")
    try:
        opts = RunOptions(**d)
    except TypeError as err:
        raise UsageError(f"run options: {err}") from None
    # every command that computes builds its options here: this process's share of the cores is set once, before
    # any work (--threads, else the CPUs its affinity mask allows; data.threads says why)
    use_threads(opts.threads)
    return opts


def load_manifest_or_fail(data_dir: Path):
    from data.manifest import ManifestError, read_manifest

    try:
        df = read_manifest(data_dir)
    except ManifestError as err:
        raise UsageError(str(err)) from None
    for msg in df.attrs.get("unparsed", []):
        print(f"warning: skipped {msg}", file=sys.stderr)
    if df.empty:
        raise UsageError(f"{data_dir}: no DCASE clips found (expected <machine>/train|test/*.wav)")
    return df


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def check_output_file(path: Path | None, flag: str) -> None:
    """An output FILE flag: refused before any work when it names a folder or its folder cannot be made."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, so the folder cannot be made")


def check_output_folder(path: Path, flag: str = "--out") -> None:
    """An output FOLDER flag: refused before any work when it names a file."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, so the folder cannot be made")

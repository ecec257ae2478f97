"""Option groups several commands share (features, encoder, how a run runs), each derived from its
configuration dataclass, and their conversion back into configuration objects."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from data.config import AudioConfig, RunOptions
from data.threads import use_threads
from models import EncoderConfig

from .flags import UsageError, add_config_flags, attributed, flag_name, given

# EncoderConfig fields that follow from the data (input size, normalisation), never from a flag
DERIVED_ENCODER_FIELDS = ("n_mels", "n_frames", "input_mean", "input_std")


def _flags_over_file(args: argparse.Namespace, names, file_section: dict, config: Path | None, what: str,
                     section: str):
    """(typed flags, the file section with the flags on top, a one-line error maker naming where a value came
    from) for one ``--config`` section; a setting the section does not know is refused here."""
    unknown = sorted(set(file_section) - set(names))
    if unknown:
        raise UsageError(f"--config {config}: {section}: unknown setting(s) {', '.join(map(str, unknown))}")
    typed = given(args, names)

    def bad(message: str) -> UsageError:
        return attributed(message, what, typed, file_section, config, section)

    return typed, {**file_section, **typed}, bad


def add_feature_flags(p: argparse.ArgumentParser) -> list[str]:
    return add_config_flags(p, AudioConfig, title="features (audio → log-mel)")


def feature_config(args: argparse.Namespace, file_section: dict | None = None, config: Path | None = None):
    """The FeatureConfig from a ``features`` file section (FeatureConfig.to_dict layout) and the audio flags;
    a bad value is named by its flag, or by the ``--config`` file and key it came from."""
    from data.features import FeatureConfig

    section = dict(file_section or {})
    file_audio = section.pop("audio", None) or {}
    if not isinstance(file_audio, dict):
        raise UsageError(f"--config {config}: features.audio must be a mapping of settings, got {file_audio!r}")
    typed, audio, bad = _flags_over_file(args, AUDIO_FLAGS, file_audio, config, "audio", "features.audio")

    if "channel" in audio and audio["channel"] != "mean":
        try:
            audio["channel"] = int(audio["channel"])
        except (TypeError, ValueError):
            raise bad(f"channel must be an integer index or 'mean', got {audio['channel']!r}") from None
    seconds = audio.get("seconds", AudioConfig.seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise bad(f"seconds must be > 0, got {seconds}")
    try:
        audio_cfg = AudioConfig(**audio)
    except (TypeError, ValueError) as err:
        raise bad(str(err)) from None
    try:
        return FeatureConfig.from_dict({**section, "audio": audio_cfg.to_dict()})
    except (TypeError, ValueError) as err:
        # the one check that reads the audio settings too: --seconds shorter than one analysis window
        if str(err).startswith("--seconds") and "seconds" not in typed and "seconds" in file_audio:
            raise UsageError(f"--config {config}: features.audio.seconds{str(err)[len('--seconds'):]}") from None
        if str(err).startswith("--seconds"):
            raise UsageError(str(err)) from None
        raise attributed(err, "features", {}, section, config, "features") from None


AUDIO_FLAGS = tuple(f for f in AudioConfig.__dataclass_fields__)


def add_encoder_flags(p: argparse.ArgumentParser, title: str = "encoder (ignored when a pre-trained encoder is given)") -> None:
    g = p.add_argument_group(title)
    g.add_argument("--preset", choices=["tiny", "small", "base"], default=argparse.SUPPRESS,
                   help="encoder size: D 192/384/768, depth 24 (default tiny); the flags below override it")
    add_config_flags(g, EncoderConfig, exclude=DERIVED_ENCODER_FIELDS, rename={"kind": "backbone"})


ENCODER_FLAGS = tuple(f for f in EncoderConfig.__dataclass_fields__ if f not in DERIVED_ENCODER_FIELDS)


def encoder_config(args: argparse.Namespace, file_section: dict | None = None,
                   config: Path | None = None) -> EncoderConfig:
    """The named preset with the file's and the command line's overrides (the runners size it to the features);
    a bad value is named by its flag, or by the ``--config`` file and key it came from."""
    from models import encoder_preset

    section = dict(file_section or {})
    preset = getattr(args, "preset", None) or section.pop("preset", "tiny")
    section.pop("preset", None)
    from_file = {k: v for k, v in section.items() if k not in DERIVED_ENCODER_FIELDS}
    typed = given(args, ENCODER_FLAGS)
    try:
        return encoder_preset(preset, **{**from_file, **typed})
    except (ValueError, TypeError) as err:
        raise attributed(err, "encoder", typed, from_file, config, "encoder", rename={"kind": "backbone"}) from None


RUN_FLAGS = tuple(RunOptions.__dataclass_fields__)


def add_run_flags(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    add_config_flags(p, RunOptions, title="how the run runs", only=only)


def run_options(args: argparse.Namespace, file_section: dict | None = None, config: Path | None = None) -> RunOptions:
    """The RunOptions of the flags over the ``--config`` file's ``run`` section; the feature cache it names
    (or the default one) is checked for writing here, before any work."""
    file_section = dict(file_section or {})
    typed, d, bad = _flags_over_file(args, RUN_FLAGS, file_section, config, "run", "run")
    if d.get("cache_dir") is not None:
        if not isinstance(d["cache_dir"], (str, Path)):
            raise bad(f"cache_dir must be a folder path, got {d['cache_dir']!r}")
        d["cache_dir"] = Path(d["cache_dir"])
    if d.get("on_bad_file", "fail") not in ("fail", "skip"):
        raise bad(f"on_bad_file must be 'fail' or 'skip', got {d['on_bad_file']!r}")
    threads = d.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise bad(f"threads must be a positive integer, got {threads!r}")
    try:
        opts = RunOptions(**d)
    except TypeError as err:
        raise UsageError(f"run options: {err}") from None
    if opts.cache_dir is None:
        check_cache_root(None)
    elif "cache_dir" not in typed:  # a typed --cache-dir was checked with the other output flags
        source = f"--config {config}: run.cache_dir" if config is not None else "cache_dir"
        check_output_location(opts.cache_dir, source)
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


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "a non-negative integer")


# ---------------------------------------------------------------------------------------------------- outputs

OUTPUT_KINDS = ("folder", "file", "replaced folder")


def writable(folder: Path) -> bool:
    """Whether this process may create and rename entries in ``folder``: its permissions and a read-only
    mount both count (``os.access``; note that root passes permission bits, not a read-only mount)."""
    return os.access(folder, os.W_OK | os.X_OK)


def check_output_location(path: Path | str | None, flag: str, kind: str = "folder") -> None:
    """The one check of every output location, made before any work: refused with one line naming ``flag``
    (a flag, or ``--config FILE: key``) when it cannot be written.

    ``kind``: ``folder`` (files are written into it; it and any missing parents are made), ``file``
    (written atomically: a temporary file beside it, then renamed over it), ``replaced folder`` (built
    beside it and renamed into place, as ``evaluate`` does: its parent must be writable too). Refused: an
    existing file where a folder is wanted or a folder where a file is, a broken symbolic link, a folder
    that is not writable, and a missing path whose nearest existing parent is a file or not writable.
    Nothing is created.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
    if path is None:
        return
    path = Path(path)
    label = f"{flag} {path}"
    if os.path.lexists(path) and not path.exists():
        raise UsageError(f"{label}: a broken symbolic link")
    if path.exists():
        if kind == "file":
            if path.is_dir():
                raise UsageError(f"{label}: is a folder; give a file name")
        else:
            if not path.is_dir():
                raise UsageError(f"{label}: exists and is not a folder")
            if not writable(path):
                raise UsageError(f"{label}: the folder is not writable")
            if kind == "folder":
                return
    parent = path.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if os.path.lexists(parent) and not parent.exists():
        raise UsageError(f"{label}: {parent} is a broken symbolic link, so the folder cannot be made")
    if not parent.is_dir():
        raise UsageError(f"{label}: {parent} is a file, so the folder cannot be made")
    if not writable(parent):
        what = "the file" if kind == "file" else "the folder"
        raise UsageError(f"{label}: {parent} is not writable, so {what} cannot be "
                         f"{'written' if path.exists() or parent == path.parent else 'made'}")


def check_cache_root(cache_dir: Path | None, flag: str = "--cache-dir") -> None:
    """The feature cache a command writes: ``cache_dir``, else ``$BOHB_SEARCH_CACHE`` or the default root."""
    if cache_dir is not None:
        check_output_location(cache_dir, flag)
        return
    from data.features import default_cache_root

    source = ("$BOHB_SEARCH_CACHE" if os.environ.get("BOHB_SEARCH_CACHE")
              else "the default feature cache (choose another with --cache-dir or $BOHB_SEARCH_CACHE)")
    check_output_location(default_cache_root(), source)


def check_outputs(args: argparse.Namespace) -> None:
    """Every output flag a command declared (``set_defaults(outputs={dest: kind})``) and its data roots,
    checked before the command does anything."""
    for dest, kind in (getattr(args, "outputs", None) or {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            check_output_location(Path(value), flag_name(dest), kind)
    roots = getattr(args, "data", None)
    if isinstance(roots, list):
        from data.datasets import DataError, check_data_roots

        try:
            check_data_roots(roots, "--data")
        except DataError as err:
            raise UsageError(str(err)) from None


def check_output_file(path: Path | None, flag: str) -> None:
    """An output FILE flag (see :func:`check_output_location`)."""
    check_output_location(path, flag, "file")


def check_output_folder(path: Path, flag: str = "--out") -> None:
    """An output FOLDER flag (see :func:`check_output_location`)."""
    check_output_location(path, flag, "folder")

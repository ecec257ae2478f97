"""Command-line flags derived from the configuration dataclasses, so every default lives in one place.

A field ``lr: float = 1e-4  # AdamW learning rate`` becomes ``--lr FLOAT`` with that help text and
default; ``bool`` fields become ``--amp/--no-amp``, ``Literal`` fields get their choices, tuples take
several values. Flags are registered with ``default=SUPPRESS`` so a command knows which ones the user
typed: the effective configuration is the dataclass defaults, then the ``--config`` YAML file's
section, then the typed flags.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from data.config import load_yaml

from ..train.configs import field_default, field_docs, strict_from_dict


class UsageError(Exception):
    """A problem with the user's input (file, folder or parameter); printed as one line by ``main``."""


def _unwrap_optional(tp) -> tuple[Any, bool]:
    """``X | None`` → (X, True); anything else → (tp, False)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _scalar_parser(tp, flag: str):
    """argparse ``type=`` for one value of type ``tp`` (None when argparse's default str is right)."""
    if tp is bool:
        raise TypeError("bool handled by BooleanOptionalAction")
    if tp in (int, float):
        def parse(text: str, _tp=tp):
            try:
                return _tp(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{flag} expects {'an integer' if _tp is int else 'a number'}, "
                                                 f"got {text!r}") from None
        parse.__name__ = tp.__name__
        return parse
    return None


def _default_text(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "(none)"
    return str(value)


def add_config_flags(parser, cls, *, exclude: typing.Iterable[str] = (), only: typing.Iterable[str] | None = None,
                     rename: dict[str, str] | None = None, title: str | None = None,
                     defaults: dict[str, Any] | None = None) -> list[str]:
    """Add one flag per field of dataclass ``cls``; returns the field names added.

    ``rename`` maps a field to another flag name (``kind`` → ``backbone``); ``defaults`` shows a
    different default in the help where the command starts from other values than the dataclass.
    """
    rename = rename or {}
    defaults = defaults or {}
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls, include_extras=False)
    docs = field_docs(cls)
    added = []
    chosen = set(only) if only is not None else None
    for f in fields(cls):
        if f.name in exclude or (chosen is not None and f.name not in chosen):
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        if is_dataclass(tp) or get_origin(tp) is dict or tp is dict:
            continue  # nested configs have flags of their own
        flag = "--" + rename.get(f.name, f.name).replace("_", "-")
        default = defaults.get(f.name, field_default(f))
        help_text = docs.get(f.name, "")
        if default is not MISSING:
            help_text = f"{help_text} (default {_default_text(default)})" if help_text else f"default {_default_text(default)}"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        origin = get_origin(tp)
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            choices = list(get_args(tp))
            kw["choices"] = choices
            kw["metavar"] = "{" + ",".join(map(str, choices)) + "}"
            scalar = {type(c) for c in choices}
            if len(scalar) == 1 and scalar != {str}:
                kw["type"] = _scalar_parser(scalar.pop(), flag)
        elif origin is tuple:
            inner = get_args(tp)[0] if get_args(tp) else str
            kw["nargs"] = "*"
            kw["type"] = _scalar_parser(inner, flag)
            kw["metavar"] = inner.__name__.upper()
        elif origin in (typing.Union, types.UnionType):
            kw["metavar"] = "VALUE"  # e.g. int | "mean": parsed by the config's own validation
        else:
            parse = _scalar_parser(tp, flag)
            if parse is not None:
                kw["type"] = parse
            kw["metavar"] = getattr(tp, "__name__", "VALUE").upper()
        if optional and "type" in kw:
            inner_parse = kw["type"]
            kw["type"] = lambda text, _p=inner_parse: None if text.lower() == "none" else _p(text)
        group.add_argument(flag, **kw)
        added.append(f.name)
    return added


def given(args: argparse.Namespace, names: typing.Iterable[str]) -> dict[str, Any]:
    """The flags among ``names`` that the user typed (they were registered with ``default=SUPPRESS``)."""
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def add_config_file_flag(parser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="YAML file of settings (sections as in the config.yaml every run writes); "
                             "flags given on the command line override it")


def read_config_file(path: Path | None, sections: typing.Iterable[str]) -> dict[str, dict]:
    """The sections of a ``--config`` YAML file, each a mapping; unknown sections are an error."""
    sections = tuple(sections)
    if path is None:
        return {s: {} for s in sections}
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        doc = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--config {path}: expected a mapping of sections ({', '.join(sections)})")
    unknown = sorted(set(doc) - set(sections))
    if unknown:
        raise UsageError(f"--config {path}: unknown section(s) {', '.join(map(str, unknown))} "
                         f"(this command reads {', '.join(sections)})")
    out = {}
    for s in sections:
        part = doc.get(s) or {}
        if not isinstance(part, dict):
            raise UsageError(f"--config {path}: section '{s}' must be a mapping of settings")
        out[s] = part
    return out


def flag_name(field: str, rename: dict[str, str] | None = None) -> str:
    """The command-line flag of a config field: ``knn_k`` → ``--knn-k`` (``rename`` as in add_config_flags)."""
    return "--" + (rename or {}).get(field, field).replace("_", "-")


def _mention(message: str, word: str) -> re.Match | None:
    """The first whole-word occurrence of ``word`` (a field name or a flag) in ``message``."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", message)


def attributed(err: BaseException | str, what: str, typed: dict, file_section: dict | None = None,
               config: Path | None = None, section: str | None = None,
               rename: dict[str, str] | None = None, flags: typing.Iterable[str] | None = None) -> UsageError:
    """A config class's complaint about a value, as one line naming where the user gave that value: the
    flag they typed (``--val-fraction must be in [0, 1), got 1.5``) or the ``--config`` file and key
    (``--config run.yaml: pretrain.val_fraction must be …``), never a flag they did not type. The setting
    is the one the message names first among those the user gave; a message naming none keeps its words.
    ``flags``: the names in ``typed`` that were typed as flags (default: all of them)."""
    message = " ".join(str(err).split())
    file_section = file_section or {}
    section = section or what
    typed = typed if flags is None else {k: v for k, v in typed.items() if k in set(flags)}
    found = None  # (field, position, named by its flag)
    for name in sorted({*file_section, *typed}):
        for word in (name, flag_name(name, rename)):
            m = _mention(message, word)
            if m and (found is None or m.start() < found[1]):
                found = (name, m.start(), word.startswith("--"))
    if found is None:
        return UsageError(message if message.startswith(what) else f"{what}: {message}")
    name = found[0]
    if name in typed and found[2]:
        return UsageError(message)  # it names the flag the user typed already
    if name in typed:
        source = flag_name(name, rename)
    else:
        source = f"{'--config ' + str(config) + ': ' if config is not None else ''}{section}.{name}"
    # the message's own opening naming of the setting ("finetune lr", "lr", "--lr") becomes its source
    lead = re.match(rf"(?:{re.escape(what)} )?(?:{re.escape(name)}|{re.escape(flag_name(name, rename))})(?![\w-])",
                    message)
    if lead:
        return UsageError(source + message[lead.end():])
    return UsageError(f"{source}: {message}")


def build_config(cls, file_section: dict, typed: dict, what: str, config: Path | None = None,
                 section: str | None = None, flags: typing.Iterable[str] | None = None):
    """``cls`` from the file's section with the typed flags on top; a bad value is one line naming the flag
    it came from, or the ``--config`` file (``config``) and its ``section.key``. ``flags``: which of ``typed``
    the user typed as flags, where ``typed`` also holds values the command set itself."""
    make = getattr(cls, "from_dict", None) or (lambda d: strict_from_dict(cls, d))
    try:
        return make({**file_section, **typed})
    except (TypeError, ValueError) as err:
        raise attributed(err, what, typed, file_section, config, section, flags=flags) from None

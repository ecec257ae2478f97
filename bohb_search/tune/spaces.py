"""Search-space files (``search_spaces/*.yaml``) → a native ``ConfigSpace.ConfigurationSpace``.

TuneBOHB's own conversion of Ray Tune search spaces breaks on ConfigSpace ≥ 1.0 (ray issue
46995), so spaces are declared in a small YAML format and built directly with ConfigSpace:

.. code-block:: yaml

    name: machine-default
    hyperparameters:
      lr:         {type: float, lower: 1.0e-5, upper: 3.0e-3, log: true}
      unfreeze_k: {type: int, lower: 1, upper: depth}        # "depth" = encoder blocks
      score:      {type: categorical, choices: [cosine, knn]}
      knn_k:      {type: int, lower: 1, upper: 8, condition: {score: knn}}
    fixed:
      patience: 15

Every name must be a :class:`~bohb_search.train.configs.FinetuneConfig` field. Any malformed entry is
rejected with a :class:`SearchSpaceError` naming the file and the entry.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from data.atomic import to_python
from data.config import load_yaml

from ..train.configs import FinetuneConfig

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
TYPES = ("float", "int", "categorical", "constant")
_KEYS = {
    "float": {"type", "lower", "upper", "log", "default", "condition"},
    "int": {"type", "lower", "upper", "log", "default", "condition"},
    "categorical": {"type", "choices", "default", "condition"},
    "constant": {"type", "value", "condition"},
}


class SearchSpaceError(ValueError):
    """A malformed search-space file; the message names the file and the entry."""


@dataclass
class SearchSpace:
    """A parsed space: the ConfigSpace for BOHB plus the fixed settings and provenance."""

    name: str
    path: Path
    sha256: str
    configspace: Any  # ConfigSpace.ConfigurationSpace
    fixed: dict[str, Any]

    def to_finetune_config(self, sampled: dict, base: FinetuneConfig | None = None) -> FinetuneConfig:
        """Fixed entries, then the sampled values, over ``base`` (defaults when None)."""
        d = (base or FinetuneConfig()).to_dict()
        d.update(self.fixed)
        d.update({k: to_python(v) for k, v in sampled.items()})
        for f in fields(FinetuneConfig):  # values that went through pandas/JSON may be 3.0 for 3
            if f.type in ("int", int) and isinstance(d.get(f.name), float) and d[f.name].is_integer():
                d[f.name] = int(d[f.name])
        return FinetuneConfig.from_dict(d)


def default_space_path(generalized: bool) -> Path:
    return SPACES_DIR / ("generalized_default.yaml" if generalized else "machine_default.yaml")


def _number(path: Path, name: str, key: str, value, kind: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchSpaceError(f"{path}: hyperparameter '{name}': '{key}' must be a finite number, got {value!r}")
    if kind == "int" and int(value) != value:
        raise SearchSpaceError(f"{path}: hyperparameter '{name}': '{key}' must be an integer, got {value!r}")
    return int(value) if kind == "int" else float(value)


def load_search_space(path: str | Path, depth: int | None = None, seed: int | None = None) -> SearchSpace:
    """Parse and validate a YAML search space; ``depth`` resolves ``upper: depth`` for ``unfreeze_k``."""
    from ConfigSpace import (
        Categorical,
        ConfigurationSpace,
        Constant,
        EqualsCondition,
        Float,
        InCondition,
        Integer,
    )

    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"{path}: search-space file not found")
    raw = path.read_bytes()
    try:
        doc = load_yaml(raw.decode("utf-8", errors="replace"))
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hyperparameters"), dict) or not doc["hyperparameters"]:
        raise SearchSpaceError(f"{path}: expected a mapping with a non-empty 'hyperparameters' section")
    extra = sorted(set(doc) - {"name", "hyperparameters", "fixed"})
    if extra:
        raise SearchSpaceError(f"{path}: unknown top-level key(s) {', '.join(extra)} (allowed: name, hyperparameters, fixed)")
    known = {f.name for f in fields(FinetuneConfig)}
    cs = ConfigurationSpace(seed=seed)
    hps: dict[str, Any] = {}
    conditions: list[tuple[str, dict]] = []
    for name, spec in doc["hyperparameters"].items():
        if name not in known:
            raise SearchSpaceError(f"{path}: unknown hyperparameter '{name}' (not a FinetuneConfig field; "
                                   f"known: {', '.join(sorted(known))})")
        if not isinstance(spec, dict) or "type" not in spec:
            raise SearchSpaceError(f"{path}: hyperparameter '{name}': expected a mapping with a 'type'")
        kind = spec["type"]
        if kind not in TYPES:
            raise SearchSpaceError(f"{path}: hyperparameter '{name}': unknown type {kind!r} (allowed: {', '.join(TYPES)})")
        bad_keys = sorted(set(spec) - _KEYS[kind])
        if bad_keys:
            raise SearchSpaceError(f"{path}: hyperparameter '{name}': unknown key(s) {', '.join(bad_keys)} for type {kind}")
        if kind in ("float", "int"):
            for key in ("lower", "upper"):
                if key not in spec:
                    raise SearchSpaceError(f"{path}: hyperparameter '{name}': missing '{key}'")
            upper = spec["upper"]
            if upper == "depth":
                if name != "unfreeze_k":
                    raise SearchSpaceError(f"{path}: hyperparameter '{name}': 'upper: depth' is only allowed for unfreeze_k")
                if depth is None:
                    raise SearchSpaceError(f"{path}: hyperparameter '{name}': 'upper: depth' needs the encoder depth")
                upper = depth
            lo = _number(path, name, "lower", spec["lower"], kind)
            hi = _number(path, name, "upper", upper, kind)
            log = bool(spec.get("log", False))
            if lo > hi:
                raise SearchSpaceError(f"{path}: hyperparameter '{name}': lower {lo} > upper {hi}")
            if log and lo <= 0:
                raise SearchSpaceError(f"{path}: hyperparameter '{name}': log scale needs lower > 0, got {lo}")
            kw = {"log": log}
            if "default" in spec:
                kw["default"] = _number(path, name, "default", spec["default"], kind)
            if lo == hi:
                hp = Constant(name, lo)
            else:
                hp = (Float if kind == "float" else Integer)(name, (lo, hi), **kw)
        elif kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices or len(set(map(str, choices))) != len(choices):
                raise SearchSpaceError(f"{path}: hyperparameter '{name}': 'choices' must be a non-empty list of distinct values")
            kw = {"default": spec["default"]} if "default" in spec else {}
            hp = Categorical(name, choices, **kw)
        else:
            if "value" not in spec:
                raise SearchSpaceError(f"{path}: hyperparameter '{name}': constant needs 'value'")
            hp = Constant(name, spec["value"])
        hps[name] = hp
        if "condition" in spec:
            conditions.append((name, spec["condition"]))
    cs.add(list(hps.values()))
    for child, cond in conditions:
        if not isinstance(cond, dict) or len(cond) != 1:
            raise SearchSpaceError(f"{path}: hyperparameter '{child}': condition must be one 'parent: value(s)' pair")
        (parent, value), = cond.items()
        if parent not in hps:
            raise SearchSpaceError(f"{path}: hyperparameter '{child}': condition on unknown hyperparameter '{parent}'")
        try:
            cs.add(InCondition(hps[child], hps[parent], value) if isinstance(value, list)
                   else EqualsCondition(hps[child], hps[parent], value))
        except Exception as err:  # ConfigSpace raises several types for illegal conditions
            raise SearchSpaceError(f"{path}: hyperparameter '{child}': invalid condition ({err})") from None
    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SearchSpaceError(f"{path}: 'fixed' must be a mapping of FinetuneConfig fields to values")
    for name in fixed:
        if name not in known:
            raise SearchSpaceError(f"{path}: fixed entry '{name}' is not a FinetuneConfig field")
        if name in hps:
            raise SearchSpaceError(f"{path}: '{name}' is both searched and fixed")
    space = SearchSpace(str(doc.get("name") or path.stem), path, hashlib.sha256(raw).hexdigest(), cs, dict(fixed))
    try:  # a fixed value FinetuneConfig rejects is a file error, not a crash at trial time
        space.to_finetune_config({})
    except (ValueError, TypeError) as err:
        raise SearchSpaceError(f"{path}: 'fixed': {' '.join(str(err).split())}") from None
    _check_every_value(path, doc["hyperparameters"], space, depth)
    return space


def _values_to_check(spec: dict, depth: int | None) -> list:
    """Both ends of a range, every choice of a categorical, the value of a constant."""
    kind = spec["type"]
    if kind == "categorical":
        return list(spec["choices"])
    if kind == "constant":
        return [spec["value"]]
    upper = depth if spec["upper"] == "depth" else spec["upper"]
    return [spec["lower"], upper]


def _check_every_value(path: Path, hyperparameters: dict, space: SearchSpace, depth: int | None) -> None:
    """Each value a trial could draw must be one FinetuneConfig accepts: checked here, when the file is
    loaded, not in the middle of a search."""
    import typing

    types = typing.get_type_hints(FinetuneConfig)
    for name, spec in hyperparameters.items():
        if spec["type"] == "float" and types.get(name) is int:
            raise SearchSpaceError(f"{path}: hyperparameter '{name}': an integer setting cannot be searched as "
                                   "type float (a trial would draw a fraction); use type int")
        for value in _values_to_check(spec, depth):
            if name == "unfreeze_k" and depth is not None and isinstance(value, (int, float)) and value > depth:
                raise SearchSpaceError(f"{path}: hyperparameter 'unfreeze_k': {value} exceeds the encoder depth "
                                       f"{depth} (use 'upper: depth')")
            # a conditional parameter is only drawn when its parent has the condition's value
            parent = {k: (v[0] if isinstance(v, list) else v) for k, v in (spec.get("condition") or {}).items()}
            try:
                space.to_finetune_config({**parent, name: value})
            except (ValueError, TypeError) as err:
                reason = " ".join(str(err).split())
                raise SearchSpaceError(f"{path}: hyperparameter '{name}': value {value!r} is not accepted "
                                       f"({reason})") from None

"""Atomic file writes: a temp file in the target's folder, fsync, then ``os.replace``.

A reader (another process, a Ray worker, a resumed run) sees either the old complete file or the
new complete file, never a partial one — also when the writer is killed mid-write.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | Path, payload: bytes) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, cannot write a file there")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, array)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_csv(df, path: str | Path, **to_csv_kwargs) -> Path:
    """Write a pandas DataFrame as CSV atomically (``index=False`` unless given)."""
    to_csv_kwargs.setdefault("index", False)
    return atomic_write_text(path, df.to_csv(**to_csv_kwargs))


def to_python(value):
    """numpy scalars (and 0-d arrays) → plain Python numbers; anything else unchanged.

    The one conversion used wherever values leave numpy for JSON, YAML, MLflow or a dataclass
    check (``isinstance(x, int)`` is False for ``np.int64``).
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _strict_json(value):
    """numpy → Python, and NaN/±inf → null: strict JSON has no NaN (jq and most JSON readers refuse it)."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    value = to_python(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def atomic_write_json(path: str | Path, obj, **dumps_kwargs) -> Path:
    """Strict JSON (indent 2; numpy scalars converted by :func:`to_python`; NaN and ±inf written as null),
    written atomically."""
    import json

    dumps_kwargs.setdefault("indent", 2)
    text = json.dumps(_strict_json(obj), default=to_python, allow_nan=False, **dumps_kwargs)
    return atomic_write_text(path, text + "\n")

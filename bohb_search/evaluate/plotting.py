"""What every figure shares: a Figure on its own Agg canvas (pyplot's global registry is never used,
so nothing here changes the backend of other code), atomic PNG writes, and input checks."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data.atomic import atomic_write_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 120


def new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def save_figure(fig, path: Path) -> Path:
    """Render ``fig`` to PNG bytes, write them atomically, release the figure."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return atomic_write_bytes(path, buf.getvalue())
    finally:
        fig.clear()


def require_frame(df, name: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})")
    if df.empty:
        raise ValueError(f"{name} is empty (no rows)")
    return df


def numeric_column(series: pd.Series, name: str, column: str, allow_nan: bool = False) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    bad_type = np.isnan(values) & series.notna().to_numpy()
    if bad_type.any():
        raise ValueError(f"{name}: column {column} has non-numeric value(s), e.g. {series[bad_type].iloc[0]!r}")
    if np.isinf(values).any():
        raise ValueError(f"{name}: column {column} has infinite value(s)")
    if not allow_nan and np.isnan(values).any():
        raise ValueError(f"{name}: column {column} has {int(np.isnan(values).sum())} missing (NaN) value(s)")
    return values


def png_path(out_path, name: str = "out_path") -> Path:
    path = Path(out_path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{name} must end in .png, got {str(path)!r}")
    return path


def is_png(path) -> bool:
    """True when ``path`` starts with the 8-byte PNG signature and matplotlib decodes it to an image."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            if fh.read(8) != PNG_SIGNATURE:
                return False
        from matplotlib.image import imread

        img = imread(p, format="png")
    except Exception:  # noqa: BLE001 - any decoder error means "not a valid PNG"
        return False
    return img.ndim in (2, 3) and img.shape[0] > 0 and img.shape[1] > 0

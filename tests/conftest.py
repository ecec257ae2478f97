"""Shared fixtures. Tests never touch the user's real cache or results folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SHARED_CLIPS = REPO.parent / "shared" / "data" / "real_clips"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1 only


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own feature cache so no test reads another's features."""
    monkeypatch.setenv("BOHB_SEARCH_CACHE", str(tmp_path / "feature-cache"))


@pytest.fixture
def shared_clips() -> Path:
    """The 66 real DCASE clips beside the checkout (CI has them; a user's clone may not).

    Skipped where absent — but never in CI, where a missing folder is a failure.
    """
    if not SHARED_CLIPS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_CLIPS} missing in CI")
        pytest.skip(f"{SHARED_CLIPS} not present (only the shipped fixtures are tested)")
    return SHARED_CLIPS


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run ``python -m bohb_search`` in a subprocess (the way users run it)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "bohb_search", *args],
        cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout,
    )

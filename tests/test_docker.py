"""docker/: no Docker engine here, so the Dockerfile is linted (hadolint) and its inputs checked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        m = re.match(r"^\s*COPY\s+(?:--\S+\s+)*(.+)$", line)
        if m:
            parts = m.group(1).split()
            sources += parts[:-1]  # the last token is the destination
    return sources


def test_every_file_the_dockerfile_copies_exists():
    sources = _copy_sources(DOCKER / "Dockerfile")
    assert "pyproject.toml" in sources and "docker/entrypoint.sh" in sources
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which is missing"
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    res = subprocess.run([exe, "--failure-threshold", "warning", str(DOCKER / "Dockerfile")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_builds_this_dockerfile_and_wires_head_and_workers():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    head, worker = compose["services"]["head"], compose["services"]["worker"]
    assert (DOCKER / head["build"]["context"] / head["build"]["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    assert head["command"] == ["head"] and worker["command"] == ["worker"]
    assert worker["environment"]["RAY_HEAD_ADDRESS"] == "head:6379"
    assert head["environment"]["RAY_AUTH_MODE"] == worker["environment"]["RAY_AUTH_MODE"] == "token"
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]

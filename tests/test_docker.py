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
    # one token for every node, from the host's environment (never a per-container one)
    assert head["environment"]["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
    assert worker["environment"]["RAY_AUTH_TOKEN"] == head["environment"]["RAY_AUTH_TOKEN"]
    # the workers reach MLflow as http://head:5000, which the server must allow as a Host header
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://head:5000"
    assert "head:5000" in head["environment"]["MLFLOW_ALLOWED_HOSTS"].split(",")


def test_compose_refuses_to_start_without_a_data_dir():
    """With DATA_DIR unset, ``${DATA_DIR:-../data}`` mounted the project's data/ PACKAGE as the data set."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for service in compose["services"].values():
        mounts = {v.split(":")[-2] if v.endswith(":ro") else v.split(":")[-1]: v for v in service["volumes"]}
        assert mounts["/data"].startswith("${DATA_DIR:?"), mounts["/data"]
        assert mounts["/results"].startswith("${RESULTS_DIR:?"), mounts["/results"]


def test_dockerignore_keeps_data_results_and_envs_out_of_the_build_context():
    # Docker matches at the context root only; gitwildmatch (Ray's bundled pathspec) matches at any
    # depth, so a source file it does not ignore is not ignored by Docker either
    from ray._private.thirdparty.pathspec import PathSpec

    ignored = PathSpec.from_lines("gitwildmatch", (REPO / ".dockerignore").read_text().splitlines())
    for path in (".git/HEAD", ".venv/bin/python", "results/mlflow.db", "datasets/dcase2025/x.wav", "x.egg-info/PKG"):
        assert ignored.match_file(path), path
    for src in _copy_sources(DOCKER / "Dockerfile"):  # everything the image needs stays in the context
        files = [src] if (REPO / src).is_file() else [str(p.relative_to(REPO)) for p in (REPO / src).rglob("*")
                                                   if p.is_file() and "__pycache__" not in p.parts]
        assert files and not any(ignored.match_file(f) for f in files), src


def test_entrypoint_passes_shellcheck():
    exe = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    res = subprocess.run([exe, str(DOCKER / "entrypoint.sh")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_worker_without_the_cluster_token_says_so(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path),
           "RAY_AUTH_MODE": "token"}
    res = subprocess.run([str(DOCKER / "entrypoint.sh"), "worker"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "RAY_AUTH_TOKEN is not set" in res.stderr

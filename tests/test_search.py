"""Real BOHB searches on a real local Ray, tracked in a real MLflow store (tiny model, synthetic data)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from bohb_search.evaluate.metrics import evaluate_scores
from bohb_search.evaluate.submission import read_submission_dir
from bohb_search.train.configs import PretrainConfig
from bohb_search.train.runs import run_pretrain
from data.audio import AudioConfig
from data.config import RunOptions
from data.features import FeatureConfig
from models import encoder_preset
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow
SECONDS = 2.0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Synthetic data (fan, valve), a feature cache and a once-pre-trained tiny encoder."""
    root = tmp_path_factory.mktemp("search")
    data = root / "data"
    res = run_cli("data", "synth", "--out", str(data), "--machines", "fan", "valve", "--train-source", "20",
                  "--train-target", "2", "--test-per-cell", "6", "--seconds", str(SECONDS), "--quiet")
    assert res.returncode == 0, res.stderr
    enc = encoder_preset("tiny", dim=32, depth=2)
    pre = run_pretrain(PretrainConfig(epochs=1, batch_size=16), [data], root / "pre", enc,
                       FeatureConfig(audio=AudioConfig(seconds=SECONDS)),
                       RunOptions(cache_dir=root / "cache", device="cpu", quiet=True))
    return {"root": root, "data": data, "pre": pre, "cache": root / "cache", "db": f"sqlite:///{root / 'mlflow.db'}"}


def search_args(env, name: str, machine: str = "fan", samples: int = 9, max_epochs: int = 9, *extra: str) -> list[str]:
    return ["search", "--data", str(env["data"]), "--machine", machine, "--name", name, "--pretrained", str(env["pre"]),
            "--num-samples", str(samples), "--max-epochs", str(max_epochs), "--batch-size", "16",
            "--min-steps-per-epoch", "0",
            "--cache-dir", str(env["cache"]), "--storage-path", str(env["root"] / "searches"),
            "--tracking-uri", env["db"], "--quiet", *extra]


def mlflow_trial_runs(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"bohb-search/{name}")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`bohb_search.role` = 'trial'", max_results=1000)
    return client, runs


@pytest.fixture(scope="module")
def fan_search(env):
    res = run_cli(*search_args(env, "fan-bohb"))
    assert res.returncode == 0, res.stderr[-3000:]
    return env["root"] / "searches" / "fan-bohb"


def test_bohb_search_pauses_and_resumes_trials(env, fan_search):
    trials = pd.read_csv(fan_search / "trials.csv")
    per_trial = trials.groupby("trial_id").agg(epochs=("epoch", "max"), rows=("epoch", "count"),
                                               status=("status", "first"), restored=("restored_from_epoch", "max"))
    assert len(per_trial) >= 9
    # Hyperband η=3, max_t=9: budgets 1, 3, 9; the survivors of a rung were paused and resumed
    assert set(per_trial["epochs"]) <= {1, 3, 9} and {1, 3, 9} <= set(per_trial["epochs"])
    assert (per_trial["rows"] == per_trial["epochs"]).all()  # every epoch reported exactly once
    # the plan `search` prints before it starts is what Ray's scheduler then trained
    from bohb_search.tune.searchers import planned_iterations
    from bohb_search.tune.settings import SearchSettings

    settings = SearchSettings.from_dict(json.loads((fan_search / "search_settings.json").read_text()))
    assert per_trial["epochs"].sum() == planned_iterations(settings) == 21
    resumed = trials[(trials["restored_from_epoch"] > 0)]
    assert not resumed.empty
    # a resumed trial continued from its checkpoint epoch (never from epoch 0)
    first_after = resumed.sort_values("epoch").groupby("trial_id").first()
    assert (first_after["epoch"] == first_after["restored_from_epoch"] + 1).all()
    assert set(per_trial["status"]) <= {"FINISHED", "KILLED"} and "KILLED" in set(per_trial["status"])
    # every trial trained with the CPUs Ray gave it (cpus_per_trial = 1), not with all of the machine's cores
    assert set(trials["torch_threads"].dropna()) == {1}

    best = json.loads((fan_search / "best_config.json").read_text())
    assert best["metric"]["name"] == "best_val_score" and 0 <= best["metric"]["value"] <= 1
    assert best["trial_id"] in set(per_trial.index) and best["budget_epochs"] in (1, 3, 9)
    assert len(best["space_sha256"]) == 64 and best["machines"] == ["fan"] and best["seed"] == 0
    assert {"lr", "unfreeze_k", "objective", "score"} <= set(best["hyperparameters"])

    client, runs = mlflow_trial_runs(env["db"], "fan-bohb")
    assert sorted(r.data.tags["ray_trial_id"] for r in runs) == sorted(per_trial.index)  # one run per trial
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_score")]
        assert steps == list(range(1, per_trial.loc[r.data.tags["ray_trial_id"], "epochs"] + 1))
        assert r.data.tags["trial_status"] in ("FINISHED", "KILLED") and "lr" in r.data.params

    from bohb_search.evaluate.plots import is_png

    assert is_png(fan_search / "search_progress.png")
    parent = client.search_runs([runs[0].info.experiment_id], filter_string="tags.`bohb_search.role` = 'search'")[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.json", "trials.csv", "search_space.yaml", "search_progress.png"} <= logged

    again = run_cli(*search_args(env, "fan-bohb"))
    assert again.returncode == 2 and "already exists; use --resume" in again.stderr


def test_bohb_records_which_configurations_its_model_drew(env, fan_search):
    """bohb_picks.csv / trials.csv say per trial whether BOHB sampled from its density model.

    hpbandster fits the model on a budget only with 2d + 2 results there: never within 9 trials for the
    10-parameter default space (all random), but after the first bracket (9 results at 1 epoch) for the
    3-parameter lr_adv_delta.yaml, after which 2 of every 3 draws are model-based (random_fraction 1/3).
    """
    default = pd.read_csv(fan_search / "trials.csv").drop_duplicates("trial_id")
    assert (default["model_based_pick"] == 0).all() and len(default) >= 9

    res = run_cli(*search_args(env, "fan-bohb-3d", "fan", 16, 9, "--space",
                               str(REPO / "search_spaces" / "lr_adv_delta.yaml")))
    assert res.returncode == 0, res.stderr[-3000:]
    out = env["root"] / "searches" / "fan-bohb-3d"
    picks = pd.read_csv(out / "bohb_picks.csv", dtype={"trial_id": str})
    trials = pd.read_csv(out / "trials.csv", dtype={"trial_id": str}).drop_duplicates("trial_id")
    assert set(picks["trial_id"]) == set(trials["trial_id"]) and set(picks["model_based_pick"]) <= {0, 1}
    assert (picks["model_based_pick"].iloc[:9] == 0).all()  # the first bracket is drawn at random
    # 7 later draws, each model-based with probability 2/3: all random has probability (1/3)**7 < 0.05 %
    assert picks["model_based_pick"].iloc[9:].sum() >= 1, picks.to_dict("list")


def test_failing_trial_is_recorded_and_search_completes(env, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("hyperparameters:\n  lr: {type: categorical, choices: [0.0001, 0.5]}\n"
                     "  delta: {type: float, lower: 0.1, upper: 0.9}\n")
    res = run_cli(*search_args(env, "faulty", "fan", 6, 3, "--space", str(space), "--seed", "3"),
                  env={"BOHB_SEARCH_INJECT_FAULT_LR_ABOVE": "0.01"})
    assert res.returncode == 0, res.stderr[-3000:]
    trials = pd.read_csv(env["root"] / "searches" / "faulty" / "trials.csv")
    failed = trials[trials["status"] == "FAILED"]
    assert not failed.empty and failed["error"].str.contains("injected fault").all()
    assert (failed["config/lr"] == 0.5).all() and (trials[trials["status"] != "FAILED"]["config/lr"] == 0.0001).all()
    best = json.loads((env["root"] / "searches" / "faulty" / "best_config.json").read_text())
    assert best["hyperparameters"]["lr"] == 0.0001 and best["trials"]["FAILED"] == failed["trial_id"].nunique()
    _, runs = mlflow_trial_runs(env["db"], "faulty")
    bad = [r for r in runs if r.data.tags.get("trial_status") == "FAILED"]
    assert len(bad) == failed["trial_id"].nunique() and all(r.info.status == "FAILED" for r in bad)
    assert all("injected fault" in r.data.tags["error"] for r in bad)


@pytest.mark.parametrize("change, words", [
    (("--machine", "lathe"), ["--machine", "lathe"]),
    (("--data", "/nonexistent/dcase"), ["/nonexistent/dcase"]),
    (("--pretrained", "/nonexistent/encoder.pt"), ["--pretrained", "/nonexistent/encoder.pt"]),
    (("--space", "BAD_SPACE"), ["bad.yaml", "head_dropout"]),
    (("--gpus-per-trial", "1"), ["--gpus-per-trial", "0 GPU(s)"]),  # Ray would wait for it forever
])
def test_a_search_that_cannot_start_says_why_and_leaves_nothing_behind(env, tmp_path, change, words):
    bad_space = tmp_path / "bad.yaml"
    bad_space.write_text("hyperparameters:\n  head_dropout: {type: float, lower: 0.0, upper: 1.5}\n")
    flag, value = change
    name = f"never-{flag.strip('-')}"  # one per case: the --machine case leaves a finished search behind
    args = search_args(env, name, "fan", 3, 3)
    if flag in args:
        args[args.index(flag) + 1] = str(bad_space) if value == "BAD_SPACE" else value
    else:
        args += [flag, str(bad_space) if value == "BAD_SPACE" else value]
    res = run_cli(*args, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    assert not (env["root"] / "searches" / name).exists()
    # and a rerun with good inputs is not blocked by a stub of the failed one
    if flag == "--machine":
        ok = run_cli(*search_args(env, name, "fan", 1, 1))
        assert ok.returncode == 0, ok.stderr[-2000:]
        again = run_cli(*search_args(env, name, "fan", 1, 1, "--resume", "--max-epochs", "3"))
        assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
        assert "max_epochs 3 (saved: 1)" in again.stderr and "another --name" in again.stderr


def test_kill_driver_then_resume(env):
    name = "killed"
    args = [sys.executable, "-m", "bohb_search", *search_args(env, name, "valve", 9, 9)]
    penv = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, cwd=REPO, env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    exp_dir = env["root"] / "searches" / name / "ray"
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until several trials have checkpoints, then kill everything
        if len(list(exp_dir.glob("*/checkpoint_*"))) >= 5:
            break
        assert proc.poll() is None, "search ended before it could be interrupted"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (env["root"] / "searches" / name / "trials.csv").exists()

    res = run_cli(*search_args(env, name, "valve", 9, 9, "--resume"))
    assert res.returncode == 0, res.stderr[-3000:]
    trials = pd.read_csv(env["root"] / "searches" / name / "trials.csv")
    assert trials["trial_id"].nunique() == 9  # all trials, none added twice
    assert not trials.duplicated(["trial_id", "epoch"]).any()  # no epoch repeated
    assert (trials["status"] != "FAILED").all()
    client, runs = mlflow_trial_runs(env["db"], name)
    assert len(runs) == 9 and sorted(r.data.tags["ray_trial_id"] for r in runs) == sorted(trials["trial_id"].unique())
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_score")]
        assert len(steps) == len(set(steps)) and r.info.status in ("FINISHED", "KILLED")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    raise TimeoutError(url)


def test_search_logs_to_a_real_mlflow_server(env, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "art"),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/health")
        args = search_args(env, "served", "fan", 3, 3)
        args[args.index("--tracking-uri") + 1] = base
        res = run_cli(*args)
        assert res.returncode == 0, res.stderr[-3000:]

        def get(path: str, **params):
            with urllib.request.urlopen(f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}") as r:
                return json.loads(r.read())

        exp = get("experiments/get-by-name", experiment_name="bohb-search/served")["experiment"]
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [exp["experiment_id"]], "max_results": 100}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            runs = json.loads(r.read())["runs"]
        tags = lambda run: {t["key"]: t["value"] for t in run["data"].get("tags", [])}  # noqa: E731
        trials = [r for r in runs if tags(r).get("bohb_search.role") == "trial"]
        parents = [r for r in runs if tags(r).get("bohb_search.role") == "search"]
        assert len(trials) == 3 and len(parents) == 1
        assert all(tags(r)["mlflow.parentRunId"] == parents[0]["info"]["run_id"] for r in trials)
        for run in trials:
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            assert {"lr", "objective", "unfreeze_k", "score"} <= set(params)
            # conditional parameters: only those of the trial's objective
            assert ({"delta", "lambda_adv"} <= set(params)) == (params["objective"] == "poe")
            hist = get("metrics/get-history", run_id=run["info"]["run_id"], metric_key="val_score")["metrics"]
            assert [m["step"] for m in sorted(hist, key=lambda m: m["step"])] == list(range(1, len(hist) + 1))
            assert len(hist) >= 1
        metrics = {m["key"] for m in parents[0]["data"].get("metrics", [])}
        assert "best_val_score" in metrics and parents[0]["info"]["status"] == "FINISHED"
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/artifacts/list?"
                                    f"{urllib.parse.urlencode({'run_id': parents[0]['info']['run_id']})}") as r:
            arts = {f["path"] for f in json.loads(r.read()).get("files", [])}
        assert {"search_progress.png", "best_config.json", "trials.csv"} <= arts
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def readme_runtime_env() -> dict:
    """The runtime environment of the README's `ray job submit` command."""
    import re

    found = re.findall(r"--runtime-env-json '(\{.*?\})'", (REPO / "README.md").read_text())
    assert found, "README has no `ray job submit --runtime-env-json '...'` command"
    assert len(set(found)) == 1, found
    return json.loads(found[0])


def test_readme_runtime_env_ships_every_package():
    """Ray's own matching: an excludes entry `data` also drops the data/ PACKAGE from the job."""
    from ray._private.runtime_env.packaging import _get_excludes

    excluded = _get_excludes(REPO, readme_runtime_env()["excludes"])
    tracked = subprocess.run(["git", "ls-files", "bohb_search", "data", "models", "search_spaces", "pyproject.toml"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert len(tracked) > 20
    for f in tracked:
        for p in [REPO / f, *(REPO / f).parents]:
            if p == REPO:
                break
            assert not excluded(p), f"README's runtime env excludes {p.relative_to(REPO)} (needed: {f})"
    for f in (".venv/bin/python", "results/mlflow.db", ".git/HEAD", "datasets/dcase2025/dev_data/x.wav"):
        assert excluded(REPO / f), f


def _wait(check, what: str, timeout: float = 120, log: Path | None = None, procs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.poll() is not None for p in procs):  # a node died: say why now, not after the timeout
            raise RuntimeError(f"a node exited while waiting for {what}" + (f"; log:\n{log.read_text()[-3000:]}" if log else ""))
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout} s" + (f"; log:\n{log.read_text()[-3000:]}" if log else ""))


def test_two_node_cluster_from_the_entrypoint_runs_a_submitted_search(env, tmp_path):
    """docker/entrypoint.sh without docker: a head (+ MLflow server) and a second node with its own
    resources, token auth, loopback only; a search submitted with the README's runtime env runs trials on
    both nodes, every trial is a run on the MLflow server, and the job's output reaches the host."""
    import tempfile

    import ray as ray_lib

    # `ray stop --force` below ends every Ray process of this user: a Ray that an earlier test started
    # inside this pytest process must be shut down first, or its core worker exits pytest with it
    if ray_lib.is_initialized():
        ray_lib.shutdown()
    bin_dir = Path(sys.executable).parent
    ray = str(bin_dir / "ray")
    gcs, dash, mlflow_port = _free_port(), _free_port(), _free_port()
    short = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # AF_UNIX socket paths must stay < 108 bytes
    base = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
            "LISTEN_HOST": "127.0.0.1",
            "RAY_PORT": str(gcs), "DASHBOARD_PORT": str(dash), "MLFLOW_PORT": str(mlflow_port), "NUM_GPUS": "0",
            "LANG": "C.UTF-8"}
    homes = {k: tmp_path / k for k in ("head", "worker", "host")}
    for h in homes.values():
        h.mkdir()
    procs = []
    try:
        # the head, on a fresh home: no token anywhere, so the entrypoint must make one
        head_log = tmp_path / "head.log"
        procs.append(subprocess.Popen(
            [str(REPO / "docker" / "entrypoint.sh"), "head"], start_new_session=True,
            stdout=head_log.open("w"), stderr=subprocess.STDOUT,
            env={**base, "HOME": str(homes["head"]), "NUM_CPUS": "1", "RAY_TEMP_DIR": str(short / "h"),
                 "MLFLOW_STORE": str(tmp_path / "store")}))
        token_file = homes["head"] / ".ray" / "auth_token"
        _wait(lambda: token_file.exists() and token_file.read_text().strip(), "head token", 60, head_log, procs)
        token = token_file.read_text().strip()
        mlflow_base = f"http://127.0.0.1:{mlflow_port}"
        _wait(lambda: _http_ok(f"{mlflow_base}/health"), "MLflow server", 120, head_log, procs)
        # the second node: another home (no token file), the head's token through the environment
        worker_log = tmp_path / "worker.log"
        procs.append(subprocess.Popen(
            [str(REPO / "docker" / "entrypoint.sh"), "worker"], start_new_session=True,
            stdout=worker_log.open("w"), stderr=subprocess.STDOUT,
            env={**base, "HOME": str(homes["worker"]), "NUM_CPUS": "1", "RAY_TEMP_DIR": str(short / "w"),
                 "RAY_HEAD_ADDRESS": f"127.0.0.1:{gcs}", "RAY_AUTH_TOKEN": token,
                 "RAY_RESOURCES": '{"second_node": 1}'}))
        # the host: its own home, RAY_AUTH_TOKEN and RAY_AUTH_MODE as the README says
        host = {**os.environ, **base, "HOME": str(homes["host"]), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        address = f"http://127.0.0.1:{dash}"

        def alive_nodes():
            res = subprocess.run([ray, "list", "nodes", "--address", address, "--format", "json"], env=host,
                                 capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                return None
            nodes = [n for n in json.loads(res.stdout) if n.get("state") == "ALIVE"]
            return nodes if len(nodes) == 2 else None

        nodes = _wait(alive_nodes, "two Ray nodes", 180, worker_log, procs)
        # one machine: Ray 2.60 advertises the machine's own address even when told 127.0.0.1
        # (services.resolve_ip_for_localhost); the dashboard and MLflow listen on the loopback only
        assert len({n["node_ip"] for n in nodes}) == 1 and len({n["node_id"] for n in nodes}) == 2

        # MLflow answers the compose service name (the entrypoint's --allowed-hosts) and refuses others
        def status_for(host_header: str) -> int:
            req = urllib.request.Request(f"{mlflow_base}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers={"Host": host_header})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as err:
                return err.code

        assert status_for(f"head:{mlflow_port}") == 200
        assert status_for(f"evil.example:{mlflow_port}") == 403

        args = search_args(env, "clustered", "fan", 4, 3, "--cpus-per-trial", "1", "--address", "auto")
        args[args.index("--tracking-uri") + 1] = mlflow_base
        # short trials: on a cluster the search starts a new actor per trial (no reuse), so the two CPUs
        # of the two nodes both get trials however quickly the first one ends
        args.remove("--quiet")
        sub = subprocess.run([ray, "job", "submit", "--address", address, "--working-dir", str(REPO),
                              "--runtime-env-json", json.dumps(readme_runtime_env()), "--",
                              "python", "-m", "bohb_search", *args],
                             env=host, capture_output=True, text=True, timeout=900)
        (tmp_path / "job.log").write_text(sub.stdout + sub.stderr)
        assert sub.returncode == 0, (sub.stdout + sub.stderr)[-4000:]
        # the job's own output reached the host (the plan printed before the search, the result after)
        assert "planned epoch budget" in sub.stdout and "search clustered: best_val_score" in sub.stdout
        jobs = subprocess.run([ray, "job", "list", "--address", address], env=host, capture_output=True, text=True)
        assert "SUCCEEDED" in jobs.stdout

        out = env["root"] / "searches" / "clustered"
        trials = pd.read_csv(out / "trials.csv")
        assert trials["trial_id"].nunique() == 4
        assert set(trials["node_id"].dropna()) == {n["node_id"] for n in nodes}, sub.stdout[-6000:]  # both nodes

        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow_base)
        exp = client.get_experiment_by_name("bohb-search/clustered")
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        runs = client.search_runs([exp.experiment_id], "tags.`bohb_search.role` = 'trial'")
        assert sorted(r.data.tags["ray_trial_id"] for r in runs) == sorted(trials["trial_id"].unique())
        assert {r.data.tags["ray_node_id"] for r in runs} == {n["node_id"] for n in nodes}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run([ray, "stop", "--force"], env={**os.environ, **base}, capture_output=True, timeout=120)
        import shutil

        shutil.rmtree(short, ignore_errors=True)


def _http_ok(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_final_train_on_two_searches(env, fan_search, tmp_path):
    res = run_cli(*search_args(env, "valve-small", "valve", 3, 3))
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs", res.stdout), res.stdout[-2000:]
    out = tmp_path / "final"
    res = run_cli("final-train", "--best", str(fan_search / "best_config.json"),
                  str(env["root"] / "searches" / "valve-small" / "best_config.json"), "--out", str(out),
                  "--max-epochs", "4", "--with-baseline", "--baseline-epochs", "2", "--cache-dir", str(env["cache"]),
                  "--tracking-uri", env["db"], "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Proposed (machine-specific)" in res.stdout
    assert re.search(r"#/experiments/\d+/runs", res.stdout.split("the final models")[-1])  # the runs table link
    # the plan and ETA came first (4 fine-tunings of at most 4 epochs, 2 AEs of 2 epochs)
    assert res.stdout.index("estimated time") < res.stdout.index("Proposed (machine-specific)")
    for name in ("table2.csv", "table2.md", "table3.csv", "table3.md"):
        assert (out / "tables" / name).stat().st_size > 0
    for search, machine in (("fan-bohb", "fan"), ("valve-small", "valve")):
        assert (out / "models" / search / "model.pt").exists()
        assert (out / "evaluate" / search / "submission" / f"decision_result_{machine}_section_00_test.csv").exists()
    # recompute the metrics from the written score files + the test labels and compare with the table
    from data.manifest import read_manifest

    truth = read_manifest(env["data"])
    truth = truth[truth["split"] == "test"][["machine", "section", "domain", "label", "file"]]
    scores = pd.concat([read_submission_dir(out / "evaluate" / s / "submission") for s in ("fan-bohb", "valve-small")])
    merged = truth.merge(scores[["file_name", "score", "machine"]], left_on=["file", "machine"],
                         right_on=["file_name", "machine"])
    assert len(merged) == len(truth)
    # the tables report on the clips no model was selected on: the report half when a model chose its epoch on
    # the validation half (the part column of each evaluation's scores.csv says which clip is which)
    parts = pd.concat([pd.read_csv(out / "evaluate" / s / "scores.csv", dtype={"section": str})
                       for s in ("fan-bohb", "valve-small")])[["file", "machine", "part"]]
    merged = merged.merge(parts, on=["file", "machine"])
    summary = json.loads((out / "tables" / "summary.json").read_text())
    if summary["reported_on"].startswith("Every system reported on the report half"):
        merged = merged[merged["part"] == "report"]
    again = evaluate_scores(merged)
    table2 = pd.read_csv(out / "tables" / "table2.csv")
    row = table2[(table2.iloc[:, 0] == "Proposed (machine-specific)") & (table2.iloc[:, 1] == "TOTAL")]
    assert float(row["hmean"].iloc[0]) == pytest.approx(again.total_hmean, abs=5e-4)
    from mlflow.tracking import MlflowClient

    from bohb_search.evaluate.plots import is_png

    assert is_png(out / "evaluate" / "fan-bohb" / "plots" / "roc_fan.png")
    client = MlflowClient(env["db"])
    final_runs = client.search_runs([client.get_experiment_by_name("bohb-search/final").experiment_id])
    assert {r.data.tags["bohb_search.search"] for r in final_runs} >= {"fan-bohb", "valve-small"}
    # every final model has its run, the AE baselines included, with metrics and tables
    assert {r.data.tags["bohb_search.search"] for r in final_runs} == {
        f"{s}{kind}" for s in ("fan-bohb", "valve-small") for kind in ("", "-ae", "-ae-mahala", "-stats")}
    # the statistics yardstick sits beside the AE in the tables
    assert "Baseline (statistics k-NN, no training)" in set(table2.iloc[:, 0])
    for run in final_runs:
        assert "official_score" in run.data.metrics, run.data.tags
        tables = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
        assert "tables/scores.csv" in tables, (run.data.tags, tables)
    arts = {a.path for a in client.list_artifacts(final_runs[0].info.run_id, "plots")}
    assert any(p.endswith(".png") for p in arts)
    assert summary["Proposed (machine-specific)"]["official_score"] == pytest.approx(again.official_score, abs=1e-9)

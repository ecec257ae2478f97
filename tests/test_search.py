"""Real BOHB searches on a real local Ray, tracked in a real MLflow store (tiny model, synthetic data)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
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
    resumed = trials[(trials["restored_from_epoch"] > 0)]
    assert not resumed.empty
    # a resumed trial continued from its checkpoint epoch (never from epoch 0)
    first_after = resumed.sort_values("epoch").groupby("trial_id").first()
    assert (first_after["epoch"] == first_after["restored_from_epoch"] + 1).all()
    assert set(per_trial["status"]) <= {"FINISHED", "KILLED"} and "KILLED" in set(per_trial["status"])

    best = json.loads((fan_search / "best_config.json").read_text())
    assert best["metric"]["name"] == "best_val_auc" and 0 <= best["metric"]["value"] <= 1
    assert best["trial_id"] in set(per_trial.index) and best["budget_epochs"] in (1, 3, 9)
    assert len(best["space_sha256"]) == 64 and best["machines"] == ["fan"] and best["seed"] == 0
    assert {"lr", "lambda_adv", "delta", "unfreeze_k"} <= set(best["hyperparameters"])

    client, runs = mlflow_trial_runs(env["db"], "fan-bohb")
    assert sorted(r.data.tags["ray_trial_id"] for r in runs) == sorted(per_trial.index)  # one run per trial
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_auc")]
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
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_auc")]
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
            params = {p["key"] for p in run["data"]["params"]}
            assert {"lr", "delta", "lambda_adv", "unfreeze_k"} <= params
            hist = get("metrics/get-history", run_id=run["info"]["run_id"], metric_key="val_auc")["metrics"]
            assert [m["step"] for m in sorted(hist, key=lambda m: m["step"])] == list(range(1, len(hist) + 1))
            assert len(hist) >= 1
        metrics = {m["key"] for m in parents[0]["data"].get("metrics", [])}
        assert "best_best_val_auc" in metrics and parents[0]["info"]["status"] == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_ray_job_submit_to_a_started_cluster(env, tmp_path):
    import tempfile

    import ray as ray_lib

    # `ray stop --force` below ends every Ray process of this user: a Ray that an earlier test started
    # inside this pytest process must be shut down first, or its core worker exits pytest with it
    if ray_lib.is_initialized():
        ray_lib.shutdown()

    ray = str(Path(sys.executable).parent / "ray")
    gcs, dash = _free_port(), _free_port()
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # AF_UNIX socket paths must stay < 108 bytes
    cenv = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep the cluster on 127.0.0.1
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "RAY_TMPDIR": str(ray_tmp)}
    # token authentication (Ray 2.60): make sure a token exists for this user (no-op when it does)
    subprocess.run([ray, "get-auth-token", "--generate"], env=cenv, capture_output=True, timeout=60)
    started = subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
                              "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
                              "--temp-dir", str(ray_tmp), "--disable-usage-stats"],
                             env=cenv, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        address = f"http://127.0.0.1:{dash}"
        args = search_args(env, "jobbed", "fan", 3, 3)
        excludes = json.dumps({"excludes": [".venv", "results", ".git", "tests/fixtures", "*.egg-info"]})
        sub = subprocess.run([ray, "job", "submit", "--address", address, "--working-dir", str(REPO),
                              "--runtime-env-json", excludes, "--", "python", "-m", "bohb_search", *args],
                             env=cenv, capture_output=True, text=True, timeout=600)
        assert sub.returncode == 0, (sub.stdout + sub.stderr)[-3000:]
        jobs = subprocess.run([ray, "job", "list", "--address", address], env=cenv, capture_output=True, text=True)
        assert "SUCCEEDED" in jobs.stdout
        out = env["root"] / "searches" / "jobbed"
        assert (out / "best_config.json").exists() and len(pd.read_csv(out / "trials.csv")["trial_id"].unique()) == 3
    finally:
        subprocess.run([ray, "stop", "--force"], env=cenv, capture_output=True, timeout=120)
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_final_train_on_two_searches(env, fan_search, tmp_path):
    res = run_cli(*search_args(env, "valve-small", "valve", 3, 3))
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "final"
    res = run_cli("final-train", "--best", str(fan_search / "best_config.json"),
                  str(env["root"] / "searches" / "valve-small" / "best_config.json"), "--out", str(out),
                  "--max-epochs", "4", "--cache-dir", str(env["cache"]), "--tracking-uri", env["db"], "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Proposed (machine-specific)" in res.stdout
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
    arts = {a.path for a in client.list_artifacts(final_runs[0].info.run_id, "plots")}
    assert any(p.endswith(".png") for p in arts)
    summary = json.loads((out / "tables" / "summary.json").read_text())
    assert summary["Proposed (machine-specific)"]["official_score"] == pytest.approx(again.official_score, abs=1e-9)

"""MLflow tracking of searches: one parent run per search, exactly one child run per trial.

Ray Tune's ``setup_mlflow`` opens a new run every time a paused trial resumes (BOHB pauses most
trials), so this module logs from the DRIVER instead, through a Ray Tune ``Callback``: the trial's
run is looked up by its ``ray_trial_id`` tag, so pause/resume inside a search and a ``--resume``
after the driver died both keep writing into the same run. Metrics are logged with
``step = epoch``, and an epoch already logged is never logged twice (a trial resumed from an older
checkpoint re-runs a few epochs).

Run statuses: FINISHED (early-stopped or full budget), KILLED (stopped by the Hyperband scheduler;
tag ``trial_status=KILLED``), FAILED (raised, e.g. a NaN loss; tag ``error``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ray.tune import Callback

PARENT_TAG = "bohb_search.role"
SEARCH_TAG = "bohb_search.search"
TRIAL_TAG = "ray_trial_id"
DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
_SKIP_METRICS = {"done", "training_iteration", "epoch", "timestamp", "time_this_iter_s", "time_total_s", "pid",
                 "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total"}


def resolve_tracking_uri(uri: str | None) -> str:
    """CLI value, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///results/mlflow.db`` (made absolute,
    so Ray workers and ``ray job submit`` working directories all write the same store)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    return uri


def mlflow_ui_command(uri: str) -> str:
    """The command that opens ``uri`` in the MLflow UI, with the ``mlflow`` of this environment (a bare
    ``mlflow`` may be another install, or none, outside the activated venv)."""
    import shlex
    import sys

    exe = Path(sys.executable).parent / "mlflow"
    return f"{shlex.quote(str(exe))} ui --backend-store-uri {shlex.quote(uri)} --port 5000"


def experiment_runs_link(uri: str, experiment: str, ui: str = "http://127.0.0.1:5000") -> str | None:
    """The MLflow UI page that lists ``experiment``'s runs (its trials), or None when there is no such
    experiment. MLflow 3's home page and bare experiment links open the GenAI (traces) view; the runs table
    lives at ``#/experiments/<id>/runs``. ``ui`` is where ``mlflow ui`` serves a local store; an http(s)
    tracking URI is its own UI."""
    exp = client(uri).get_experiment_by_name(experiment)
    if exp is None:
        return None
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui.rstrip("/")
    return f"{base}/#/experiments/{exp.experiment_id}/runs"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a local (sqlite) store go next to the database, not into ./mlruns of whatever
    directory the command ran in; a tracking server decides for itself (None)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts" / experiment.replace("/", "_")).resolve().as_uri()
    return None


# MLflow 3's UI opens an experiment without this tag in its GenAI (traces) view; these experiments are
# model training, whose runs, metrics and compare pages live in the "custom model development" view
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def get_or_create_experiment(client, name: str, uri: str) -> str:
    import mlflow

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=artifact_location(uri, name),
                                              tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException:  # created concurrently by another process
            exp_id = client.get_experiment_by_name(name).experiment_id
        return exp_id
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made by an earlier version
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def flat_params(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return {k: v[:6000] for k, v in out.items()}


class SearchTracker:
    """The parent run of one search and the lookup of its trials' runs (used by the callback and
    by the runner for the final artifacts)."""

    def __init__(self, tracking_uri: str, experiment: str, search_name: str):
        self.uri = tracking_uri
        self.client = client(tracking_uri)
        self.search_name = search_name
        self.experiment_id = get_or_create_experiment(self.client, experiment, tracking_uri)
        parents = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = 'search' and tags.`{SEARCH_TAG}` = '{search_name}'")
        if parents:
            self.parent_id = parents[0].info.run_id
            if parents[0].info.status != "RUNNING":
                self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=f"search {search_name}",
                                         tags={PARENT_TAG: "search", SEARCH_TAG: search_name})
            self.parent_id = run.info.run_id

    def log_settings(self, settings: dict) -> None:
        existing = self.client.get_run(self.parent_id).data.params
        params = {k: v for k, v in flat_params(settings).items() if k not in existing}
        from mlflow.entities import Param

        if params:
            self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in params.items()])

    def trial_runs(self) -> dict[str, str]:
        """{ray trial id: mlflow run id} of this search's child runs (all pages)."""
        out: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = '{self.search_name}' and "
                                                    f"tags.`{PARENT_TAG}` = 'trial'",
                max_results=1000, page_token=token)
            out.update({r.data.tags[TRIAL_TAG]: r.info.run_id for r in page})
            token = page.token
            if not token:
                return out

    def finish(self, artifacts: list[Path], metrics: dict[str, float], status: str = "FINISHED") -> None:
        for path in artifacts:
            if Path(path).exists():
                self.client.log_artifact(self.parent_id, str(path))
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.client.log_metric(self.parent_id, k, float(v))
        self.client.set_terminated(self.parent_id, status)


class MLflowTrialCallback(Callback):
    """Ray Tune callback (runs in the driver): one MLflow child run per trial, surviving pause/resume."""

    def __init__(self, tracking_uri: str, experiment: str, search_name: str, max_epochs: int):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.search_name = search_name
        self.max_epochs = max_epochs
        self.tracker: SearchTracker | None = None
        self._runs: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self._node: dict[str, str] = {}

    # Ray pickles callbacks with the experiment state; the MLflow client is rebuilt on setup
    def __getstate__(self):
        return {**self.__dict__, "tracker": None, "_runs": {}, "_last_step": {}, "_node": {}}

    def setup(self, **info):
        self.tracker = SearchTracker(self.tracking_uri, self.experiment, self.search_name)
        self._runs = self.tracker.trial_runs()
        for trial_id, run_id in self._runs.items():  # resume: continue after the last logged epoch
            hist = self.tracker.client.get_metric_history(run_id, "val_score")
            self._last_step[trial_id] = max((m.step for m in hist), default=0)

    def _run_for(self, trial) -> str:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            client = self.tracker.client
            run = client.create_run(
                self.tracker.experiment_id, run_name=f"trial {trial.trial_id}",
                tags={PARENT_TAG: "trial", SEARCH_TAG: self.search_name, TRIAL_TAG: trial.trial_id,
                      "mlflow.parentRunId": self.tracker.parent_id})
            run_id = run.info.run_id
            self._runs[trial.trial_id] = run_id
            self._last_step[trial.trial_id] = 0
            from mlflow.entities import Param

            client.log_batch(run_id, params=[Param(k, v) for k, v in flat_params(dict(trial.config)).items()])
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        self.tracker.client.set_tag(run_id, "trial_status", "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self._run_for(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= self._last_step.get(trial.trial_id, 0):
            return  # re-run epoch after a restore from an older checkpoint: already logged
        ts = int(result.get("timestamp", 0) * 1000)
        metrics = [Metric(k, float(v), ts, step) for k, v in result.items()
                   if k not in _SKIP_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v)]
        self.tracker.client.log_batch(run_id, metrics=metrics)
        self._last_step[trial.trial_id] = step
        node = result.get("node_id")
        if node and self._node.get(trial.trial_id) != node:  # where it ran (a paused trial may move)
            self.tracker.client.set_tag(run_id, "ray_node_id", node)
            self._node[trial.trial_id] = node
        self.tracker.client.set_tag(run_id, "budget_epochs", str(step))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        last = trial.last_result or {}
        reached = int(last.get("epoch", last.get("training_iteration", 0)))
        finished = bool(last.get("early_stopped")) or reached >= self.max_epochs
        status = "FINISHED" if finished else "KILLED"
        self.tracker.client.set_tag(run_id, "trial_status", status)
        self.tracker.client.set_tag(run_id, "budget_epochs", str(reached))
        self.tracker.client.set_terminated(run_id, status)

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        err = ""
        if getattr(trial, "error_file", None) and Path(trial.error_file).exists():
            lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
            err = lines[-1] if lines else ""
        self.tracker.client.set_tag(run_id, "trial_status", "FAILED")
        self.tracker.client.set_tag(run_id, "error", err[:4000])
        self.tracker.client.set_terminated(run_id, "FAILED")

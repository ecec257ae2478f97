"""What a user sees before and while a search runs: the plan, the ETA and its warning, the progress
columns, the MLflow command, and the refusals of a resume with other settings (no Ray needed)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import torch

from bohb_search.train.configs import FinetuneConfig
from bohb_search.train.estimate import ONE_HOUR, EpochEstimate, eta_lines, format_duration, print_lines
from bohb_search.tune.runner import resume_settings
from bohb_search.tune.searchers import planned_iterations
from bohb_search.tune.settings import SearchError, SearchSettings
from bohb_search.tune.tracking import mlflow_ui_command
from bohb_search.tune.trainable import PROGRESS_COLUMNS, progress_first
from data.datasets import DataError
from models import save_checkpoint

BASE = dict(name="fan", data=["/d"], machines=["fan"], pretrained="/p/encoder.pt", space="/s.yaml")


@pytest.mark.parametrize("samples, max_epochs, scheduler, expected", [
    # the paper's search: one bracket of 81 places starting at 1 epoch; Ray keeps ceil(n/η) PLACES per
    # rung, so all 27 trials reach 3 epochs, 9 reach 9, 3 reach 27 and 1 reaches 81
    (27, 81, "hyperband_bohb", 27 * 3 + 9 * 6 + 3 * 18 + 1 * 54),
    (9, 9, "hyperband_bohb", 9 + 3 * 2 + 1 * 6),  # the tests' search (checked against Ray in test_search)
    # more trials than the first bracket holds: the next bracket has ceil(3/2 · 3) = 5 places starting at
    # 3 epochs, and keeps ceil(5/3) = 2 of them, so 2 of its 3 trials reach 9
    (12, 9, "hyperband_bohb", (9 + 3 * 2 + 1 * 6) + (3 * 3 + 2 * 6)),
    (5, 10, "fifo", 50),
    (9, 9, "asha", 9 + 3 * 2 + 1 * 6),
])
def test_planned_iterations(samples, max_epochs, scheduler, expected):
    searcher = "bohb" if scheduler == "hyperband_bohb" else "random"
    s = SearchSettings(**BASE, num_samples=samples, max_epochs=max_epochs, scheduler=scheduler, searcher=searcher)
    assert planned_iterations(s) == expected


def test_an_eta_over_an_hour_on_cpu_warns_on_stderr_and_a_gpu_does_not(capsys):
    est = EpochEstimate(seconds_per_epoch=60.0, batches_per_epoch=20, seconds_per_batch=3.0, device="cpu")
    lines = eta_lines("plan: 27 trials", 2 * ONE_HOUR, est)
    assert lines[0] == "plan: 27 trials" and "2.0 h" in lines[1] and lines[2].startswith("warning:")
    print_lines(lines)
    out, err = capsys.readouterr()
    assert "warning" in err and "warning" not in out and "estimated time: 2.0 h" in out
    gpu = EpochEstimate(60.0, 20, 3.0, "cuda:0")
    assert not any(line.startswith("warning") for line in eta_lines("plan", 2 * ONE_HOUR, gpu))
    assert not any(line.startswith("warning") for line in eta_lines("plan", 0.5 * ONE_HOUR, est))
    assert [format_duration(x) for x in (30, 600, 3 * 3600, 3 * 86400)] == ["30 s", "10 min", "3.0 h", "3.0 days"]


def test_the_progress_table_starts_with_the_optimised_metric_and_the_domain_aucs():
    result = {"loss_oe": 1.0, "loss_normal": 0.5, "loss_outlier": 0.2, "epoch": 3, "val_auc_target": 0.6,
              "best_val_score": 0.7, "val_score": 0.65, "val_auc_source": 0.8}
    ordered = progress_first(result)
    assert list(ordered)[:4] == list(PROGRESS_COLUMNS) == ["val_score", "best_val_score", "val_auc_source",
                                                           "val_auc_target"]
    assert ordered == result  # nothing lost or changed


def test_the_mlflow_command_names_this_environments_mlflow():
    cmd = shlex.split(mlflow_ui_command("sqlite:////abs/results/mlflow.db"))
    assert cmd[0] == str(Path(sys.executable).parent / "mlflow") and Path(cmd[0]).exists()
    assert cmd[1:4] == ["ui", "--backend-store-uri", "sqlite:////abs/results/mlflow.db"]


def test_resume_keeps_the_saved_search_and_refuses_other_settings():
    saved = SearchSettings(**BASE, num_samples=9, max_epochs=9)
    # where it runs may change; the saved search is what continues
    given = SearchSettings(**{**BASE, "data": ["/other"]}, num_samples=9, max_epochs=9, device="cpu")
    kept = resume_settings(saved, given, explicit=["device", "name"])
    assert kept.device == "cpu" and kept.data == ["/d"]
    with pytest.raises(SearchError, match=r"data \['/other'\] \(saved: \['/d'\]\)") as err:
        resume_settings(saved, given, explicit=["data", "device"])
    assert "\n" not in str(err.value)


def test_a_training_out_folder_is_resumed_only_with_the_same_settings(tmp_path):
    from bohb_search.train.runs import load_resume_state

    cfg = FinetuneConfig(lr=1e-3, max_epochs=4)
    save_checkpoint(tmp_path / "trainer_last.pt", {"config": cfg.to_dict(), "epoch": 2,
                                                   "rng": torch.get_rng_state()})
    assert load_resume_state(tmp_path, FinetuneConfig(lr=1e-3, max_epochs=10))["epoch"] == 2  # more epochs: fine
    with pytest.raises(DataError, match=r"lr 0.002 \(saved: 0.001\)") as err:
        load_resume_state(tmp_path, FinetuneConfig(lr=2e-3, max_epochs=4))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)
    assert load_resume_state(tmp_path / "fresh", cfg) is None


@pytest.mark.parametrize("cmd", ["pretrain", "finetune", "baseline"])
def test_help_says_an_existing_out_folder_is_resumed(cmd, capsys):
    from bohb_search.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    out_help = text[text.rindex("--out OUT"):][:300]  # the option's help, not the usage line
    assert "resumed" in out_help and "refused" in out_help, out_help


def test_the_printed_mlflow_link_opens_the_experiments_runs_table(tmp_path):
    from bohb_search.tune.tracking import client, experiment_runs_link, get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = get_or_create_experiment(client(uri), "bohb-search/fan", uri)
    # MLflow 3's bare experiment link opens the GenAI view; the trials are in the runs table
    assert experiment_runs_link(uri, "bohb-search/fan") == f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs"
    assert experiment_runs_link(uri, "bohb-search/none") is None

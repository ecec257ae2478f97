"""End to end through the CLI on a small synthetic set: pretrain → finetune → evaluate → score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bohb_search.evaluate.metrics import evaluate_scores
from bohb_search.evaluate.submission import read_submission_dir
from models import load_checkpoint
from tests.conftest import FIXTURES, run_cli

EASY = "fan"  # the synthetic machine whose faults (blade-pass sidebands, rubbing) a small model finds quickly
SMALL_MODEL = ["--preset", "tiny", "--dim", "32", "--depth", "2"]


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    res = run_cli("data", "synth", "--out", str(root), "--machines", EASY, "valve", "--train-source", "40",
                  "--train-target", "4", "--test-per-cell", "12", "--seconds", "4", "--quiet")
    assert res.returncode == 0, res.stderr
    return root


@pytest.mark.slow
def test_pretrain_finetune_evaluate_score(synth_set, tmp_path):
    cache = tmp_path / "cache"
    common = ["--seconds", "4", "--cache-dir", str(cache), "--quiet"]
    res = run_cli("pretrain", "--data", str(synth_set), "--out", str(tmp_path / "pre"), "--epochs", "1",
                  "--batch-size", "32", *SMALL_MODEL, *common)
    assert res.returncode == 0, res.stderr
    pre = tmp_path / "pre" / "encoder.pt"
    assert load_checkpoint(pre)["classes"] == [EASY, "valve"]

    res = run_cli("finetune", "--pretrained", str(pre), "--data", str(synth_set), "--machine", EASY,
                  "--out", str(tmp_path / "ft"), "--max-epochs", "6", "--batch-size", "32", "--lr", "1e-3",
                  "--unfreeze-k", "2", "--min-steps-per-epoch", "0", *common)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "ft" / "finetune_report.json").read_text())
    assert report["selection"] == "validation part" and "24 clips" in report["validation"]
    assert report["best_val_score"] > 0.5, report
    assert len(pd.read_csv(tmp_path / "ft" / "history.csv")) == report["epochs_run"]

    res = run_cli("evaluate", "--model", str(tmp_path / "ft" / "model.pt"), "--data", str(synth_set),
                  "--out", str(tmp_path / "eval"), "--cache-dir", str(cache), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "official score" in res.stdout
    for name in ("table2.csv", "table2.md", "table3.csv", "table3.md", "scores.csv", "metrics.json"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    from bohb_search.evaluate.plots import is_png

    assert is_png(tmp_path / "eval" / "plots" / f"roc_{EASY}.png")
    assert is_png(tmp_path / "eval" / "plots" / f"hist_{EASY}.png")
    sub = tmp_path / "eval" / "submission"
    assert (sub / f"anomaly_score_{EASY}_section_00_test.csv").exists()
    assert (sub / f"decision_result_{EASY}_section_00_test.csv").exists()
    # the tables agree with the metrics recomputed from the written score files
    scores = read_submission_dir(sub)
    truth = pd.read_csv(tmp_path / "eval" / "scores.csv")
    merged = truth.drop(columns="score").merge(scores[["file_name", "score"]], left_on="file", right_on="file_name")
    assert len(merged) == len(truth) == 48  # a submission file for every test clip
    assert (truth["part"] == "report").sum() == 24  # the tables: the half no epoch was selected on
    again = evaluate_scores(merged[merged["part"] == "report"])
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again.official_score == pytest.approx(written["official_score"], abs=1e-9)
    assert "report half" in written["reported_on"] and "report half" in (tmp_path / "eval" / "table2.md").read_text()
    assert (tmp_path / "eval" / "diagnostics.md").exists() and "domain_auc_normals" in written["diagnostics"]["all"]

    # evaluate's score of every clip is the deployed model's score of that file (rows never misaligned)
    res = run_cli("score", "--model", str(tmp_path / "ft" / "model.pt"), str(synth_set / EASY / "test"),
                  "--out", str(tmp_path / "direct.csv"))
    assert res.returncode == 0, res.stderr
    direct = pd.read_csv(tmp_path / "direct.csv").assign(file=lambda d: d["path"].map(lambda p: Path(p).name))
    both = truth.merge(direct[["file", "score"]], on="file", suffixes=("", "_direct"))
    assert len(both) == 48
    # the cache keeps float16 log-mels, `score` reads the audio: equal up to that rounding
    assert np.corrcoef(both["score"], both["score_direct"])[0, 1] > 0.999

    # score new recordings of any length (a real 12 s clip and a 4 s synthetic one)
    real = next((FIXTURES / "real_clips" / "dcase2023" / "ToyCar").rglob("*.wav"))
    one = next((synth_set / EASY / "test").glob("*anomaly*.wav"))
    res = run_cli("score", "--model", str(tmp_path / "ft" / "model.pt"), str(real), str(one),
                  "--out", str(tmp_path / "scores.csv"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[1] in ("normal", "anomalous") for line in lines)
    table = pd.read_csv(tmp_path / "scores.csv")
    assert table.loc[0, "windows"] > 1  # 12 s recording, 4 s model: several windows


@pytest.mark.slow
def test_ae_baseline_same_commands(synth_set, tmp_path):
    cache = tmp_path / "cache"
    res = run_cli("baseline", "--data", str(synth_set), "--machine", EASY, "--out", str(tmp_path / "ae"),
                  "--max-epochs", "3", "--seconds", "4", "--cache-dir", str(cache), "--quiet")
    assert res.returncode == 0, res.stderr
    bundle = load_checkpoint(tmp_path / "ae" / "model.pt")
    assert bundle["model_kind"] == "ae" and bundle["selection"] == "fixed budget"
    for score in ("mse", "mahalanobis"):
        res = run_cli("evaluate", "--model", str(tmp_path / "ae" / "model.pt"), "--data", str(synth_set),
                      "--out", str(tmp_path / f"eval-{score}"), "--cache-dir", str(cache), "--quiet",
                      "--ae-score", score)
        assert res.returncode == 0, res.stderr
        assert json.loads((tmp_path / f"eval-{score}" / "metrics.json").read_text())["score"] == score
    mse = pd.read_csv(tmp_path / "eval-mse" / "scores.csv")["score"]
    mahala = pd.read_csv(tmp_path / "eval-mahalanobis" / "scores.csv")["score"]
    assert not np.allclose(mse, mahala)


def test_finetune_usage_errors(synth_set, tmp_path):
    res = run_cli("finetune", "--data", str(synth_set), "--out", str(tmp_path), "--machine", EASY)
    assert res.returncode == 2 and "--pretrained CKPT is required" in res.stderr
    res = run_cli("finetune", "--data", str(synth_set), "--out", str(tmp_path), "--from-scratch", "--machine", "pump")
    assert res.returncode == 2 and "no clips for pump" in res.stderr and res.stderr.count("\n") == 1
    res = run_cli("finetune", "--data", str(synth_set), "--out", str(tmp_path), "--pretrained", str(tmp_path / "x.pt"),
                  "--machine", EASY)
    assert res.returncode == 2 and "x.pt" in res.stderr


def test_real_clips_pretrain_finetune_evaluate_score(tmp_path):
    """Real DCASE 2023 recordings through every command (a smoke run: two training clips are far too few
    to judge detection). Its test split (one source normal, one target anomaly) is too small to split into
    a validation and a report half, so the fine-tuning trains its fixed budget and says why."""
    data = FIXTURES / "real_clips" / "dcase2023"
    common = ["--cache-dir", str(tmp_path / "cache"), "--quiet"]
    res = run_cli("pretrain", "--data", str(data), "--out", str(tmp_path / "pre"), "--epochs", "1",
                  "--batch-size", "4", *SMALL_MODEL, *common)
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(tmp_path / "pre" / "encoder.pt")["classes"] == ["ToyCar", "gearbox"]
    res = run_cli("finetune", "--pretrained", str(tmp_path / "pre" / "encoder.pt"), "--data", str(data),
                  "--machine", "gearbox", "--out", str(tmp_path / "ft"), "--max-epochs", "2", "--batch-size", "4",
                  "--embedding", "head", *common)  # a score training changes: the fixed budget is trained
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "ft" / "finetune_report.json").read_text())
    assert report["selection"] == "fixed budget" and report["epochs_run"] == 2
    assert "validation half of the labelled test split (0 of 2 clips) lacks normals or anomalies" in report["validation"]
    assert report["lambda_adv_effective"] == 0.0  # source-only training clips: no domain to adapt
    res = run_cli("evaluate", "--model", str(tmp_path / "ft" / "model.pt"), "--data", str(data),
                  "--out", str(tmp_path / "eval"), *common)
    assert res.returncode == 0, res.stderr
    scores = pd.read_csv(tmp_path / "eval" / "scores.csv")
    # nothing was selected on the test clips, so both are reported on
    assert len(scores) == 2 and np.isfinite(scores["score"]).all() and set(scores["part"]) == {"report"}
    assert (tmp_path / "eval" / "submission" / "anomaly_score_gearbox_section_00_test.csv").exists()
    res = run_cli("score", "--model", str(tmp_path / "ft" / "model.pt"), str(data / "gearbox" / "test"))
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 2

"""Scores as a separate stage, through the CLI: re-scoring a saved model, no test statistic in any score,
and evaluation of one-domain and unlabelled (evaluation-layout) data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SMALL = ["--preset", "tiny", "--dim", "32", "--depth", "2"]
FAST_FT = ["--max-epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--min-steps-per-epoch", "0", "--quiet",
           "--seconds", "4"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    data = root / "data"
    res = run_cli("data", "synth", "--out", str(data), "--machines", "fan", "valve", "--train-source", "16",
                  "--train-target", "3", "--test-per-cell", "6", "--seconds", "4", "--quiet")
    assert res.returncode == 0, res.stderr
    res = run_cli("pretrain", "--data", str(data), "--out", str(root / "pre"), "--epochs", "1", "--batch-size", "16",
                  "--seconds", "4", "--quiet", *SMALL)
    assert res.returncode == 0, res.stderr
    return {"root": root, "data": data, "pre": root / "pre" / "encoder.pt"}


def finetune(env, out, *extra):
    res = run_cli("finetune", "--pretrained", str(env["pre"]), "--data", str(env["data"]), "--machine", "fan",
                  "--out", str(out), *FAST_FT, *extra)
    assert res.returncode == 0, res.stderr
    return out / "model.pt"


def evaluate(model, data, out, *extra):
    res = run_cli("evaluate", "--model", str(model), "--data", str(data), "--out", str(out), "--quiet", *extra)
    assert res.returncode == 0, res.stderr
    return pd.read_csv(out / "scores.csv")


@pytest.mark.parametrize("score", [["--score", "knn", "--embedding", "head", "--knn-k", "2"],
                                   ["--score", "knn", "--embedding", "head", "--density-k", "1", "--standardise",
                                    "--source-bank", "kmeans",
                                    "--n-centres", "4", "--target-augment", "interpolate"],
                                   ["--score", "knn", "--embedding", "patch_stats", "--density-k", "1", "--standardise",
                                    "--target-augment", "interpolate"]],
                         ids=["knn-k2", "knn-normalised", "patch-stats"])
def test_rescoring_a_saved_model_reproduces_a_model_trained_with_that_score(env, tmp_path, score):
    trained_with = finetune(env, tmp_path / "with", *score)
    other = finetune(env, tmp_path / "cosine", "--score", "cosine")
    direct = evaluate(trained_with, env["data"], tmp_path / "ev-with")
    rescored = evaluate(other, env["data"], tmp_path / "ev-rescored", *score)
    np.testing.assert_allclose(rescored["score"], direct["score"], rtol=1e-5, atol=1e-6)
    as_trained = evaluate(other, env["data"], tmp_path / "ev-cosine")
    assert not np.allclose(as_trained["score"], direct["score"])
    label = json.loads((tmp_path / "ev-rescored" / "metrics.json").read_text())["score"]
    assert label.startswith("patchstats-knn" if "patch_stats" in score else "knn")


@pytest.mark.parametrize("embedding", ["head", "patch_stats"])
def test_no_statistic_of_the_other_test_clips_reaches_a_score(env, tmp_path, embedding):
    model = finetune(env, tmp_path / "ft", "--score", "knn", "--density-k", "1", "--standardise",
                     "--embedding", embedding)
    before = evaluate(model, env["data"], tmp_path / "ev1").set_index("file")["score"]
    # every other test clip of fan replaced by loud noise; one clip kept
    changed = tmp_path / "changed"
    shutil.copytree(env["data"], changed)
    kept = sorted((changed / "fan" / "test").glob("*.wav"))[0]
    rng = np.random.default_rng(0)
    for wav in (changed / "fan" / "test").glob("*.wav"):
        if wav != kept:
            sf.write(wav, rng.normal(0, 0.5, 4 * 16000).astype(np.float32), 16000, subtype="PCM_16")
    after = evaluate(model, changed, tmp_path / "ev2").set_index("file")["score"]
    assert after[kept.name] == pytest.approx(before[kept.name], rel=1e-6)
    assert not np.allclose(after.drop(kept.name), before.drop(kept.name))


def test_evaluate_on_one_domain_data(env, tmp_path):
    one = tmp_path / "one-domain"
    shutil.copytree(env["data"], one)
    for wav in one.rglob("*target*.wav"):
        wav.unlink()
    res = run_cli("finetune", "--pretrained", str(env["pre"]), "--data", str(one), "--machine", "fan",
                  "--out", str(tmp_path / "ft"), *FAST_FT, "--lambda-adv", "0.1")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "ft" / "finetune_report.json").read_text())
    assert report["lambda_adv_effective"] == 0 and "one domain" in report["notes"][0]
    res = run_cli("evaluate", "--model", str(tmp_path / "ft" / "model.pt"), "--data", str(one),
                  "--out", str(tmp_path / "ev"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "AUC (target) | n/a" in res.stdout and "official score" in res.stdout
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["per_section"][0]["auc_target"] is None and metrics["official_score"] > 0


def test_evaluate_on_an_evaluation_layout_writes_submission_files_only(env, tmp_path):
    model = finetune(env, tmp_path / "ft")
    ev = tmp_path / "eval-layout"
    shutil.copytree(env["data"] / "fan" / "train", ev / "fan" / "train")
    (ev / "fan" / "test").mkdir(parents=True)
    for i, wav in enumerate(sorted((env["data"] / "fan" / "test").glob("*.wav"))):
        shutil.copy(wav, ev / "fan" / "test" / f"section_00_test_{i:04d}.wav")
    res = run_cli("evaluate", "--model", str(model), "--data", str(ev), "--out", str(tmp_path / "ev"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "official score" not in res.stdout
    sub = pd.read_csv(tmp_path / "ev" / "submission" / "anomaly_score_fan_section_00_test.csv", header=None)
    assert len(sub) == 24 and not (tmp_path / "ev" / "metrics.json").exists()


def test_an_ensemble_is_the_mean_of_each_models_standardised_scores(env, tmp_path):
    from bohb_search.scoring.model import AnomalyModel

    # head embeddings: the two objectives' models differ (their patch statistics would not)
    a = finetune(env, tmp_path / "poe", "--score", "knn", "--embedding", "head", "--density-k", "1")
    b = finetune(env, tmp_path / "margin", "--objective", "margin", "--score", "knn", "--embedding", "head",
                 "--seed", "1", "--n-subclusters", "2")
    sa = evaluate(a, env["data"], tmp_path / "ev-a")
    sb = evaluate(b, env["data"], tmp_path / "ev-b")
    res = run_cli("evaluate", "--model", str(a), "--model", str(b), "--data", str(env["data"]),
                  "--out", str(tmp_path / "ev-ab"), "--quiet")
    assert res.returncode == 0, res.stderr
    both = pd.read_csv(tmp_path / "ev-ab" / "scores.csv")
    expected = []
    for path, scores in ((a, sa), (b, sb)):
        train, machines = AnomalyModel.load(path).training_scores()
        mean, std = train[machines == "fan"].mean(), train[machines == "fan"].std()
        expected.append((scores["score"].to_numpy() - mean) / std)
    np.testing.assert_allclose(both["score"], np.mean(expected, axis=0), rtol=1e-5, atol=1e-6)
    assert "poe + margin" in (tmp_path / "ev-ab" / "table2.md").read_text()

"""Tests of bohb_search.reporting: paper tables, DCASE submission files, gamma threshold."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from bohb_search.evaluate.metrics import evaluate_scores
from bohb_search.evaluate.submission import (
    read_submission_dir,
    read_submission_scores,
    submission_file_names,
    write_submission,
)
from bohb_search.scoring.decision import fit_gamma_threshold
from bohb_search.evaluate.tables import PAPER_MACHINES, table2, table3, to_markdown, write_tables
from data.atomic import atomic_write_json, atomic_write_text

DCASE_MACHINES = ("ToyCar", "ToyTrain", "fan", "gearbox", "bearing", "slider", "valve")


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


def make_scores(seed: int, machines, sections=(0,), separation: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for machine, section in itertools.product(machines, sections):
        for domain, n_normal, n_anomaly in (("source", 20, 8), ("target", 6, 8)):
            for i, s in enumerate(rng.normal(0.0, 1.0, n_normal)):
                rows.append((machine, section, domain, 0, s, f"section_{section:02d}_{domain}_test_normal_{i:04d}.wav"))
            for i, s in enumerate(rng.normal(separation, 1.0, n_anomaly)):
                rows.append((machine, section, domain, 1, s, f"section_{section:02d}_{domain}_test_anomaly_{i:04d}.wav"))
    return pd.DataFrame(rows, columns=["machine", "section", "domain", "label", "score", "file_name"])


@pytest.fixture(scope="module")
def reports():
    # DCASE order shuffled, plus two machines that are not in the paper
    machines = ("valve", "pump", "ToyCar", "fan", "bearing", "ToyTrain", "gearbox", "slider", "ToyDrone")
    return {
        "Proposed (specific)": evaluate_scores(make_scores(0, machines, separation=1.5)),
        "Baseline (AE)": evaluate_scores(make_scores(1, machines[:-1], separation=0.7)),
    }


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def test_table2_has_the_paper_layout(reports):
    t2 = table2(reports)
    assert t2.index.names == ["System", "Metric"]
    assert list(t2.columns) == ["hmean", "amean"]
    expected_rows = [
        (system, metric)
        for system in reports
        for metric in ("AUC (source)", "AUC (target)", "pAUC", "TOTAL")
    ]
    assert list(t2.index) == expected_rows
    for system, report in reports.items():
        assert t2.loc[(system, "TOTAL"), "hmean"] == report.total_hmean
        assert t2.loc[(system, "pAUC"), "amean"] == report.summary.loc["pAUC", "amean"]


def test_table3_has_the_paper_layout_and_machine_order(reports):
    t3 = table3(reports)
    assert t3.index.names == ["System", "Domain"]
    assert list(t3.columns) == list(PAPER_MACHINES) + ["pump", "ToyDrone"]
    assert list(t3.index) == [(s, d) for s in reports for d in ("Source", "Target", "pAUC")]
    spec = reports["Proposed (specific)"].per_section.set_index("machine")
    assert t3.loc[("Proposed (specific)", "Source"), "Fan"] == spec.loc["fan", "auc_source"]
    assert t3.loc[("Proposed (specific)", "Target"), "ToyCar"] == spec.loc["ToyCar", "auc_target"]
    assert t3.loc[("Proposed (specific)", "pAUC"), "Valve"] == spec.loc["valve", "pauc"]
    # the baseline has no ToyDrone: empty there, not dropped
    assert np.isnan(t3.loc[("Baseline (AE)", "Source"), "ToyDrone"])
    assert list(table3(reports, include_pauc=False).index.get_level_values("Domain").unique()) == ["Source", "Target"]


def test_table3_machine_value_is_the_mean_over_sections():
    r = evaluate_scores(make_scores(2, ("fan",), sections=(0, 1, 2)))
    t3 = table3({"x": r})
    assert list(t3.columns) == ["Fan"]
    assert t3.loc[("x", "Target"), "Fan"] == pytest.approx(r.per_section.auc_target.mean())


def test_markdown_formatter():
    df = pd.DataFrame(
        {"hmean": [0.81234, 0.70249, float("nan")], "amean": [1.0, 0.5, 0.25]},
        index=pd.MultiIndex.from_tuples([("A|B", "AUC (source)"), ("A|B", "pAUC"), ("C", "TOTAL")],
                                        names=["System", "Metric"]),
    )
    assert to_markdown(df).splitlines() == [
        "| System | Metric | hmean | amean |",
        "|:---|:---|---:|---:|",
        "| A\\|B | AUC (source) | 0.812 | 1.000 |",
        "|  | pAUC | 0.702 | 0.500 |",
        "| C | TOTAL | n/a | 0.250 |",
    ]


def test_write_tables_writes_csv_and_markdown(reports, tmp_path):
    paths = write_tables(reports, tmp_path / "results")
    assert sorted(paths) == ["diagnostics.csv", "diagnostics.md", "per_section.csv", "table2.csv", "table2.md",
                             "table3.csv", "table3.md"]
    for name, path in paths.items():
        assert path == tmp_path / "results" / name and path.is_file()
    assert sorted(os.listdir(tmp_path / "results")) == sorted(paths)  # no temp files left behind

    t2 = pd.read_csv(paths["table2.csv"], index_col=[0, 1])
    expected = table2(reports).round(3)
    np.testing.assert_allclose(t2.to_numpy(), expected.to_numpy(), atol=1e-9)
    assert list(t2.index) == list(expected.index)
    assert all(len(v.split(".")[1]) == 3 for v in paths["table2.csv"].read_text().splitlines()[1].split(",")[2:])

    t3 = pd.read_csv(paths["table3.csv"], index_col=[0, 1])
    assert list(t3.columns) == list(PAPER_MACHINES) + ["pump", "ToyDrone"]

    md = paths["table3.md"].read_text().splitlines()
    assert md[0] == "| System | Domain | " + " | ".join(list(PAPER_MACHINES) + ["pump", "ToyDrone"]) + " |"
    assert len(md) == 2 + 6
    assert md[2].startswith("| Proposed (specific) | Source | ")

    per_section = pd.read_csv(paths["per_section.csv"], dtype={"section": str})
    assert len(per_section) == 9 + 8
    spec = per_section[per_section.system == "Proposed (specific)"].reset_index(drop=True)
    mine = reports["Proposed (specific)"].per_section
    np.testing.assert_allclose(spec.auc_source.to_numpy(), mine.auc_source.to_numpy(), rtol=0, atol=1e-15)


def test_tables_reject_bad_reports():
    with pytest.raises(ValueError) as exc:
        table2({})
    assert "reports" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        table3({"x": {"official_score": 1.0}})
    assert "'x'" in one_line(exc)
    # "Fan" and "fan" would share one column
    df = pd.concat([make_scores(3, ("fan",)), make_scores(4, ("Fan",))])
    with pytest.raises(ValueError) as exc:
        table3({"x": evaluate_scores(df)})
    assert "'Fan'" in one_line(exc)


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------
def test_atomic_write_text_creates_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "deep" / "out.txt"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\r\nline\n")
    assert target.read_bytes() == b"second\r\nline\n"
    assert os.listdir(target.parent) == ["out.txt"]
    with pytest.raises(ValueError) as exc:
        atomic_write_text(tmp_path / "deep", "x")  # a directory
    assert "directory" in one_line(exc)
    assert os.listdir(target.parent) == ["out.txt"]


# ---------------------------------------------------------------------------------------------
# submission files
# ---------------------------------------------------------------------------------------------
def test_atomic_write_json_is_strict_json(tmp_path):
    # a fixed-budget run has no validation score (NaN): its report must still be JSON every reader accepts
    target = atomic_write_json(tmp_path / "r.json", {"best_val_score": float("nan"), "n": np.int64(3),
                                                     "history": [{"val": np.float32("inf"), "loss": np.float64(0.5)}]})
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"best_val_score": None, "n": 3, "history": [{"val": None, "loss": 0.5}]}


def test_submission_round_trip_and_recomputed_metrics(tmp_path):
    df = make_scores(5, ("fan", "ToyCar"), sections=(0, 1))
    report = evaluate_scores(df)
    threshold = 0.3
    for (machine, section), group in df.groupby(["machine", "section"]):
        score_path, decision_path = write_submission(
            tmp_path, machine, section, group.file_name.tolist(), group.score.to_numpy(), threshold
        )
        assert score_path.name == f"anomaly_score_{machine}_section_{section:02d}_test.csv"
        assert decision_path.name == f"decision_result_{machine}_section_{section:02d}_test.csv"
        first = score_path.read_text().splitlines()[0]
        assert first.split(",")[0] == group.file_name.iloc[0]  # no header line

        back = read_submission_scores(score_path)
        assert list(back.columns) == ["file_name", "score"]
        assert back.file_name.tolist() == group.file_name.tolist()
        assert np.array_equal(back.score.to_numpy(), group.score.to_numpy())  # exact floats
        decisions = read_submission_scores(decision_path)
        assert decisions.score.tolist() == (group.score > threshold).astype(float).tolist()
    assert len(os.listdir(tmp_path)) == 8

    # recompute the metrics from the files alone (ground truth joined by file name)
    written = read_submission_dir(tmp_path)
    truth = df.assign(section=df.section.map("{:02d}".format)).drop(columns="score")
    joined = written.merge(truth, on=["machine", "section", "file_name"], validate="one_to_one")
    assert len(joined) == len(df)
    again = evaluate_scores(joined)
    pd.testing.assert_frame_equal(again.per_section, report.per_section)
    assert again.official_score == report.official_score
    assert len(read_submission_dir(tmp_path, kind="decision_result")) == len(df)


def test_submission_file_names():
    assert submission_file_names("valve", 3) == (
        "anomaly_score_valve_section_03_test.csv",
        "decision_result_valve_section_03_test.csv",
    )
    assert submission_file_names("ToyCar", "00")[0] == "anomaly_score_ToyCar_section_00_test.csv"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"file_names": ["a.wav"]}, ["file_names", "1", "2"]),
        ({"file_names": ["a.wav", "a.wav"]}, ["duplicates", "a.wav"]),
        ({"file_names": ["dir/a.wav", "b.wav"]}, ["file_names[0]"]),
        ({"scores": [0.1, float("nan")]}, ["scores", "non-finite"]),
        ({"threshold": float("inf")}, ["threshold"]),
        ({"machine": "../fan"}, ["machine"]),
        ({"machine": ""}, ["machine"]),
    ],
)
def test_write_submission_rejects_bad_input(tmp_path, kwargs, words):
    args = {"machine": "fan", "section": 0, "file_names": ["a.wav", "b.wav"], "scores": [0.1, 0.2], "threshold": 0.15}
    args.update(kwargs)
    with pytest.raises(ValueError) as exc:
        write_submission(tmp_path, **args)
    msg = one_line(exc)
    for w in words:
        assert w in msg
    assert os.listdir(tmp_path) == []


def test_read_submission_scores_rejects_malformed_files(tmp_path):
    bad = tmp_path / "anomaly_score_fan_section_00_test.csv"
    bad.write_text("a.wav,0.5\nb.wav\n")
    with pytest.raises(ValueError) as exc:
        read_submission_scores(bad)
    assert "line 2" in one_line(exc)
    bad.write_text("a.wav,high\n")
    with pytest.raises(ValueError) as exc:
        read_submission_scores(bad)
    assert "'high'" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        read_submission_scores(tmp_path / "missing.csv")
    assert "does not exist" in one_line(exc)


# ---------------------------------------------------------------------------------------------
# gamma threshold
# ---------------------------------------------------------------------------------------------
def test_gamma_threshold_matches_scipy_on_positive_scores():
    x = np.random.default_rng(10).gamma(2.0, 1.5, size=400)
    shape, loc, scale = scipy.stats.gamma.fit(x)
    assert fit_gamma_threshold(x) == scipy.stats.gamma.ppf(0.9, shape, loc=loc, scale=scale)
    assert fit_gamma_threshold(x, percentile=0.5) == scipy.stats.gamma.ppf(0.5, shape, loc=loc, scale=scale)


def test_gamma_threshold_percentile_behaviour():
    x = np.random.default_rng(11).gamma(3.0, 2.0, size=5000)
    t50, t90, t99 = (fit_gamma_threshold(x, p) for p in (0.5, 0.9, 0.99))
    assert t50 < t90 < t99
    assert 0.88 < np.mean(x < t90) < 0.92
    assert 0.985 < np.mean(x < t99) < 0.995
    # the true 90% quantile of the generating distribution
    assert t90 == pytest.approx(scipy.stats.gamma.ppf(0.9, 3.0, scale=2.0), rel=0.03)


def test_gamma_threshold_with_non_positive_scores_is_in_the_original_units():
    x = np.random.default_rng(12).gamma(3.0, 2.0, size=3000)
    shifted = x - 20.0  # all negative, like negated similarities
    t = fit_gamma_threshold(shifted)
    assert t == pytest.approx(fit_gamma_threshold(x) - 20.0, abs=1e-3)
    assert 0.88 < np.mean(shifted < t) < 0.92


@pytest.mark.parametrize(
    "scores, percentile, words",
    [
        ([1.0], 0.9, ["train_scores", "at least 2"]),
        ([], 0.9, ["train_scores", "at least 2"]),
        ([1.0, float("nan"), 2.0], 0.9, ["train_scores", "non-finite"]),
        ([1.0, float("inf"), 2.0], 0.9, ["train_scores", "non-finite"]),
        ([2.0, 2.0, 2.0], 0.9, ["train_scores", "equal"]),
        ([1.0, 2.0, 3.0], 0.0, ["percentile"]),
        ([1.0, 2.0, 3.0], 1.0, ["percentile"]),
        ([1.0, 2.0, 3.0], 90, ["percentile"]),
        ([[1.0, 2.0], [3.0, 4.0]], 0.9, ["train_scores", "one-dimensional"]),
    ],
)
def test_gamma_threshold_rejects_bad_input(scores, percentile, words):
    with pytest.raises(ValueError) as exc:
        fit_gamma_threshold(scores, percentile)
    msg = one_line(exc)
    for w in words:
        assert w in msg


def test_modules_import_no_heavy_frameworks():
    import subprocess
    import sys

    code = (
        "import sys, bohb_search.evaluate.metrics, bohb_search.evaluate.tables, bohb_search.evaluate.submission;"
        "bad = [m for m in ('torch', 'ray', 'mlflow', 'matplotlib') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == ""

"""Tests of bohb_search.metrics: the official DCASE Task 2 metrics, computed in one place."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from bohb_search.evaluate.metrics import (
    EvaluationReport,
    evaluate_scores,
    hmean,
    normalize_section,
    section_metrics,
    validation_auc,
)


def pair_auc(normal_scores, anomaly_scores) -> float:
    """AUC by counting pairs (Mann-Whitney): P(anomaly > normal) + 0.5 P(tie)."""
    total = 0.0
    for a, n in itertools.product(anomaly_scores, normal_scores):
        total += 1.0 if a > n else 0.5 if a == n else 0.0
    return total / (len(anomaly_scores) * len(normal_scores))


def mcclish(partial_area: float, max_fpr: float) -> float:
    """McClish standardisation of a raw partial area under the ROC curve over FPR in [0, max_fpr]."""
    min_area = max_fpr**2 / 2  # the chance diagonal
    max_area = max_fpr  # a perfect detector
    return 0.5 * (1 + (partial_area - min_area) / (max_area - min_area))


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------
# hand-computed cases
# ---------------------------------------------------------------------------------------------
def test_auc_two_normals_two_anomalies_by_hand():
    normals, anomalies = [0.1, 0.4], [0.3, 0.5]
    # pairs (anomaly > normal): 0.3>0.1 yes, 0.3>0.4 no, 0.5>0.1 yes, 0.5>0.4 yes -> 3 of 4
    assert pair_auc(normals, anomalies) == 0.75
    scores = normals + anomalies
    labels = [0, 0, 1, 1]
    assert validation_auc(scores, labels) == pytest.approx(0.75)
    # same clips all in the source domain: AUC(source) is that AUC
    m = section_metrics(scores + [0.0], labels + [0], ["source"] * 4 + ["target"])
    assert m["auc_source"] == pytest.approx(0.75)


def test_pauc_mcclish_values_known_by_hand():
    # normals 0.1, 0.4; anomalies 0.3, 0.5.  ROC: (0,0) -> (0, .5) at threshold 0.5 -> (.5, .5)
    # at 0.4 -> ...  Up to FPR 0.1 the TPR is 0.5, so the raw partial area is 0.1 * 0.5 = 0.05.
    scores = [0.1, 0.4, 0.3, 0.5]
    labels = [0, 0, 1, 1]
    domains = ["source", "target", "source", "target"]
    expected = mcclish(0.05, 0.1)
    assert expected == pytest.approx(14 / 19)
    assert section_metrics(scores, labels, domains)["pauc"] == pytest.approx(expected)

    # perfect detector: raw area = max_fpr -> 1; reversed: raw area 0 -> 9/19; all tied: 0.5
    assert section_metrics([0, 0, 1, 1], labels, domains)["pauc"] == pytest.approx(1.0)
    assert section_metrics([1, 1, 0, 0], labels, domains)["pauc"] == pytest.approx(mcclish(0.0, 0.1))
    assert mcclish(0.0, 0.1) == pytest.approx(9 / 19)
    assert section_metrics([2, 2, 2, 2], labels, domains)["pauc"] == pytest.approx(0.5)


def test_pauc_with_other_max_fpr():
    # ROC of this section: from (0,0) straight to (0.5, 1) (two normals tie with the anomalies).
    # Up to FPR 0.2 it is the line tpr = 2 fpr: raw area = 0.2 * 0.4 / 2 = 0.04
    scores = [0, 0, 1, 1, 1, 1]
    labels = [0, 0, 0, 0, 1, 1]
    domains = ["source", "source", "target", "target", "source", "target"]
    assert section_metrics(scores, labels, domains, max_fpr=0.2)["pauc"] == pytest.approx(mcclish(0.04, 0.2))
    assert section_metrics(scores, labels, domains, max_fpr=0.1)["pauc"] == pytest.approx(10 / 19)


def test_auc_source_uses_source_normals_and_all_anomalies():
    # source normals score low, target normals high (a domain shift); one anomaly per domain
    scores = [0.0, 0.1, 0.8, 0.9, 0.05, 0.95]
    labels = [0, 0, 0, 0, 1, 1]
    domains = ["source", "source", "target", "target", "source", "target"]
    m = section_metrics(scores, labels, domains)
    # official: source normals {0, .1} vs all anomalies {.05, .95}: .05>0, .95>0, .95>.1 -> 3/4
    assert pair_auc([0.0, 0.1], [0.05, 0.95]) == 0.75
    assert m["auc_source"] == pytest.approx(0.75)
    # target normals {.8, .9} vs all anomalies: only .95 beats them -> 2/4
    assert m["auc_target"] == pytest.approx(0.5)
    # the wrong definitions give other numbers, so this test catches them
    assert pair_auc([0.0, 0.1], [0.05]) == 0.5  # source anomalies only
    assert pair_auc([0.0, 0.1, 0.8, 0.9], [0.05, 0.95]) == 0.625  # all normals
    assert pair_auc([0.8, 0.9], [0.95]) == 1.0  # target anomalies only
    # pAUC: all six clips together
    assert m["pauc"] == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.1))
    assert (m["n_normal_source"], m["n_normal_target"], m["n_anomaly"]) == (2, 2, 2)


def test_string_labels_and_case_insensitive_domains_match_numeric():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=40)
    labels = rng.integers(0, 2, size=40)
    labels[:4] = [0, 0, 1, 1]
    domains = np.array(["source", "target"] * 20)
    words = np.where(labels == 1, "anomaly", "normal")
    a = section_metrics(scores, labels, domains)
    b = section_metrics(scores.tolist(), list(words), [d.upper() for d in domains])
    c = section_metrics(scores, labels.astype(bool), domains)
    assert a == b == c


# ---------------------------------------------------------------------------------------------
# agreement with scikit-learn on random data with a domain shift
# ---------------------------------------------------------------------------------------------
def make_scores(seed: int = 0, machines=("fan", "ToyCar", "valve"), sections=(0, 1, 2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for machine, section in itertools.product(machines, sections):
        for domain, n_normal, n_anomaly in (("source", 30, 12), ("target", 8, 6)):
            # target normals are shifted up, as after a domain shift, so that mixing them into
            # AUC(source) changes its value
            shift = 1.5 if domain == "target" else 0.0
            for s in rng.normal(shift, 1.0, n_normal):
                rows.append((machine, section, domain, "normal", s))
            for s in rng.normal(1.0 + shift / 2, 1.0, n_anomaly):
                rows.append((machine, section, domain, "anomaly", s))
    return pd.DataFrame(rows, columns=["machine", "section", "domain", "label", "score"])


def test_evaluate_scores_agrees_with_sklearn_per_section():
    df = make_scores()
    report = evaluate_scores(df)
    assert len(report.per_section) == 9
    for _, row in report.per_section.iterrows():
        sec = df[(df.machine == row.machine) & (df.section == int(row.section))]
        y = (sec.label == "anomaly").to_numpy().astype(int)
        s = sec.score.to_numpy()
        src = (sec.domain == "source").to_numpy()
        tgt = ~src
        auc_s = roc_auc_score(y[src | (y == 1)], s[src | (y == 1)])
        auc_t = roc_auc_score(y[tgt | (y == 1)], s[tgt | (y == 1)])
        assert row.auc_source == pytest.approx(auc_s, abs=1e-12)
        assert row.auc_target == pytest.approx(auc_t, abs=1e-12)
        assert row.pauc == pytest.approx(roc_auc_score(y, s, max_fpr=0.1), abs=1e-12)
        assert (row.n_normal_source, row.n_normal_target, row.n_anomaly) == (30, 8, 18)
        # a wrong definition (all normals, or only the domain's own anomalies) gives another value
        assert abs(row.auc_source - roc_auc_score(y, s)) > 1e-9
        assert abs(row.auc_source - roc_auc_score(y[src], s[src])) > 1e-9
        assert abs(row.auc_target - roc_auc_score(y[tgt], s[tgt])) > 1e-9


def test_summary_official_score_and_totals_follow_their_definitions():
    df = make_scores(seed=1)
    r = evaluate_scores(df)
    ps = r.per_section
    for key, label in (("auc_source", "AUC (source)"), ("auc_target", "AUC (target)"), ("pauc", "pAUC")):
        assert r.summary.loc[label, "hmean"] == pytest.approx(scipy.stats.hmean(ps[key]))
        assert r.summary.loc[label, "amean"] == pytest.approx(np.mean(ps[key]))
        assert r.summary.loc[label, "hmean"] < r.summary.loc[label, "amean"]
    pooled = np.concatenate([ps.auc_source, ps.auc_target, ps.pauc])
    assert r.official_score == pytest.approx(scipy.stats.hmean(pooled))
    three = ["AUC (source)", "AUC (target)", "pAUC"]
    assert r.total_hmean == pytest.approx(r.summary.loc[three, "hmean"].mean())
    assert r.total_amean == pytest.approx(r.summary.loc[three, "amean"].mean())
    assert r.summary.loc["TOTAL", "hmean"] == r.total_hmean
    assert r.summary.loc["TOTAL", "amean"] == r.total_amean
    assert list(r.summary.index) == ["AUC (source)", "AUC (target)", "pAUC", "TOTAL"]
    assert list(r.summary.columns) == ["hmean", "amean"]


def test_hand_computed_summary_where_official_score_and_total_differ():
    rows = []
    # machine "a": source normals 0, target normals 1, anomalies 1 (tie with target normals)
    #   AUC(source) = 1, AUC(target) = 0.5 (all ties), pAUC = 10/19 (ROC: line to (0.5, 1))
    for dom, lab, s in [("source", 0, 0), ("source", 0, 0), ("target", 0, 1), ("target", 0, 1),
                        ("source", 1, 1), ("target", 1, 1)]:
        rows.append(("a", "00", dom, lab, s))
    # machine "b": perfect separation -> 1, 1, 1
    for dom, lab, s in [("source", 0, 0), ("target", 0, 0), ("source", 1, 1), ("target", 1, 1)]:
        rows.append(("b", "00", dom, lab, s))
    r = evaluate_scores(pd.DataFrame(rows, columns=["machine", "section", "domain", "label", "score"]))
    a = r.per_section.set_index("machine").loc["a"]
    assert (a.auc_source, a.auc_target) == (pytest.approx(1.0), pytest.approx(0.5))
    assert a.pauc == pytest.approx(10 / 19)

    h_src, h_tgt, h_pauc = 1.0, 2 / (1 / 0.5 + 1 / 1.0), 2 / (19 / 10 + 1)
    assert r.summary.loc["AUC (target)", "hmean"] == pytest.approx(h_tgt)  # 2/3
    assert r.summary.loc["AUC (target)", "amean"] == pytest.approx(0.75)
    assert r.summary.loc["pAUC", "hmean"] == pytest.approx(h_pauc)  # 20/29
    assert r.total_hmean == pytest.approx((h_src + h_tgt + h_pauc) / 3)
    assert r.total_amean == pytest.approx((1.0 + 0.75 + (10 / 19 + 1) / 2) / 3)
    # official: harmonic mean of the six pooled values 1, 1, .5, 1, 10/19, 1 = 6 / 7.9
    assert r.official_score == pytest.approx(6 / 7.9)
    assert abs(r.official_score - r.total_hmean) > 0.02


def test_several_sections_count_once_each_and_per_machine_is_their_mean():
    df = make_scores(seed=2, machines=("fan", "gearbox"), sections=(0, 1))
    r = evaluate_scores(df)
    pm = r.per_machine()
    for machine in ("fan", "gearbox"):
        rows = r.per_section[r.per_section.machine == machine]
        assert pm.loc[machine, "auc_source"] == pytest.approx(rows.auc_source.mean())
        assert pm.loc[machine, "pauc"] == pytest.approx(rows.pauc.mean())
    # the summary pools the four sections, not the two per-machine means
    assert r.summary.loc["AUC (source)", "hmean"] == pytest.approx(scipy.stats.hmean(r.per_section.auc_source))


def test_sections_are_normalised_and_other_columns_ignored():
    df = make_scores(seed=4, machines=("fan",), sections=(0,))
    split = df.copy()
    split["section"] = ["00" if i % 2 else 0 for i in range(len(df))]  # the same section, two spellings
    split["file_name"] = [f"clip_{i}.wav" for i in range(len(df))]
    r1, r2 = evaluate_scores(df), evaluate_scores(split)
    assert list(r2.per_section.section) == ["00"]
    pd.testing.assert_frame_equal(r1.per_section, r2.per_section)
    assert normalize_section(3) == "03" and normalize_section("section_12") == "12"


def test_report_to_dict_is_json_and_round_trips():
    r = evaluate_scores(make_scores(seed=5, machines=("valve", "slider"), sections=(0,)))
    d = r.to_dict()
    text = json.dumps(d)
    back = EvaluationReport.from_dict(json.loads(text))
    assert back.official_score == r.official_score
    assert back.total_hmean == r.total_hmean
    pd.testing.assert_frame_equal(back.per_section, r.per_section, check_dtype=False)
    assert back.summary.loc["pAUC", "hmean"] == r.summary.loc["pAUC", "hmean"]
    assert d["summary"]["TOTAL"]["amean"] == r.total_amean


def test_validation_auc_matches_sklearn():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + y
    assert validation_auc(s, y) == pytest.approx(roc_auc_score(y, s))


def test_hmean_values():
    assert hmean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert hmean(np.array([0.8, 0.8, 0.8])) == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------
# bad input -> one-line ValueError naming the problem
# ---------------------------------------------------------------------------------------------
def test_section_without_anomalies_names_machine_and_section():
    df = make_scores(seed=7, machines=("fan", "bearing"), sections=(0,))
    df = df[~((df.machine == "bearing") & (df.label == "anomaly"))]
    with pytest.raises(ValueError) as exc:
        evaluate_scores(df)
    msg = one_line(exc)
    assert "'bearing'" in msg and "'00'" in msg and "anomalous" in msg


def test_one_domain_data_reports_what_exists():
    """DCASE 2020/2021-style data (no target domain): AUC (target) does not exist, the rest is reported."""
    df = make_scores(seed=8, machines=("slider", "fan"), sections=(1,))
    df = df[df.domain == "source"]
    report = evaluate_scores(df)
    assert report.per_section["auc_target"].isna().all()
    assert np.isnan(report.summary.loc["AUC (target)", "hmean"])
    values = np.r_[report.per_section["auc_source"], report.per_section["pauc"]]
    assert report.official_score == pytest.approx(scipy.stats.hmean(values))
    assert report.total_hmean == pytest.approx(np.mean([report.summary.loc["AUC (source)", "hmean"],
                                                        report.summary.loc["pAUC", "hmean"]]))
    again = EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))
    assert again.official_score == pytest.approx(report.official_score)
    assert np.isnan(again.per_section["auc_target"]).all()


def test_section_without_anomalies_names_it():
    df = make_scores(seed=8, machines=("slider",), sections=(1,))
    with pytest.raises(ValueError) as exc:
        evaluate_scores(df[df.label == "normal"])
    msg = one_line(exc)
    assert "anomal" in msg and "'slider'" in msg and "'01'" in msg


def test_diagnostics_separate_anomalies_from_domain_offset():
    """Scores that only encode the domain: within-domain AUCs 0.5-ish, domain AUC of normals 1."""
    rng = np.random.default_rng(0)
    rows = []
    for domain, offset in (("source", 0.0), ("target", 5.0)):
        for label in ("normal", "anomaly"):
            for v in rng.normal(offset, 1.0, 200):
                rows.append({"machine": "fan", "section": "00", "domain": domain, "label": label, "score": v})
    report = evaluate_scores(pd.DataFrame(rows))
    row = report.per_section.iloc[0]
    assert abs(row["auc_source_within"] - 0.5) < 0.08 and abs(row["auc_target_within"] - 0.5) < 0.08
    assert row["domain_auc_normals"] > 0.99
    # the official AUC (target) ranks target normals against the (lower) source anomalies too: low
    assert row["auc_target"] < 0.4
    assert report.diagnostics().loc["all", "domain_auc_normals"] == pytest.approx(row["domain_auc_normals"])


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d.drop(columns=["domain"]), ["domain"]),
        (lambda d: d.assign(label=d.label.replace({"anomaly": "broken"})), ["label", "'broken'"]),
        (lambda d: d.assign(domain=d.domain.replace({"target": "tgt"})), ["domain", "'tgt'"]),
        (lambda d: d.assign(score=d.score.where(d.index != 3, np.nan)), ["score", "non-finite"]),
        (lambda d: d.iloc[0:0], ["no rows"]),
        (lambda d: d.assign(section=[None] + [0] * (len(d) - 1)), ["section"]),
    ],
)
def test_bad_dataframes(mutate, words):
    df = make_scores(seed=9, machines=("fan",), sections=(0,))
    with pytest.raises(ValueError) as exc:
        evaluate_scores(mutate(df))
    msg = one_line(exc)
    for w in words:
        assert w in msg


def test_bad_arrays_and_parameters():
    with pytest.raises(ValueError) as exc:
        section_metrics([0.1, 0.2, 0.3], [0, 1], ["source", "target", "source"])
    assert "same length" in one_line(exc)
    for bad in (0, -0.1, 1.5, "x"):
        with pytest.raises(ValueError) as exc:
            section_metrics([0, 1, 2], [0, 0, 1], ["source", "target", "source"], max_fpr=bad)
        assert "max_fpr" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        validation_auc([0.1, 0.2], [0, 0])
    assert "anomalous" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        validation_auc([0.1, 0.2], [0, 2])
    assert "labels" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        evaluate_scores({"machine": ["fan"]})
    assert "DataFrame" in one_line(exc)


def test_hmean_rejects_non_positive_values_naming_the_metric():
    with pytest.raises(ValueError) as exc:
        hmean([0.9, 0.0], name="AUC (source)")
    msg = one_line(exc)
    assert "AUC (source)" in msg and "<= 0" in msg
    with pytest.raises(ValueError) as exc:
        hmean([], name="pAUC")
    assert "pAUC" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        hmean([0.5, float("nan")], name="pAUC")
    assert "non-finite" in one_line(exc)


def test_an_auc_of_zero_is_floored_as_the_evaluator_does_or_named_without_a_floor():
    # perfectly inverted scores give AUC (source) = AUC (target) = 0: the harmonic mean needs the floor
    df = pd.DataFrame(
        [("fan", 0, "source", 0, 1.0), ("fan", 0, "target", 0, 1.0),
         ("fan", 0, "source", 1, 0.0), ("fan", 0, "target", 1, 0.0)],
        columns=["machine", "section", "domain", "label", "score"],
    )
    report = evaluate_scores(df)
    assert 0 < report.official_score < 1e-12
    with pytest.raises(ValueError) as exc:
        evaluate_scores(df, floor=None)
    assert "AUC (source)" in one_line(exc)

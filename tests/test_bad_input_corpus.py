"""Bad input, round two (issue 29): a corpus of what users get wrong, each refused before any work with exit
code 2 and one line on stderr naming the flag or the file, and nothing created or changed at ``--out``; plus
the checks behind it (the shared output-location check, checkpoint tensors that are NaN/Inf, every numeric
setting's range) and the cases that are not failures but must say what they did.

"Not writable" cannot be made with permissions here (the tests run as root, for whom a read-only folder is
writable): the check asks ``os.access``, which also sees read-only mounts, and these tests make ``os.access``
answer "no" for one folder that is in fact writable — in a subprocess running the real command line
(:func:`run_cli_not_writable`) and in-process for the unit test. A command that skipped the check would then
write into that folder, which the tests look for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow
SECONDS = ["--seconds", "2"]


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny synthetic data (2 machines, 1-2 s clips), a pre-trained encoder and a fine-tuned model, made once."""
    root = tmp_path_factory.mktemp("corpus")
    cache = root / "cache"
    environ = {"BOHB_SEARCH_CACHE": str(cache)}
    data = root / "data"
    res = run_cli("data", "synth", "--out", str(data), "--machines", "fan", "valve", "--train-source", "6",
                  "--train-target", "2", "--test-per-cell", "2", "--seconds", "2", "--quiet", env=environ)
    assert res.returncode == 0, res.stderr
    res = run_cli("pretrain", "--data", str(data), "--out", str(root / "pre"), "--epochs", "1", "--batch-size", "8",
                  "--min-steps-per-epoch", "1", "--dim", "32", "--depth", "2", "--quiet", *SECONDS, env=environ)
    assert res.returncode == 0, res.stderr
    res = run_cli("finetune", "--pretrained", str(root / "pre" / "encoder.pt"), "--data", str(data), "--machine",
                  "fan", "--out", str(root / "ft"), "--max-epochs", "1", "--batch-size", "4", "--min-steps-per-epoch",
                  "0", "--quiet", env=environ)
    assert res.returncode == 0, res.stderr
    model = root / "ft" / "model.pt"
    bundle = torch.load(model, weights_only=True)
    bundle["center"] = torch.full_like(bundle["center"], float("nan"))
    torch.save(bundle, root / "nan_centre.pt")
    best = {"search": "fan", "data": [str(data)], "machines": ["fan"], "generalized": False,
            "pretrained": str(root / "pre" / "encoder.pt"),
            "finetune_config": {"max_epochs": 1, "batch_size": 4, "min_steps_per_epoch": 0}}
    (root / "best_ok.json").write_text(json.dumps(best))
    (root / "best_data_string.json").write_text(json.dumps({**best, "data": str(data)}))
    (root / "best_bad_lr.json").write_text(json.dumps({**best, "finetune_config": {"lr": -1}}))
    a_file = root / "a-file"
    a_file.write_text("not a folder\n")
    (root / "a-folder").mkdir()
    (root / "pre.yaml").write_text(yaml.safe_dump({"pretrain": {"val_fraction": 1.5}}))
    (root / "features.yaml").write_text(yaml.safe_dump({"features": {"audio": {"seconds": -2}}}))
    (root / "cache.yaml").write_text(yaml.safe_dump({"run": {"cache_dir": str(a_file)}}))
    (root / "final.yaml").write_text(yaml.safe_dump({"finetune": {"head_dropout": 1.5}}))
    return {"root": root, "data": data, "pre": root / "pre" / "encoder.pt", "model": model, "env": environ,
            "file": a_file, "folder": root / "a-folder", "clip": next((data / "fan" / "test").glob("*.wav"))}


def snapshot(path: Path):
    """What is at ``path``: nothing, a file's bytes, or a folder's every entry with its bytes."""
    if not os.path.lexists(path):
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else "dir") for p in sorted(path.rglob("*"))}


def one_line_error(res, *words) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-4000:])
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def run_cli_not_writable(folder: Path, *args: str, env: dict | None = None):
    """The command line in a subprocess in which ``os.access`` says ``folder`` (and what is under it) cannot be
    written, though it can: what a read-only folder or mount looks like to the check."""
    code = (
        "import os, sys\n"
        "real = os.access\n"
        f"ro = {str(folder)!r}\n"
        "def access(path, mode, *a, **k):\n"
        "    p = os.path.abspath(os.fspath(path))\n"
        "    if mode & os.W_OK and (p == ro or p.startswith(ro + os.sep)):\n"
        "        return False\n"
        "    return real(path, mode, *a, **k)\n"
        "os.access = access\n"
        "from bohb_search.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=600)


# ---------------------------------------------------------------------------------------------------- the corpus

# (id, argv from (env, tmp), words the one line must hold, the --out whose state must not change, how to run)
# {file} an existing file, {folder} an existing empty folder, {ro} a writable folder os.access calls read-only,
# {new} a path under tmp that does not exist
CORPUS = [
    # 1. output locations: an existing file, a file as parent, a folder for a file, a folder that is not writable
    ("pretrain --out FILE", "pretrain --data {data} --out {file} --epochs 1 --quiet", ["--out", "not a folder"], "{file}", None),
    ("pretrain --out FILE/sub", "pretrain --data {data} --out {file}/sub --epochs 1 --quiet", ["--out", "is a file"], "{file}", None),
    ("finetune --cache-dir FILE", "finetune --pretrained {pre} --data {data} --machine fan --out {new} --cache-dir {file}",
     ["--cache-dir", "not a folder"], "{new}", None),
    ("baseline --out FILE", "baseline --data {data} --machine fan --out {file} --max-epochs 1", ["--out", "not a folder"], "{file}", None),
    ("baseline --kind stats --out FILE/x", "baseline --kind stats --data {data} --machine fan --out {file}/x",
     ["--out", "is a file"], "{file}", None),
    ("evaluate --out FILE", "evaluate --model {model} --data {data} --out {file}", ["--out", "not a folder"], "{file}", None),
    ("final-train --out FILE", "final-train --best {root}/best_ok.json --out {file} --no-estimate", ["--out", "not a folder"], "{file}", None),
    ("search --storage-path FILE", "search --data {data} --machine fan --pretrained {pre} --storage-path {file}",
     ["--storage-path", "not a folder"], "{file}", None),
    ("search --cache-dir FILE/x", "search --data {data} --machine fan --pretrained {pre} --cache-dir {file}/x "
     "--storage-path {new}", ["--cache-dir", "is a file"], "{new}", None),
    ("data features --cache-dir FILE", "data features --data {data} --cache-dir {file} --quiet", ["--cache-dir", "not a folder"], "{file}", None),
    ("data summary --csv FILE/x.csv", "data summary --data {data} --csv {file}/x.csv", ["--csv", "is a file"], "{file}", None),
    ("data summary --csv FOLDER", "data summary --data {data} --csv {folder}", ["--csv", "is a folder"], "{folder}", None),
    ("data synth --out FILE", "data synth --out {file} --machines fan --train-source 1 --train-target 0 --test-per-cell 0",
     ["--out", "not a folder"], "{file}", None),
    ("score --out FILE/x.csv", "score --model {model} {clip} --out {file}/x.csv", ["--out", "is a file"], "{file}", None),
    ("$BOHB_SEARCH_CACHE FILE", "data features --data {data} --quiet", ["$BOHB_SEARCH_CACHE", "not a folder"], "{file}", "cache-env"),
    ("pretrain --out not writable", "pretrain --data {data} --out {ro}/new --epochs 1 --quiet", ["--out", "not writable"], "{ro}", "ro"),
    ("finetune --out not writable", "finetune --pretrained {pre} --data {data} --machine fan --out {ro} --max-epochs 1",
     ["--out", "not writable"], "{ro}", "ro"),
    ("evaluate --out not writable", "evaluate --model {model} --data {data} --out {ro}/ev", ["--out", "not writable"], "{ro}", "ro"),
    ("score --out not writable", "score --model {model} {clip} --out {ro}/s.csv", ["--out", "not writable"], "{ro}", "ro"),
    ("data features --cache-dir not writable", "data features --data {data} --cache-dir {ro} --quiet",
     ["--cache-dir", "not writable"], "{ro}", "ro"),
    ("search --storage-path not writable", "search --data {data} --machine fan --pretrained {pre} --storage-path {ro}",
     ["--storage-path", "not writable"], "{ro}", "ro"),
    # 2. a best_config.json whose data root is a string, not a list
    ("best_config data string", "final-train --best {root}/best_data_string.json --out {new} --no-estimate",
     ["best_data_string.json", '"data"', "list"], "{new}", None),
    # 3. settings checked before work, naming the flag
    ("finetune --threshold-percentile 150", "finetune --pretrained {pre} --data {data} --machine fan --out {new} "
     "--threshold-percentile 150 --max-epochs 1", ["--threshold-percentile", "150"], "{new}", None),
    ("baseline --threshold-percentile 0", "baseline --kind stats --data {data} --machine fan --out {new} "
     "--threshold-percentile 0", ["--threshold-percentile", "(0, 1)"], "{new}", None),
    ("pretrain --val-fraction 1.5", "pretrain --data {data} --out {new} --val-fraction 1.5 --epochs 1",
     ["--val-fraction", "1.5"], "{new}", None),
    ("search --pretrain-epochs 0", "search --data {data} --machine fan --pretrain-epochs 0 --storage-path {new}",
     ["--pretrain-epochs", "positive integer"], "{new}", None),
    ("search --eta 1 before pre-training", "search --data {data} --machine fan --eta 1 --pretrain-dir {new} "
     "--storage-path {new}", ["--eta"], "{new}", None),
    # 4. a checkpoint whose score tensors are NaN
    ("score NaN centre", "score --model {root}/nan_centre.pt {clip}", ["nan_centre.pt", "center", "NaN"], "{new}", None),
    ("evaluate NaN centre", "evaluate --model {root}/nan_centre.pt --data {data} --out {new}",
     ["nan_centre.pt", "center"], "{new}", None),
    # 6. messages in the code's language
    ("--data X --data X", "finetune --pretrained {pre} --data {data} --data {data}/ --machine fan --out {new}",
     ["--data", "given twice"], "{new}", None),
    ("--data X --data X/fan", "evaluate --model {model} --data {data} --data {data}/fan --out {new}",
     ["--data", "inside"], "{new}", None),
    ("data synth all zero", "data synth --out {new} --train-source 0 --train-target 0 --test-per-cell 0",
     ["--train-source", "nothing to synthesize"], "{new}", None),
    # 7. a bad value read from --config or a best_config.json names that file and key, not a flag
    ("--config pretrain.val_fraction", "pretrain --data {data} --out {new} --config {root}/pre.yaml",
     ["pre.yaml", "pretrain.val_fraction"], "{new}", "no-flag:--val-fraction"),
    ("--config features.audio.seconds", "finetune --from-scratch --data {data} --machine fan --out {new} "
     "--config {root}/features.yaml", ["features.yaml", "features.audio.seconds"], "{new}", "no-flag:--seconds"),
    ("--config run.cache_dir", "pretrain --data {data} --out {new} --config {root}/cache.yaml",
     ["cache.yaml", "run.cache_dir", "not a folder"], "{new}", "no-flag:--cache-dir"),
    ("final-train --config finetune.head_dropout", "final-train --best {root}/best_ok.json --out {new} "
     "--config {root}/final.yaml --no-estimate", ["final.yaml", "finetune.head_dropout"], "{new}", "no-flag:--head-dropout"),
    ("best_config finetune_config.lr", "final-train --best {root}/best_bad_lr.json --out {new} --no-estimate",
     ["best_bad_lr.json", "finetune_config", "lr"], "{new}", "no-flag:--lr"),
]


@pytest.mark.parametrize("argv, words, out, how", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_corpus(env, tmp_path, argv, words, out, how):
    ro = tmp_path / "read-only"
    ro.mkdir()
    values = {"data": env["data"], "pre": env["pre"], "model": env["model"], "root": env["root"], "file": env["file"],
              "folder": env["folder"], "clip": env["clip"], "new": tmp_path / "new", "ro": ro}
    args = argv.format(**values).split()
    out_path = Path(out.format(**values))
    before = snapshot(out_path)
    cache_before = snapshot(Path(env["env"]["BOHB_SEARCH_CACHE"]))
    environ = {**env["env"], **({"BOHB_SEARCH_CACHE": str(env["file"])} if how == "cache-env" else {})}
    res = run_cli_not_writable(ro, *args, env=environ) if how == "ro" else run_cli(*args, env=environ)
    line = one_line_error(res, *words)
    if how and how.startswith("no-flag:"):
        assert how.split(":", 1)[1] not in line, line  # the value came from a file, not from that flag
    assert res.stdout == "" or "Traceback" not in res.stdout
    assert snapshot(out_path) == before, f"{out_path} changed"
    assert snapshot(Path(env["env"]["BOHB_SEARCH_CACHE"])) == cache_before, "the feature cache was written"
    if out_path != tmp_path / "new":
        assert not (tmp_path / "new").exists()
    assert snapshot(ro) == {}, "the not-writable folder was written"


def test_score_refused_output_prints_no_scores(env, tmp_path):
    """score used to print its scores and then fail on --out: now nothing is scored."""
    res = run_cli("score", "--model", str(env["model"]), str(env["clip"]), "--out", str(env["file"] / "x.csv"),
                  env=env["env"])
    one_line_error(res, "--out")
    assert res.stdout == ""


# ---------------------------------------------------------------------------------------------------- 5. nothing to report


def test_evaluate_without_two_labels_says_what_it_wrote_and_why_no_metrics(env, tmp_path):
    import shutil

    normal_only = tmp_path / "normal-only"
    shutil.copytree(env["data"], normal_only)
    for p in normal_only.glob("*/test/*anomaly*.wav"):
        p.unlink()
    out = tmp_path / "ev"
    res = run_cli("evaluate", "--model", str(env["model"]), "--data", str(normal_only), "--out", str(out), "--quiet",
                  env=env["env"])
    assert res.returncode == 0, res.stderr
    assert "tables" not in res.stdout.split("no metrics")[0], res.stdout  # never claims tables it did not write
    assert "scores.csv" in res.stdout and "submission files" in res.stdout
    assert "no metrics or tables" in res.stdout and "all normal" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["scores.csv", "submission"]

    unlabelled = tmp_path / "eval-format"
    (unlabelled / "fan" / "test").mkdir(parents=True)
    for i, p in enumerate(sorted((env["data"] / "fan" / "test").glob("*.wav"))):
        shutil.copy(p, unlabelled / "fan" / "test" / f"section_00_test_{i:04d}.wav")
    res = run_cli("evaluate", "--model", str(env["model"]), "--data", str(unlabelled), "--out", str(tmp_path / "ev2"),
                  "--quiet", env=env["env"])
    assert res.returncode == 0, res.stderr
    assert "no metrics or tables" in res.stdout and "no ground_truth" in res.stdout, res.stdout
    assert not (tmp_path / "ev2" / "metrics.json").exists()


def test_evaluate_with_labels_still_reports(env, tmp_path):
    res = run_cli("evaluate", "--model", str(env["model"]), "--data", str(env["data"]), "--out", str(tmp_path / "ev"),
                  "--quiet", env=env["env"])
    assert res.returncode == 0, res.stderr
    assert "official score" in res.stdout and "no metrics" not in res.stdout
    assert (tmp_path / "ev" / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------------- 6. said once


def test_knn_k_above_the_bank_size_is_said_once(env):
    res = run_cli("score", "--model", str(env["model"]), str(env["data"] / "fan" / "test"), "--knn-k", "50",
                  env=env["env"])
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if "knn_k 50" in line]
    assert len(notes) == 1 and "fan target: 2" in notes[0] and "average all" in notes[0], res.stderr
    res = run_cli("score", "--model", str(env["model"]), str(env["data"] / "fan" / "test"), "--knn-k", "1",
                  env=env["env"])
    assert res.returncode == 0 and "knn_k" not in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------------- the shared check


@pytest.fixture
def check():
    from bohb_search.cli.common import check_output_location

    return check_output_location


def test_output_check_refuses_a_file_where_a_folder_goes_and_a_folder_where_a_file_goes(check, tmp_path):
    from bohb_search.cli import UsageError

    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    for kind in ("folder", "replaced folder"):
        with pytest.raises(UsageError, match=r"^--out .*/f: exists and is not a folder$"):
            check(tmp_path / "f", "--out", kind)
    with pytest.raises(UsageError, match=r"^--csv .*/d: is a folder; give a file name$"):
        check(tmp_path / "d", "--csv", "file")
    check(tmp_path / "f", "--csv", "file")  # an existing file is overwritten (atomically): fine
    check(tmp_path / "d", "--out", "folder")


def test_output_check_refuses_a_missing_path_under_a_file_or_a_broken_link(check, tmp_path):
    from bohb_search.cli import UsageError

    (tmp_path / "f").write_text("x")
    for kind in ("folder", "file", "replaced folder"):
        with pytest.raises(UsageError, match=r"/f is a file, so the folder cannot be made$"):
            check(tmp_path / "f" / "a" / "b", "--out", kind)
    os.symlink(tmp_path / "gone", tmp_path / "link")
    with pytest.raises(UsageError, match="broken symbolic link"):
        check(tmp_path / "link", "--out")
    with pytest.raises(UsageError, match="broken symbolic link"):
        check(tmp_path / "link" / "x", "--out")
    # missing parents under a writable folder are made later, by the command: the check creates nothing
    check(tmp_path / "new" / "deeper" / "out", "--out")
    check(tmp_path / "new" / "deeper" / "x.csv", "--csv", "file")
    assert not (tmp_path / "new").exists()


def test_output_check_refuses_what_cannot_be_written(check, tmp_path, monkeypatch):
    from bohb_search.cli import UsageError

    ro = tmp_path / "ro"
    (ro / "existing").mkdir(parents=True)
    (ro / "scores.csv").write_text("x")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if (
        mode & os.W_OK and os.path.abspath(p).startswith(str(ro))) else real(p, mode, *a, **k))
    with pytest.raises(UsageError, match=r"^--out .*/ro: the folder is not writable$"):
        check(ro, "--out")
    with pytest.raises(UsageError, match=r"/ro is not writable, so the folder cannot be made$"):
        check(ro / "new" / "deeper", "--out")
    with pytest.raises(UsageError, match=r"/ro is not writable, so the file cannot be written$"):
        check(ro / "scores.csv", "--out", "file")
    with pytest.raises(UsageError, match="not writable"):
        check(ro / "existing", "--out", "folder")
    # evaluate builds its folder beside --out and renames it into place: the parent must be writable too
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if (
        mode & os.W_OK and os.path.abspath(p) == str(ro)) else real(p, mode, *a, **k))
    check(ro / "existing", "--out", "folder")
    with pytest.raises(UsageError, match=r"/ro is not writable"):
        check(ro / "existing", "--out", "replaced folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_check_sees_real_permissions(check, tmp_path):
    from bohb_search.cli import UsageError

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UsageError, match="not writable"):
            check(ro / "out", "--out")
    finally:
        ro.chmod(0o755)


def test_a_late_file_system_error_is_one_line(monkeypatch, capsys, tmp_path):
    """Whatever a command meets after the checks (a disk turned read-only, a full disk) is one line too."""
    from bohb_search import cli
    from bohb_search.cli import data_cmds

    def fail(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.csv"))

    monkeypatch.setattr(data_cmds, "cmd_data_summary", fail)
    assert cli.main(["data", "summary", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'x.csv'}: Permission denied\n"


# ---------------------------------------------------------------------------------------------------- 4. NaN/Inf on load


@pytest.mark.parametrize("tensor", ["center", "train_embeddings", "train_patch_stats", "encoder", "head"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_checkpoint_with_non_finite_scoring_tensors_is_refused_on_load(env, tmp_path, tensor, value):
    from bohb_search.scoring.model import AnomalyModel
    from models import CheckpointError

    bundle = torch.load(env["model"], weights_only=True)
    if tensor in ("encoder", "head"):
        name = next(k for k, v in bundle[tensor].items() if v.is_floating_point())
        bundle[tensor][name] = bundle[tensor][name].clone().flatten().index_fill(0, torch.tensor([0]), value) \
            .reshape(bundle[tensor][name].shape)
        expected = f"{tensor}['{name}']"
    else:
        bundle[tensor] = bundle[tensor].clone()
        bundle[tensor].view(-1)[0] = value
        expected = tensor
    path = tmp_path / "bad.pt"
    torch.save(bundle, path)
    with pytest.raises(CheckpointError) as info:
        AnomalyModel.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "NaN/Inf" in message
    assert "\n" not in message
    AnomalyModel.load(env["model"])  # the untouched model loads


def test_statistics_and_ae_tensors_are_checked_too():
    from bohb_search.scoring.model import check_finite

    stats = {"stats": {"fan": {"train_embeddings": torch.tensor([[1.0, float("nan")]])}}}
    with pytest.raises(ValueError, match=r"stats\['fan'\]\['train_embeddings'\]"):
        check_finite(stats)
    ae = {"ae": {"w": torch.ones(2)}, "ae_stats": {"source": {"mean": torch.tensor([float("-inf")])}}}
    with pytest.raises(ValueError, match=r"ae_stats\['source'\]\['mean'\]"):
        check_finite(ae)
    check_finite({"center": torch.zeros(3), "ae": {"w": torch.ones(2)}, "history": [{"val": float("nan")}]})


# ---------------------------------------------------------------------------------------------------- 3. every range


def _numeric_fields(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp in (int, float) or (typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType"))
                                  and set(typing.get_args(tp)) - {type(None)} <= {int, float}):
            yield f.name, tp


def _config_classes():
    from bohb_search.final import FinalTrainConfig
    from bohb_search.scoring.config import DecisionConfig, ScoreConfig, StatsBaselineConfig
    from bohb_search.train.configs import AEBaselineConfig, FinetuneConfig, PretrainConfig
    from data.synth.config import SynthConfig

    return [PretrainConfig, FinetuneConfig, AEBaselineConfig, ScoreConfig, StatsBaselineConfig, DecisionConfig,
            SynthConfig, FinalTrainConfig]


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_numeric_setting_has_a_range(cls):
    """No numeric field of the configs the flags come from takes any number: a value far below every range is
    refused when the config is built (what the command line does before any work), naming the field."""
    for name, tp in _numeric_fields(cls):
        with pytest.raises(ValueError) as info:
            cls(**{name: -10**9})
        assert name in str(info.value), (cls.__name__, name, str(info.value))


def test_flags_for_numbers_without_a_config_have_ranges():
    """Numeric flags declared outside the config classes parse with a range (argparse refuses the value)."""
    from bohb_search.cli import build_parser

    parser = build_parser()
    for argv in (["search", "--data", "d", "--machine", "fan", "--pretrain-epochs", "0"],
                 ["ablate", "--data", "d", "--lr", "-1"], ["ablate", "--data", "d", "--seconds", "0"],
                 ["compare-searchers", "--data", "d", "--machine", "fan", "--budget-epochs", "3", "--eta", "1"],
                 ["compare-searchers", "--data", "d", "--machine", "fan", "--budget-epochs", "3",
                  "--max-concurrent", "-1"],
                 ["data", "features", "--data", "d", "--batch-size", "0"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2, argv


def test_threshold_percentile_is_a_config_flag_with_its_range_in_the_help():
    res = run_cli("finetune", "--help")
    assert "--threshold-percentile" in res.stdout and "in (0, 1)" in res.stdout


def test_source_of_a_bad_value_is_named():
    """The flag the user typed, or the file and key: never a flag the user did not type."""
    from bohb_search.cli.flags import build_config
    from bohb_search.train.configs import FinetuneConfig

    with pytest.raises(Exception, match=r"^--head-dropout must be in \[0, 1\), got 1.5$"):
        build_config(FinetuneConfig, {}, {"head_dropout": 1.5}, "finetune")
    with pytest.raises(Exception, match=r"^--config c.yaml: finetune.head_dropout must be in \[0, 1\), got 1.5$"):
        build_config(FinetuneConfig, {"head_dropout": 1.5}, {}, "finetune", Path("c.yaml"))
    with pytest.raises(Exception, match=r"^--config c.yaml: finetune.knn_k must be an integer >= 1, got 0$"):
        build_config(FinetuneConfig, {"knn_k": 0}, {"lr": 0.1}, "finetune", Path("c.yaml"))


def test_best_config_schema(tmp_path, env):
    from bohb_search.final import load_best
    from data.datasets import DataError

    ok = json.loads((env["root"] / "best_ok.json").read_text())
    for bad, words in [({"data": "/x"}, '"data"'), ({"data": []}, '"data"'), ({"data": [1]}, '"data"'),
                       ({"pretrained": ["a"]}, '"pretrained"'), ({"machines": "fan"}, '"machines"'),
                       ({"finetune_config": []}, '"finetune_config"'), ({"generalized": "no"}, '"generalized"'),
                       ({"data": [str(env["data"]), str(env["data"])]}, "given twice")]:
        path = tmp_path / "best.json"
        path.write_text(json.dumps({**ok, **bad}))
        with pytest.raises(DataError) as info:
            load_best(path)
        assert str(info.value).startswith(str(path)) and words in str(info.value), str(info.value)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a mapping"):
        load_best(path)
    assert load_best(env["root"] / "best_ok.json")["data"] == [str(env["data"])]


def test_argparse_namespace_without_outputs_is_fine():
    from bohb_search.cli.common import check_outputs

    check_outputs(argparse.Namespace())
    check_outputs(argparse.Namespace(outputs={"out": "folder"}, out=None, data=None))

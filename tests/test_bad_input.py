"""Bad input, as users give it: every failure is exit code 2 with one line on stderr naming the file or the
flag, no traceback, and nothing half-written left behind (or the documented success)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SECONDS = ["--seconds", "4"]


def one_line_error(res, *words):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr and len(err.splitlines()) == 1, res.stderr
    assert err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    data = root / "data"
    res = run_cli("data", "synth", "--out", str(data), "--machines", "fan", "valve", "--train-source", "12",
                  "--train-target", "3", "--test-per-cell", "4", "--seconds", "4", "--quiet")
    assert res.returncode == 0, res.stderr
    res = run_cli("pretrain", "--data", str(data), "--out", str(root / "pre"), "--epochs", "1", "--batch-size", "16",
                  "--dim", "32", "--depth", "2", "--quiet", *SECONDS)
    assert res.returncode == 0, res.stderr
    res = run_cli("finetune", "--pretrained", str(root / "pre" / "encoder.pt"), "--data", str(data), "--machine",
                  "fan", "--out", str(root / "ft"), "--max-epochs", "1", "--batch-size", "8",
                  "--min-steps-per-epoch", "0", "--score", "knn", "--quiet", *SECONDS)
    assert res.returncode == 0, res.stderr
    return {"root": root, "data": data, "pre": root / "pre" / "encoder.pt", "model": root / "ft" / "model.pt"}


def copy_data(env, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(env["data"], dst)
    return dst


# ---------------------------------------------------------------- 1. unreadable files, symlink loops, dangling links


def test_unreadable_entries_and_symlink_loops_follow_on_bad_file(env, tmp_path):
    data = copy_data(env, tmp_path)
    test = data / "fan" / "test"
    os.symlink(test / "loop_b.wav", test / "section_00_source_test_normal_0901_mod_F1_rpm_900.wav")
    os.symlink(test / "section_00_source_test_normal_0901_mod_F1_rpm_900.wav", test / "loop_b.wav")
    os.symlink(tmp_path / "gone.wav", test / "section_00_source_test_normal_0902_mod_F1_rpm_900.wav")
    res = run_cli("data", "summary", "--data", str(data))
    assert res.returncode == 0
    assert "0901" in res.stderr and "0902" in res.stderr and "symbolic link" in res.stderr  # said, not dropped quietly
    res = run_cli("data", "features", "--data", str(data), "--machines", "fan", "--quiet", *SECONDS)
    assert res.returncode == 0 and "0902" in res.stderr  # links to nothing are not clips: warned and left out
    # score on a folder with a dangling link and a loop: one line naming it, and how to go on
    err = one_line_error(run_cli("score", "--model", str(env["model"]), str(test)), "--on-bad-file skip")
    assert "cannot open" in err and ("0901" in err or "0902" in err or "loop_b" in err)
    res = run_cli("score", "--model", str(env["model"]), str(test), "--on-bad-file", "skip")
    assert res.returncode == 0 and "skipped" in res.stderr and "0902" in res.stderr


def test_files_that_cannot_be_opened_are_bad_audio(tmp_path):
    """A folder named like a clip, a symlink loop (and, for a non-root user, a file without read permission)
    raise the one-line BadAudioError that --on-bad-file handles, never a raw OSError."""
    from data.audio import BadAudioError, read_audio

    (tmp_path / "folder.wav").mkdir()
    os.symlink(tmp_path / "b.wav", tmp_path / "a.wav")
    os.symlink(tmp_path / "a.wav", tmp_path / "b.wav")
    for name in ("folder.wav", "a.wav"):
        with pytest.raises(BadAudioError, match="cannot open") as info:
            read_audio(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name))


# ---------------------------------------------------------------- 2. skipped files are reported by evaluate and finetune


def test_evaluate_and_finetune_report_the_files_they_skip(env, tmp_path):
    data = copy_data(env, tmp_path)
    bad = data / "fan" / "test" / "section_00_target_test_anomaly_0003_mod_F3_rpm_1500.wav"
    bad.write_bytes(b"not audio at all")
    res = run_cli("evaluate", "--model", str(env["model"]), "--data", str(data), "--out", str(tmp_path / "ev"),
                  "--on-bad-file", "skip", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "skipped 1 bad file(s)" in res.stderr and bad.name in res.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert [s["path"] for s in metrics["skipped_files"]] == [str(bad)]
    assert (tmp_path / "ev" / "skipped.csv").read_text().splitlines()[1].startswith(str(bad))
    train_bad = data / "fan" / "train" / sorted(os.listdir(data / "fan" / "train"))[0]
    train_bad.write_bytes(b"")
    res = run_cli("finetune", "--pretrained", str(env["pre"]), "--data", str(data), "--machine", "fan", "--out",
                  str(tmp_path / "ft"), "--max-epochs", "1", "--batch-size", "8", "--min-steps-per-epoch", "0",
                  "--on-bad-file", "skip", "--quiet", *SECONDS)
    assert res.returncode == 0, res.stderr
    assert train_bad.name in res.stderr
    report = json.loads((tmp_path / "ft" / "finetune_report.json").read_text())
    assert {s["path"] for s in report["skipped_files"]} >= {str(train_bad), str(bad)}


# ---------------------------------------------------------------- 5. a machine the model does not know


def test_score_for_an_unknown_machine_lists_the_models_machines(env):
    clip = next((env["data"] / "fan" / "test").glob("*.wav"))
    one_line_error(run_cli("score", "--model", str(env["model"]), str(clip), "--machine", "pump"),
                   "--machine pump", "fan")


# ---------------------------------------------------------------- 6. checkpoints that are not ours


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_messages(env, tmp_path):
    clip = str(next((env["data"] / "fan" / "test").glob("*.wav")))
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    err = one_line_error(run_cli("score", "--model", str(evil), clip), "evil.pt", "not a checkpoint of this tool",
                         "not loaded")
    assert "weights_only=False" not in err
    (tmp_path / "empty.pt").write_bytes(b"")
    one_line_error(run_cli("score", "--model", str(tmp_path / "empty.pt"), clip), "empty.pt", "empty file")
    (tmp_path / "text.pt").write_text("hello, I am text\n")
    one_line_error(run_cli("score", "--model", str(tmp_path / "text.pt"), clip), "text.pt", "not")
    bundle = torch.load(env["model"], weights_only=True)
    torch.save({k: v for k, v in bundle.items() if k != "head"}, tmp_path / "nohead.pt")
    one_line_error(run_cli("score", "--model", str(tmp_path / "nohead.pt"), clip), "nohead.pt", "'head'")
    torch.save({**bundle, "feature_config": {"n_mels": "many"}}, tmp_path / "badfeat.pt")
    one_line_error(run_cli("score", "--model", str(tmp_path / "badfeat.pt"), clip), "badfeat.pt")
    torch.save({"kind": "something else"}, tmp_path / "other.pt")
    one_line_error(run_cli("score", "--model", str(tmp_path / "other.pt"), clip), "other.pt")
    one_line_error(run_cli("finetune", "--pretrained", str(tmp_path / "text.pt"), "--data", str(env["data"]),
                           "--machine", "fan", "--out", str(tmp_path / "never")), "text.pt")
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------- 7. numbers that pass a type check but make no sense


@pytest.mark.parametrize("args, words", [
    (["--lr", "inf"], ["lr", "inf"]),
    (["--lr", "-1e-3"], ["lr", "-0.001"]),
    (["--seconds", "0.01"], ["--seconds 0.01", "window"]),
    (["--batch-size", "32.5"], ["--batch-size", "32.5"]),
    (["--head-dropout", "1.5"], ["--head-dropout", "1.5"]),
])
def test_out_of_range_numbers_are_refused_before_anything_runs(env, tmp_path, args, words):
    res = run_cli("finetune", "--pretrained", str(env["pre"]), "--data", str(env["data"]), "--machine", "fan",
                  "--out", str(tmp_path / "ft"), *args)
    if res.returncode == 2 and res.stderr.startswith("usage:"):  # argparse's own type errors: two lines of usage
        assert words[0] in res.stderr and "Traceback" not in res.stderr
    else:
        one_line_error(res, *words)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("size", ["0", "-3"])
def test_feature_batch_size_must_be_positive(env, size):
    res = run_cli("data", "features", "--data", str(env["data"]), "--batch-size", size)
    assert res.returncode == 2 and "--batch-size" in res.stderr and "positive integer" in res.stderr
    assert "Traceback" not in res.stderr


def test_help_shows_ranges():
    res = run_cli("finetune", "--help")
    assert "in [0, 1)" in res.stdout and "in [-1, 1]" in res.stdout


# ---------------------------------------------------------------- 8. output paths


def test_output_paths_that_name_folders_or_files_are_refused_first(env, tmp_path):
    clip = str(next((env["data"] / "fan" / "test").glob("*.wav")))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    one_line_error(run_cli("data", "summary", "--data", str(env["data"]), "--csv", str(folder)), "--csv", "folder")
    res = run_cli("score", "--model", str(env["model"]), clip, "--out", str(folder))
    one_line_error(res, "--out", "folder")
    assert res.stdout == ""  # refused before any result was printed
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    one_line_error(run_cli("finetune", "--pretrained", str(env["pre"]), "--data", str(env["data"]), "--machine",
                           "fan", "--out", str(a_file)), "--out", "not a folder")
    # a failed run leaves no empty folder
    one_line_error(run_cli("finetune", "--pretrained", str(env["pre"]), "--data", str(env["data"]), "--machine",
                           "pump", "--out", str(tmp_path / "no-pump")), "pump")
    assert not (tmp_path / "no-pump").exists()


def test_a_failed_evaluate_leaves_the_earlier_results_whole(env, tmp_path):
    out = tmp_path / "ev"
    res = run_cli("evaluate", "--model", str(env["model"]), "--data", str(env["data"]), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    data = copy_data(env, tmp_path)
    next((data / "fan" / "test").glob("*anomaly*.wav")).write_bytes(b"RIFF....WAVEbroken")
    one_line_error(run_cli("evaluate", "--model", str(env["model"]), "--data", str(data), "--out", str(out),
                           "--quiet"), "--on-bad-file skip")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ev.")]  # no temporary folder left


# ---------------------------------------------------------------- 9. minor


def test_score_channel_and_formats(env, tmp_path):
    clip = next((env["data"] / "fan" / "test").glob("*.wav"))
    one_line_error(run_cli("score", "--model", str(env["model"]), str(clip), "--channel", "foo"), "--channel", "'foo'")
    mp3s = tmp_path / "mp3s"
    mp3s.mkdir()
    wave, sr = sf.read(clip)
    sf.write(mp3s / "clip.mp3", wave, sr, format="MP3")
    res = run_cli("score", "--model", str(env["model"]), str(mp3s))
    assert res.returncode == 0 and "clip.mp3" in res.stdout, res.stderr
    (mp3s / "clip.mp3").unlink()
    (mp3s / "notes.txt").write_text("x")
    one_line_error(run_cli("score", "--model", str(env["model"]), str(mp3s)), ".wav", ".mp3")


def test_score_of_a_too_short_file_says_so(env, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(800, dtype=np.float32), 16000)
    one_line_error(run_cli("score", "--model", str(env["model"]), str(short)), "short.wav", "too short",
                   "--on-bad-file skip")

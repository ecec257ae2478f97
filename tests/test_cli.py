"""Every command answers --help; the entry point is wired."""

from __future__ import annotations

import pytest

from bohb_search.cli import build_parser
from tests.conftest import run_cli


def _all_commands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _all_commands(sub, prefix + (name,))


COMMANDS = list(_all_commands(build_parser()))


def test_expected_commands_exist():
    assert {("data",), ("data", "synth"), ("data", "download"), ("data", "features"), ("data", "summary")} <= set(COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*cmd, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_module_entry_point_help():
    res = run_cli("--help")
    assert res.returncode == 0 and "data" in res.stdout


def test_bad_parameter_is_one_line():
    res = run_cli("data", "features", "--data", ".", "--channel", "left")
    assert res.returncode == 2 and res.stderr.strip() == "error: --channel must be an integer index or 'mean', got 'left'"


# ------------------------------------------------------------------ one source for every setting


def _flags(parser_cmd):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    p = sub.choices[parser_cmd]
    return {a.dest: a for a in p._actions}


@pytest.mark.parametrize("cmd, cls_path", [("finetune", "bohb_search.train.configs:FinetuneConfig"),
                                           ("pretrain", "bohb_search.train.configs:PretrainConfig")])
def test_every_config_field_is_a_flag_with_its_default_and_comment(cmd, cls_path):
    import importlib
    from dataclasses import fields

    from bohb_search.train.configs import field_default, field_docs

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    flags = _flags(cmd)
    docs = field_docs(cls)
    for f in fields(cls):
        assert f.name in flags, f"{cmd}: no flag for {name}.{f.name}"
        help_text = flags[f.name].help
        assert docs[f.name] and docs[f.name] in help_text, f"{cmd} --{f.name}: help does not come from the field comment"
        default = field_default(f)
        shown = " ".join(map(str, default)) or "(none)" if isinstance(default, tuple) else str(default)
        assert f"(default {shown})" in help_text, f"{cmd} --{f.name}: help shows another default than {default!r}"


def test_config_file_with_flag_overrides_and_effective_config_written(tmp_path):
    import yaml

    data = tmp_path / "data"
    res = run_cli("data", "synth", "--out", str(data), "--machines", "fan", "valve", "--train-source", "6",
                  "--train-target", "2", "--test-per-cell", "2", "--seconds", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    cfg = tmp_path / "ae.yaml"
    cfg.write_text(yaml.safe_dump({"baseline": {"lr": 0.005, "max_epochs": 1, "batch_size": 64},
                                   "features": {"audio": {"seconds": 2.0}},
                                   "run": {"quiet": True, "cache_dir": str(tmp_path / "cache")}}))
    out = tmp_path / "ae"
    res = run_cli("baseline", "--data", str(data), "--machine", "fan", "--out", str(out),
                  "--config", str(cfg), "--lr", "0.002")
    assert res.returncode == 0, res.stderr
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["baseline"]["lr"] == 0.002  # the flag wins over the file
    assert written["baseline"]["max_epochs"] == 1 and written["baseline"]["batch_size"] == 64  # the file wins over defaults
    assert written["features"]["audio"]["seconds"] == 2.0
    # the written file is itself a valid --config
    again = run_cli("baseline", "--data", str(data), "--machine", "fan",
                    "--out", str(tmp_path / "ae2"), "--config", str(out / "config.yaml"), "--quiet")
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load((tmp_path / "ae2" / "config.yaml").read_text())["baseline"] == written["baseline"]


@pytest.mark.parametrize("bad, message", [
    ({"finetune": {"lr": -1}}, "bad.yaml: finetune.lr must be > 0, got -1"),
    ({"finetune": {"learning_rate": 1}}, "unknown setting(s) learning_rate"),
    ({"finetune": {"score": "euclid"}}, "bad.yaml: finetune.score: expected one of cosine, knn, got 'euclid'"),
    ({"finetuning": {}}, "unknown section(s) finetuning"),
])
def test_bad_config_file_is_one_line(tmp_path, bad, message):
    import yaml

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    res = run_cli("finetune", "--pretrained", str(tmp_path / "encoder.pt"), "--data", str(tmp_path), "--machine",
                  "fan", "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "o").exists()


def test_ast_backbone_sizes_its_heads_from_the_width():
    from models import build_encoder, encoder_preset

    for dim in (32, 48, 64, 96, 192, 384):
        cfg = encoder_preset("tiny", kind="ast", dim=dim, depth=1)
        assert dim % cfg.n_heads == 0
        build_encoder(cfg)
    assert [encoder_preset(p).n_heads for p in ("tiny", "small", "base")] == [3, 6, 12]


def test_searcher_names_of_the_cli_are_the_experiments_searchers():
    from bohb_search.cli.experiment_cmds import SEARCHER_NAMES
    from bohb_search.experiments.searchers import SEARCHER_VARIANTS

    assert SEARCHER_NAMES == list(SEARCHER_VARIANTS)

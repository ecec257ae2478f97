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

"""A training process takes the CPUs it was given: Ray's share for a trial, --threads or its affinity mask."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch

from bohb_search.cli.common import UsageError, run_options
from data.threads import intra_op_threads, use_threads, visible_cpus
from tests.conftest import REPO


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_thread_count_follows_the_cpus_granted():
    assert intra_op_threads(1) == 1 and intra_op_threads(2.0) == 2
    assert intra_op_threads(0.5) == 1  # a fractional Ray share still runs, on one thread
    assert intra_op_threads(2.5) == 2  # never more threads than CPUs granted
    assert intra_op_threads(None) == visible_cpus() >= 1
    for bad in (0, -1, float("nan"), True, "2"):
        with pytest.raises(ValueError, match="positive"):
            intra_op_threads(bad)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs an OS with CPU affinity masks")
def test_default_is_the_affinity_mask_not_the_machine():
    # a process pinned to one core (taskset, a cpuset) must not start os.cpu_count() threads
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from data.threads import use_threads, visible_cpus; import torch; "
            "print(visible_cpus(), use_threads(), torch.get_num_threads())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "1"]


def test_cli_threads_flag_sets_torch_threads(restore_threads):
    torch.set_num_threads(2)
    opts = run_options(argparse.Namespace(threads=1))
    assert opts.threads == 1 and torch.get_num_threads() == 1
    run_options(argparse.Namespace())  # no --threads: the CPUs this process may run on
    assert torch.get_num_threads() == visible_cpus()
    with pytest.raises(UsageError, match="--threads"):
        run_options(argparse.Namespace(threads=0))


def test_use_threads_returns_what_it_set(restore_threads):
    assert use_threads(1) == 1 == torch.get_num_threads()

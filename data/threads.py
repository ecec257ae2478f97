"""How many intra-op threads a process that trains gives torch: the CPUs it was given, never more.

Two processes that each think they own the machine (two concurrent search trials, a training run beside
another job) oversubscribe the cores: every OpenMP-parallel op then waits at its barrier for a thread whose
core is busy elsewhere, and both run slower than one would alone. So a Ray trial uses the CPUs Ray assigned
to it (``bohb_search.tune.trainable``), and any other training process ``--threads`` or, by default, the CPUs
its affinity mask lets it run on (``taskset``, a container's cpuset, a batch scheduler's allocation), which
``os.cpu_count()`` does not see.
"""

from __future__ import annotations

import math
import os


def visible_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one, else all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def intra_op_threads(cpus: float | None = None) -> int:
    """Threads for ``cpus`` CPUs (a Ray trial's share may be fractional: at least one thread, never more
    than the CPUs granted), or for the visible CPUs when None."""
    if cpus is None:
        return visible_cpus()
    if not (isinstance(cpus, (int, float)) and not isinstance(cpus, bool) and math.isfinite(cpus) and cpus > 0):
        raise ValueError(f"threads / CPUs must be a positive number, got {cpus!r}")
    return max(1, int(cpus))


def use_threads(cpus: float | None = None) -> int:
    """Set torch's intra-op threads for ``cpus`` (see :func:`intra_op_threads`); returns the count set."""
    import torch

    n = intra_op_threads(cpus)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n

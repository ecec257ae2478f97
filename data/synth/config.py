"""What to synthesize (:class:`SynthConfig`) and the fixed facts of the synthetic data set; no numerical
libraries beyond numpy's integer types, so the command line reads it for its flags cheaply."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import DEV_MACHINES

TOY_MACHINES = ("ToyCar", "ToyTrain")  # 12 s clips in real DCASE, hence SynthConfig.toy_seconds
DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")
SECTION = "00"
MANIFEST_NAME = "synth_manifest.csv"
SEVERITY_RANGE = (0.6, 1.3)  # anomaly strength multiplier drawn per clip: some faults are faint (calibrated, see TARGET_SITE)
MIN_SECONDS = 0.1


def is_int(x) -> bool:
    """An integer, numpy's included, and not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Counts are clips per machine; ``test_per_cell`` is per (domain × label)."""

    machines: tuple[str, ...] = DEV_MACHINES  # machine types to synthesize
    train_source: int = 990  # source-domain normal training clips per machine
    train_target: int = 10  # target-domain normal training clips per machine
    test_per_cell: int = 50  # test clips per (domain × label) cell
    seconds: float = 10.0  # clip length in seconds
    toy_seconds: float | None = None  # ToyCar/ToyTrain clip length; None = same as seconds
    sample_rate: int = 16_000  # sample rate of the written WAV files
    seed: int = 0  # random seed (same seed → identical files)

    def __post_init__(self):
        machines = (self.machines,) if isinstance(self.machines, str) else tuple(self.machines)
        if not machines:
            raise ValueError("machines must name at least one machine type")
        for m in machines:
            if m not in DEV_MACHINES:
                raise ValueError(f"machines: unknown machine type {m!r}; choose from {', '.join(DEV_MACHINES)}")
        if len(set(machines)) != len(machines):
            raise ValueError(f"machines: duplicate machine type in {machines}")
        object.__setattr__(self, "machines", machines)
        for name in ("train_source", "train_target", "test_per_cell"):
            v = getattr(self, name)
            if not is_int(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
            if v > 9999:
                raise ValueError(f"{name} must be at most 9999 (four-digit DCASE file index), got {v}")
        if self.train_source + self.train_target + self.test_per_cell == 0:
            raise ValueError("--train-source, --train-target and --test-per-cell are all 0: nothing to synthesize")
        for name in ("seconds", "toy_seconds"):
            v = getattr(self, name)
            if v is None and name == "toy_seconds":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
            if v < MIN_SECONDS:
                raise ValueError(f"{name} must be at least {MIN_SECONDS} s, got {v!r}")
        if not is_int(self.sample_rate) or self.sample_rate < 8000:
            raise ValueError(f"sample_rate must be an integer of at least 8000 Hz, got {self.sample_rate!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def seconds_for(self, machine: str) -> float:
        if machine in TOY_MACHINES and self.toy_seconds is not None:
            return float(self.toy_seconds)
        return float(self.seconds)

    @property
    def clips_per_machine(self) -> int:
        return self.train_source + self.train_target + 4 * self.test_per_cell

"""How long will it take? A short measured step, extrapolated to an epoch, before a long run starts.

A throwaway trainer of the run's configuration trains one warm-up batch and then ``n_batches`` timed
batches on the chosen device, and embeds one batch of clips; an epoch is the trainer's number of
batches per epoch times the time of a batch, plus the embedding of every clip scored per epoch
(training normals for the score's banks and validation clips). Measured, not modelled: the
figure includes whatever this machine's CPU threads, GPU, AMP and scan backend make of the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

ONE_HOUR = 3600.0


@dataclass(frozen=True)
class EpochEstimate:
    seconds_per_epoch: float
    batches_per_epoch: int
    seconds_per_batch: float
    device: str

    def describe(self) -> str:
        return (f"{self.seconds_per_epoch:.1f} s per epoch on {self.device} ({self.batches_per_epoch} batches of "
                f"{self.seconds_per_batch:.2f} s, measured)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_epoch(trainer, n_batches: int = 2) -> EpochEstimate:
    """Time ``n_batches`` training batches (after one warm-up) and one embedding batch of ``trainer``.

    The trainer is consumed: its weights, generator and epoch counter are changed, so give it a
    trainer built only for this measurement.
    """
    device = trainer.device
    batches_per_epoch = trainer.batches_per_epoch()
    trainer.batch_limit = 1
    trainer._train_epoch()  # warm-up: allocator, kernels, caches
    trainer.batch_limit = n_batches
    _sync(device)
    t0 = time.perf_counter()
    trainer._train_epoch()
    _sync(device)
    timed = min(n_batches, batches_per_epoch)
    per_batch = (time.perf_counter() - t0) / max(timed, 1)
    trainer.batch_limit = None
    seconds = batches_per_epoch * per_batch + _embedding_seconds(trainer)
    return EpochEstimate(seconds, batches_per_epoch, per_batch, str(device))


def _embedding_seconds(trainer) -> float:
    """Time to embed the clips a fine-tuning epoch scores (the AE scores its own vectors: counted above)."""
    if not hasattr(trainer, "embed"):
        return 0.0
    data = trainer.data
    n_clips = len(np.unique(data.train_index)) + (0 if trainer.val_x is None else len(trainer.val_x))
    sample = data.train_base[: trainer.cfg.batch_size]
    trainer.embed(sample)  # warm-up
    _sync(trainer.device)
    t0 = time.perf_counter()
    trainer.embed(sample)
    _sync(trainer.device)
    return (time.perf_counter() - t0) / max(len(sample), 1) * n_clips


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def eta_lines(plan: str, eta_seconds: float | None, estimate: EpochEstimate | None) -> list[str]:
    """The lines printed before a long run: the plan, the ETA and, for a CPU run over an hour, a warning."""
    lines = [plan]
    if eta_seconds is None or estimate is None:
        return lines
    lines.append(f"estimated time: {format_duration(eta_seconds)} ({estimate.describe()})")
    if estimate.device.startswith("cpu") and eta_seconds > ONE_HOUR:
        lines.append(f"warning: about {format_duration(eta_seconds)} on CPU; for a first run lower --num-samples/"
                     "--max-epochs, use a smaller encoder preset, or run on a GPU (README: CPU-sized settings)")
    return lines


def print_lines(lines: list[str], out=print) -> None:
    import sys

    for line in lines:
        if line.startswith("warning:"):
            print(line, file=sys.stderr, flush=True)
        else:
            out(line)

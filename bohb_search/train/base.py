"""What every trainer shares: device choice, autocast, shuffled batches, and the stage-2 base class.

Every trainer is budget-aware: ``step()`` runs exactly one epoch and returns that epoch's metrics,
and ``state_dict()`` / ``load_state_dict()`` capture the COMPLETE state — weights, optimizers, the
SVDD centre, epoch counter, early-stopping state, the shuffling/pseudo-outlier generator and the
global RNG used by dropout — so that 3 epochs + restore + 3 epochs equals 6 epochs bit for bit on CPU.
The CLI's ``pretrain``/``finetune``, the Ray Tune trainable and ``final-train`` all drive these objects.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch

from data.datasets import FinetuneData

from ..evaluate.metrics import evaluate_scores, validation_auc


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return dev


def autocast(device: torch.device, enabled: bool):
    # bfloat16 autocast on CUDA only: CPU autocast is slower than float32 on most CPUs
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def batches(n: int, batch_size: int, generator: torch.Generator | None, min_batches: int = 0):
    """Index batches over ``n`` items: one shuffled pass, then further shuffled passes until at least
    ``min_batches`` batches were given, so an epoch is never a handful of steps on a small machine."""
    given = 0
    while True:
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size].numpy()
            given += 1
        if given >= min_batches:
            return


def epoch_batches(n: int, batch_size: int, min_steps: int, accum_steps: int = 1) -> int:
    """Batches of one epoch: a pass over ``n`` items, or more to reach ``min_steps`` optimizer steps
    (each of ``accum_steps`` batches), rounded up to whole passes."""
    per_pass = max(1, math.ceil(n / batch_size))
    wanted = min_steps * accum_steps
    return per_pass * max(1, math.ceil(wanted / per_pass))


class AnomalyTrainer:
    """Epoch counter, validation, model selection and RNG bookkeeping shared by the stage-2 trainers.

    Model selection follows ``data.selection``: with a validation set the epoch with the best
    ``val_score`` is kept and training stops after ``patience`` epochs without improvement; with a
    ``"fixed budget"`` (or ``select_best = False``, the AE baseline's recipe) every epoch up to
    ``max_epochs`` is trained and the last one is kept. ``val_score`` is the official DCASE score on
    the validation part of the labelled test split, or the AUC of held-out normals against pseudo
    outliers without labels.

    Subclasses implement ``_train_epoch() -> dict``, ``score(features, machines)``, ``_model_state()`` /
    ``_load_model_state()`` and ``_extra_state()`` / ``_load_extra_state()``, and may build held-out
    validation clips in ``_heldout_validation()``.
    """

    kind = "abstract"
    select_best = True

    def __init__(self, cfg, data: FinetuneData, device):
        self.cfg = cfg
        self.data = data
        self.device = resolve_device(device) if isinstance(device, str) else device
        torch.manual_seed(cfg.seed)  # weight initialisation is part of the seeded run
        self.generator = torch.Generator().manual_seed(cfg.seed)  # batch order + pseudo outliers
        self.epoch = 0
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.history: list[dict] = []
        # set only by the ETA estimate (train/estimate.py), which times a few batches of a throwaway trainer
        self.batch_limit: int | None = None
        self.val_x = self.val_y = self.val_domain = self.val_machine = self.val_section = None
        # True when the configured score reads nothing that training changes (the frozen tokenizer's patch
        # statistics): every epoch would validate alike, so one epoch is trained and kept
        self.training_independent = False

    def _epoch_batch_ids(self) -> list[np.ndarray]:
        """The index batches of the next epoch (``min_steps_per_epoch`` optimizer steps at least)."""
        ids = list(batches(self.data.n_train, self.cfg.batch_size, self.generator, self.batches_per_epoch()))
        return ids if self.batch_limit is None else ids[: self.batch_limit]

    def batches_per_epoch(self) -> int:
        cfg = self.cfg
        return epoch_batches(self.data.n_train, cfg.batch_size, cfg.min_steps_per_epoch, getattr(cfg, "accum_steps", 1))

    @property
    def early_stopping(self) -> bool:
        return self.select_best and self.data.early_stopping

    def _build_validation(self) -> None:
        d = self.data
        if d.val_x is not None:
            self.val_x, self.val_y, self.val_domain = d.val_x, d.val_y, d.val_domain
            self.val_machine, self.val_section = d.val_machine, d.val_section
        elif d.heldout_normals is not None:
            self._heldout_validation()

    def _heldout_validation(self) -> None:
        """Held-out normals against pseudo outliers: only a trainer that makes pseudo outliers has them."""

    def validate(self) -> dict:
        if self.val_x is None:
            return {}
        scores = self.score(self.val_x, self.val_machine)
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError(f"non-finite validation scores at epoch {self.epoch}")
        out = {"val_auc": float(validation_auc(scores, self.val_y))}
        if self.val_domain is None:  # held-out normals vs pseudo outliers
            out["val_score"] = out["val_auc"]
            return out
        report = evaluate_scores(pd.DataFrame({
            "machine": self.val_machine, "section": self.val_section, "label": self.val_y,
            "domain": np.where(self.val_domain == 0, "source", "target"), "score": scores}))
        out["val_score"] = float(report.official_score)
        for key, label in (("auc_source", "AUC (source)"), ("auc_target", "AUC (target)"), ("pauc", "pAUC")):
            out[f"val_{key}"] = float(report.summary.loc[label, "hmean"])
        diag = report.diagnostics().loc["all"]
        out.update({f"val_{k}": float(v) for k, v in diag.items()})
        return out

    def step(self) -> dict:
        """Train one epoch, validate, update model selection; returns the epoch's metrics."""
        metrics = {"epoch": self.epoch + 1, **self._train_epoch()}
        self.epoch += 1
        metrics.update(self.validate())
        score = metrics.get("val_score", math.nan)
        if not self.early_stopping:
            self.best_epoch, self.best_score = self.epoch, score
            self.best_state = None  # the current (last) state is the selected one
        elif score > self.best_score:
            self.best_score, self.best_epoch = score, self.epoch
            self.best_state = self._model_state()
        metrics["best_val_score"] = self.best_score
        metrics["epochs_since_best"] = self.epoch - self.best_epoch
        stop_early = self.early_stopping and self.epoch - self.best_epoch >= self.cfg.patience
        metrics["done"] = bool(self.epoch >= self.cfg.max_epochs or stop_early or self.training_independent)
        self.history.append(metrics)
        return metrics

    def use_best(self) -> None:
        """Load the model state of the selected epoch (the last one with a fixed budget)."""
        if self.best_state is not None:
            self._load_model_state(self.best_state)

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "config": self.cfg.to_dict(),
            **self._model_state(),
            **self._extra_state(),
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "history": self.history,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"trainer state of kind {state.get('kind')!r} cannot resume a {self.kind!r} trainer")
        self._load_model_state(state)
        self._load_extra_state(state)
        self.epoch = int(state["epoch"])
        self.best_score = float(state.get("best_score", state.get("best_auc", -math.inf)))
        self.best_epoch = int(state["best_epoch"])
        self.best_state = state["best_state"]
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def _unique_training_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``train_base`` used by the balanced set, each once, with its domain id."""
        first: dict[int, int] = {}
        for pos, row in enumerate(self.data.train_index):
            first.setdefault(int(row), int(self.data.train_domain[pos]))
        rows = np.array(sorted(first), dtype=np.int64)
        return rows, np.array([first[r] for r in rows], dtype=np.int64)

    def _training_machines(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.data.base_machine)[rows]

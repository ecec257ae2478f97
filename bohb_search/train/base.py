"""What every trainer shares: device choice, autocast, shuffled batches, and the stage-2 base class.

Every trainer is budget-aware: ``step()`` runs exactly one epoch and returns that epoch's metrics,
and ``state_dict()`` / ``load_state_dict()`` capture the COMPLETE state — weights, optimizers, the
SVDD centre, epoch counter, early-stopping state, the shuffling/pseudo-outlier generator and the
global RNG used by dropout — so that 3 epochs + restore + 3 epochs equals 6 epochs bit for bit on CPU.
The CLI's ``pretrain``/``finetune``, the Ray Tune trainable and ``final-train`` all drive these objects.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext

import numpy as np
import torch

from data.datasets import FinetuneData

from ..evaluate.metrics import section_metrics, validation_auc
from .configs import FinetuneConfig
from .pseudo_outliers import PseudoOutlierConfig, make_pseudo_outliers


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


def batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size].numpy()


def pseudo_outlier_config(cfg: FinetuneConfig, feature_cfg) -> PseudoOutlierConfig:
    """pOE settings of a run, with the mel geometry of the features the outliers are made from."""
    return PseudoOutlierConfig(
        ratio=cfg.poe_ratio, other_machine_share=cfg.other_machine_share,
        sample_rate=feature_cfg.audio.sample_rate, n_fft=feature_cfg.n_fft, hop_length=feature_cfg.hop_length,
        f_min=feature_cfg.f_min, f_max=feature_cfg.f_max or feature_cfg.audio.sample_rate / 2,
        **({"kinds": cfg.perturbations} if cfg.perturbations else {}))


class AnomalyTrainer:
    """Epoch counter, validation set, early stopping and RNG bookkeeping shared by both stage-2 trainers.

    Subclasses implement ``_train_epoch() -> dict``, ``score(features)``, ``_model_state()`` /
    ``_load_model_state()`` and ``_extra_state()`` / ``_load_extra_state()``.
    """

    kind = "abstract"

    def __init__(self, cfg: FinetuneConfig, data: FinetuneData, device):
        self.cfg = cfg
        self.data = data
        self.device = resolve_device(device) if isinstance(device, str) else device
        torch.manual_seed(cfg.seed)  # weight initialisation is part of the seeded run
        self.generator = torch.Generator().manual_seed(cfg.seed)  # batch order + pseudo outliers
        self.poe_cfg = pseudo_outlier_config(cfg, data.feature_cfg)
        self.pool = (torch.from_numpy(data.outlier_pool.astype(np.float32))
                     if data.outlier_pool is not None and len(data.outlier_pool) else None)
        self.epoch = 0
        self.best_auc = -math.inf
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.history: list[dict] = []
        self._build_validation()

    def _build_validation(self) -> None:
        d = self.data
        if d.val_x is not None:
            self.val_x, self.val_y, self.val_domain = d.val_x, d.val_y, d.val_domain
            return
        # held-out normals vs pseudo outliers made from them with a FIXED generator, so every epoch
        # (and every trial of a search) is validated on the same clips
        normals = torch.from_numpy(d.heldout_normals.astype(np.float32))
        outliers, _ = make_pseudo_outliers(normals, torch.Generator().manual_seed(10_007),
                                           dataclasses.replace(self.poe_cfg, ratio=1.0), self.pool)
        self.val_x = np.concatenate([normals.numpy(), outliers.numpy()]).astype(np.float16)
        self.val_y = np.concatenate([np.zeros(len(normals)), np.ones(len(outliers))]).astype(np.int64)
        self.val_domain = None

    def validate(self) -> dict:
        scores = self.score(self.val_x)
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError(f"non-finite validation scores at epoch {self.epoch}")
        out = {"val_auc": float(validation_auc(scores, self.val_y))}
        if self.val_domain is not None:
            parts = section_metrics(scores, self.val_y, np.where(self.val_domain == 0, "source", "target"))
            out.update({f"val_{k}": float(parts[k]) for k in ("auc_source", "auc_target", "pauc")})
        return out

    def step(self) -> dict:
        """Train one epoch, validate, update early stopping; returns the epoch's metrics."""
        metrics = {"epoch": self.epoch + 1, **self._train_epoch()}
        self.epoch += 1
        metrics.update(self.validate())
        if metrics["val_auc"] > self.best_auc:
            self.best_auc, self.best_epoch = metrics["val_auc"], self.epoch
            self.best_state = self._model_state()
        metrics["best_val_auc"] = self.best_auc
        metrics["epochs_since_best"] = self.epoch - self.best_epoch
        metrics["done"] = bool(self.epoch >= self.cfg.max_epochs
                               or self.epoch - self.best_epoch >= self.cfg.patience)
        self.history.append(metrics)
        return metrics

    def use_best(self) -> None:
        """Load the model state of the best validation epoch (after early stopping)."""
        if self.best_state is not None:
            self._load_model_state(self.best_state)

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "config": self.cfg.to_dict(),
            **self._model_state(),
            **self._extra_state(),
            "epoch": self.epoch,
            "best_auc": self.best_auc,
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
        self.best_auc = float(state["best_auc"])
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

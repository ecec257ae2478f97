"""Stage 1: supervised pre-training of the encoder on machine types (paper 2.4, eq. 7)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from data.datasets import PretrainData, to_tensor
from models import ClassificationHead, EncoderConfig, build_encoder

from .base import autocast, batches, epoch_batches, resolve_device
from .configs import PretrainConfig, PseudoOutlierConfig
from .pseudo_outliers import make_pseudo_outliers


class PretrainTrainer:
    """Encoder + linear classification head trained with cross-entropy (eq. 7) over machine types.

    With ``perturbation_classes`` (and ``outliers``, the pseudo-outlier settings with the features' mel
    geometry) the classes grow by one per perturbation kind: ``perturbed_share`` of every micro-batch is
    replaced by perturbed copies (a click, a time warp, a notch, …), each labelled by its kind. Telling a clip
    with a two-frame click from a clean one cannot be done from a summary that averages time away, which a
    machine-type label alone never asks of the encoder (issue 25). Validation stays on clean clips."""

    def __init__(self, cfg: PretrainConfig, encoder_cfg: EncoderConfig, data: PretrainData,
                 device: str | torch.device = "auto", outliers: PseudoOutlierConfig | None = None):
        self.cfg = cfg
        self.data = data
        self.device = resolve_device(device) if isinstance(device, str) else device
        torch.manual_seed(cfg.seed)
        self.encoder_cfg = encoder_cfg
        if cfg.perturbation_classes and outliers is None:
            raise ValueError("pretrain perturbation_classes needs the pseudo-outlier settings (outliers=)")
        self.outliers = dataclasses.replace(outliers, ratio=1.0, other_machine_share=0.0) if outliers else None
        self.kinds = list(self.outliers.kinds) if cfg.perturbation_classes else []
        self.classes = list(data.classes) + [f"perturbed/{k}" for k in self.kinds]
        self.encoder = build_encoder(encoder_cfg).to(self.device)
        self.head = ClassificationHead(encoder_cfg.pooled_dim, len(self.classes)).to(self.device)
        self.optimizer = torch.optim.AdamW(
            list(self.encoder.parameters()) + list(self.head.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.epoch = 0
        self.history: list[dict] = []

    def step(self) -> dict:
        cfg = self.cfg
        self.encoder.train()
        self.head.train()
        n = len(self.data.train_y)
        total, correct, seen = 0.0, 0, 0
        for idx in batches(n, cfg.batch_size, self.generator, epoch_batches(n, cfg.batch_size, cfg.min_steps_per_epoch)):
            self.optimizer.zero_grad(set_to_none=True)
            for mstart in range(0, len(idx), cfg.micro_batch_size):
                mi = idx[mstart : mstart + cfg.micro_batch_size]
                x, y = self._micro_batch(mi)
                with autocast(self.device, cfg.amp):
                    logits = self.head(self.encoder(x).pooled)
                    loss = F.cross_entropy(logits.float(), y)
                (loss * len(mi) / len(idx)).backward()
                total += loss.item() * len(mi)
                correct += int((logits.argmax(-1) == y).sum())
                seen += len(mi)
            if not math.isfinite(total):
                raise FloatingPointError(f"non-finite pre-training loss at epoch {self.epoch + 1}")
            self.optimizer.step()
        self.epoch += 1
        metrics = {"epoch": self.epoch, "train_loss": total / max(seen, 1), "train_accuracy": correct / max(seen, 1)}
        metrics.update(self.validate())
        self.history.append(metrics)
        return metrics

    def _micro_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, F, T) inputs and labels; with perturbation classes the first ``perturbed_share`` of the rows
        (the batch order is already random) become perturbed copies labelled by their kind."""
        x = torch.from_numpy(self.data.train_x[rows].astype(np.float32))
        y = torch.from_numpy(self.data.train_y[rows].astype(np.int64))
        n = int(round(self.cfg.perturbed_share * len(rows))) if self.kinds else 0
        if n:
            perturbed, kinds = make_pseudo_outliers(x[:n], self.generator, self.outliers)
            x[:n] = perturbed
            y[:n] = torch.tensor([len(self.data.classes) + self.kinds.index(k) for k in kinds])
        return x.unsqueeze(1).to(self.device), y.to(self.device)

    @torch.no_grad()
    def validate(self) -> dict:
        if len(self.data.val_y) == 0:
            return {}
        self.encoder.eval()
        self.head.eval()
        probs = []
        for start in range(0, len(self.data.val_y), self.cfg.micro_batch_size):
            x = to_tensor(self.data.val_x[start : start + self.cfg.micro_batch_size], self.device)
            with autocast(self.device, self.cfg.amp):
                probs.append(torch.softmax(self.head(self.encoder(x).pooled).float(), -1).cpu())
        p = torch.cat(probs).numpy()
        y = self.data.val_y
        p = p[:, : len(self.data.classes)]  # clean clips: the perturbation classes are never the answer
        onehot = np.eye(len(self.data.classes))[y]
        present = onehot.sum(0) > 0  # mAP over the classes that have validation clips
        val_map = float(average_precision_score(onehot[:, present], p[:, present], average="macro"))
        return {"val_accuracy": float((p.argmax(1) == y).mean()), "val_map": val_map}

    def state_dict(self) -> dict:
        return {
            "kind": "pretrain",
            "config": self.cfg.to_dict(),
            "encoder_config": self.encoder_cfg.to_dict(),
            "classes": list(self.classes),
            "encoder": self.encoder.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

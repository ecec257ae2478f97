"""The only training loops: stage 1 pre-training and stage 2 pOE + GRL fine-tuning (paper 2.4, 2.5, 3.2).

Both trainers are budget-aware: ``step()`` runs exactly one epoch and returns that epoch's metrics,
and ``state_dict()`` / ``load_state_dict()`` capture the COMPLETE state — weights, optimizers, the
SVDD centre, epoch counter, early-stopping state, the shuffling/pseudo-outlier generator and the
global RNG used by dropout — so that 3 epochs + restore + 3 epochs equals 6 epochs bit for bit on CPU.
The CLI's ``pretrain``/``finetune``, the Ray Tune trainable and ``final-train`` all drive these objects.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from models import (
    AEConfig,
    AnomalyHead,
    ClassificationHead,
    DCASEAutoencoder,
    DomainClassifier,
    EncoderConfig,
    MahalanobisModel,
    build_encoder,
    fit_mahalanobis,
    frame_context_vectors,
    grad_reverse,
    load_weights,
    mahalanobis_scores,
    mse_scores,
    reconstruction_errors,
)

from .configs import FinetuneConfig, PretrainConfig
from .datasets import FinetuneData, PretrainData, to_tensor
from .losses import (
    cosine_anomaly_score,
    domain_adversarial_loss,
    init_center,
    knn_cosine_score,
    poe_loss_terms,
    update_center,
)
from .metrics import section_metrics, validation_auc
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


def _autocast(device: torch.device, enabled: bool):
    # bfloat16 autocast on CUDA only: CPU autocast is slower than float32 on most CPUs
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def _batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size].numpy()


# =================================================================================================
# Stage 1 — supervised pre-training


class PretrainTrainer:
    """Encoder + linear classification head trained with cross-entropy (eq. 7) over machine types."""

    def __init__(self, cfg: PretrainConfig, encoder_cfg: EncoderConfig, data: PretrainData,
                 device: str | torch.device = "auto"):
        self.cfg = cfg
        self.data = data
        self.device = resolve_device(device) if isinstance(device, str) else device
        torch.manual_seed(cfg.seed)
        self.encoder_cfg = encoder_cfg
        self.encoder = build_encoder(encoder_cfg).to(self.device)
        self.head = ClassificationHead(encoder_cfg.dim, len(data.classes)).to(self.device)
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
        for idx in _batches(n, cfg.batch_size, self.generator):
            self.optimizer.zero_grad(set_to_none=True)
            for mstart in range(0, len(idx), cfg.micro_batch_size):
                mi = idx[mstart : mstart + cfg.micro_batch_size]
                x = to_tensor(self.data.train_x[mi], self.device)
                y = torch.from_numpy(self.data.train_y[mi]).to(self.device)
                with _autocast(self.device, cfg.amp):
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

    @torch.no_grad()
    def validate(self) -> dict:
        if len(self.data.val_y) == 0:
            return {}
        self.encoder.eval()
        self.head.eval()
        probs = []
        for start in range(0, len(self.data.val_y), self.cfg.micro_batch_size):
            x = to_tensor(self.data.val_x[start : start + self.cfg.micro_batch_size], self.device)
            with _autocast(self.device, self.cfg.amp):
                probs.append(torch.softmax(self.head(self.encoder(x).pooled).float(), -1).cpu())
        p = torch.cat(probs).numpy()
        y = self.data.val_y
        onehot = np.eye(len(self.data.classes))[y]
        present = onehot.sum(0) > 0  # mAP over the classes that have validation clips
        val_map = float(average_precision_score(onehot[:, present], p[:, present], average="macro"))
        return {"val_accuracy": float((p.argmax(1) == y).mean()), "val_map": val_map}

    def state_dict(self) -> dict:
        return {
            "kind": "pretrain",
            "config": self.cfg.to_dict(),
            "encoder_config": self.encoder_cfg.to_dict(),
            "classes": list(self.data.classes),
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


# =================================================================================================
# Stage 2 — shared machinery of the budget-aware anomaly trainers


def default_head_layers(depth: int) -> list[int]:
    """Up to three intermediate blocks just before the last one (the last one is the global feature)."""
    return list(range(max(0, depth - 4), depth - 1)) or [depth - 1]


def pseudo_outlier_config(cfg: FinetuneConfig, feature_cfg) -> PseudoOutlierConfig:
    """pOE settings of a run, with the mel geometry of the features the outliers are made from."""
    return PseudoOutlierConfig(
        ratio=cfg.poe_ratio, other_machine_share=cfg.other_machine_share,
        sample_rate=feature_cfg.audio.sample_rate, n_fft=feature_cfg.n_fft, hop_length=feature_cfg.hop_length,
        f_min=feature_cfg.f_min, f_max=feature_cfg.f_max or feature_cfg.audio.sample_rate / 2,
        **({"kinds": cfg.perturbations} if cfg.perturbations else {}))


class _AnomalyTrainer:
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


# =================================================================================================
# Stage 2 — fine-tuning with pOE + GRL


class FinetuneTrainer(_AnomalyTrainer):
    """θ_f (last K blocks + anomaly head) on L_oe + λ_adv·L_adv; θ_D on CE of detached embeddings."""

    kind = "finetune"

    def __init__(self, cfg: FinetuneConfig, encoder_cfg: EncoderConfig, data: FinetuneData,
                 encoder_state: dict | None = None, device: str | torch.device = "auto"):
        super().__init__(cfg, data, device)
        self.encoder_cfg = encoder_cfg
        self.encoder = build_encoder(encoder_cfg).to(self.device)
        if encoder_state is not None:
            load_weights(self.encoder, encoder_state, "pre-trained encoder weights")
        depth = len(self.encoder.blocks)
        if cfg.unfreeze_k > depth:
            raise ValueError(f"finetune unfreeze_k={cfg.unfreeze_k} exceeds the encoder depth {depth}")
        layers = list(cfg.head_layers) or default_head_layers(depth)
        bad = [i for i in layers if not 0 <= i < depth]
        if bad:
            raise ValueError(f"finetune head_layers {bad} outside 0..{depth - 1}")
        self.head_layers = layers
        self.head = AnomalyHead(encoder_cfg.dim, layers, cfg.emb_dim, cfg.head_hidden, cfg.head_dropout).to(self.device)
        self.domain_clf = DomainClassifier(cfg.emb_dim, cfg.domain_hidden, 2).to(self.device)
        self._freeze(depth - cfg.unfreeze_k)
        self.opt_f = torch.optim.AdamW(self.feature_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.opt_d = torch.optim.AdamW(self.domain_clf.parameters(), lr=cfg.domain_lr, weight_decay=cfg.domain_weight_decay)
        self.center: torch.Tensor | None = None

    # ---- parameters -----------------------------------------------------------------------------
    def _freeze(self, n_frozen_blocks: int) -> None:
        """Freeze the tokenizer and the first ``n_frozen_blocks`` blocks; keep the last K trainable."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        for block in list(self.encoder.blocks)[n_frozen_blocks:]:
            for p in block.parameters():
                p.requires_grad_(True)
        if n_frozen_blocks < len(self.encoder.blocks):  # the final norm belongs to the trained top
            for p in self.encoder.norm.parameters():
                p.requires_grad_(True)

    def feature_parameters(self) -> list[torch.nn.Parameter]:
        """θ_f: the unfrozen encoder blocks and the anomaly head."""
        return [p for p in self.encoder.parameters() if p.requires_grad] + list(self.head.parameters())

    def _set_train(self, training: bool) -> None:
        self.encoder.train(training)
        self.head.train(training)
        self.domain_clf.train(training)

    # ---- one epoch ------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(self.device, self.cfg.amp):
            out = self.encoder(x)
            z = self.head(out.pooled, out.layers)
        return z.float()

    def feature_loss(self, x: torch.Tensor, is_outlier: torch.Tensor,
                     domains: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """L_total = L_oe (eq. 9) + λ_adv·L_adv (eq. 10, through the GRL) on one batch → (loss, logs, z)."""
        z = self._forward(x)
        if not torch.isfinite(z).all():
            raise FloatingPointError(f"non-finite embeddings at epoch {self.epoch + 1} (diverged, or NaN input)")
        z_normal = z[~is_outlier]
        if self.center is None:
            self.center = init_center(z_normal.detach())
        parts = poe_loss_terms(z, is_outlier, self.center, self.cfg.delta)
        loss = parts.total
        logs = {"loss_oe": parts.total.item(), "loss_normal": parts.normal_term.item(),
                "loss_outlier": parts.outlier_term.item()}
        if self.cfg.lambda_adv > 0:
            adv = domain_adversarial_loss(self.domain_clf(grad_reverse(z_normal, 1.0)), domains)
            loss = loss + self.cfg.lambda_adv * adv
            logs["loss_adv"] = adv.item()
        return loss, logs, z

    def domain_step(self, z_normal: torch.Tensor, domains: torch.Tensor) -> dict:
        """θ_D update on CE(D(detach(z)), d): the feature extractor receives no gradient from it."""
        self.opt_d.zero_grad(set_to_none=True)
        logits = self.domain_clf(z_normal.detach())
        loss = domain_adversarial_loss(logits, domains)
        loss.backward()
        self.opt_d.step()
        return {"domain_loss": loss.item(), "domain_acc": (logits.argmax(-1) == domains).float().mean().item()}

    def _train_epoch(self) -> dict:
        cfg = self.cfg
        self._set_train(True)
        sums: dict[str, float] = {}
        self.opt_f.zero_grad(set_to_none=True)
        batch_ids = list(_batches(self.data.n_train, cfg.batch_size, self.generator))
        for b, idx in enumerate(batch_ids):
            normals = torch.from_numpy(self.data.train_base[self.data.train_index[idx]].astype(np.float32))
            domains = torch.from_numpy(self.data.train_domain[idx]).to(self.device)
            if cfg.poe_ratio > 0:
                outliers, _ = make_pseudo_outliers(normals, self.generator, self.poe_cfg, self.pool)
                x = torch.cat([normals, outliers])
            else:
                x = normals
            is_outlier = torch.arange(len(x)) >= len(normals)
            x, is_outlier = x.unsqueeze(1).to(self.device), is_outlier.to(self.device)

            loss, logs, z = self.feature_loss(x, is_outlier, domains)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite fine-tuning loss at epoch {self.epoch + 1}, batch {b + 1}")
            (loss / cfg.accum_steps).backward()
            if (b + 1) % cfg.accum_steps == 0 or b + 1 == len(batch_ids):
                torch.nn.utils.clip_grad_norm_(self.feature_parameters(), cfg.grad_clip)
                self.opt_f.step()
                self.opt_f.zero_grad(set_to_none=True)
            z_normal = z[~is_outlier].detach()
            if cfg.lambda_adv > 0:
                logs.update(self.domain_step(z_normal, domains))
            self.center = update_center(self.center, z_normal, cfg.center_momentum)
            logs["loss_total"] = loss.item()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        return {k: v / max(len(batch_ids), 1) for k, v in sums.items()}

    # ---- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, features: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        self._set_train(False)
        bs = batch_size or self.cfg.batch_size
        out = [self._forward(to_tensor(features[i : i + bs], self.device)).cpu() for i in range(0, len(features), bs)]
        return torch.cat(out) if out else torch.zeros(0, self.cfg.emb_dim)

    def knn_bank(self) -> dict[str, torch.Tensor]:
        """Embeddings of the unique training normals, per domain (the k-NN score's reference set)."""
        rows, dom = self._unique_training_rows()
        z = self.embed(self.data.train_base[rows])
        return {name: z[dom == i] for name, i in (("source", 0), ("target", 1)) if (dom == i).any()}

    @torch.no_grad()
    def score(self, features: np.ndarray, bank: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        z = self.embed(features)
        if self.cfg.score == "knn":
            return knn_cosine_score(z, bank if bank is not None else self.knn_bank(), k=self.cfg.knn_k).numpy()
        return cosine_anomaly_score(z, self.center.cpu()).numpy()

    # ---- state ------------------------------------------------------------------------------------
    def _model_state(self) -> dict:
        return {
            "encoder": copy.deepcopy(self.encoder.state_dict()),
            "head": copy.deepcopy(self.head.state_dict()),
            "center": None if self.center is None else self.center.detach().clone(),
        }

    def _load_model_state(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.center = None if state["center"] is None else state["center"].to(self.device)

    def _extra_state(self) -> dict:
        return {"encoder_config": self.encoder_cfg.to_dict(), "head_layers": self.head_layers,
                "domain_clf": self.domain_clf.state_dict(), "opt_f": self.opt_f.state_dict(),
                "opt_d": self.opt_d.state_dict()}

    def _load_extra_state(self, state: dict) -> None:
        self.domain_clf.load_state_dict(state["domain_clf"])
        self.opt_f.load_state_dict(state["opt_f"])
        self.opt_d.load_state_dict(state["opt_d"])

    def export(self) -> dict:
        """Weights and settings needed to score clips (see ``inference.AnomalyModel``)."""
        return {
            "model_kind": self.encoder_cfg.kind,
            "encoder_config": self.encoder_cfg.to_dict(),
            "encoder": self.encoder.state_dict(),
            "head_config": {"layers": list(self.head_layers), "emb_dim": self.cfg.emb_dim,
                            "hidden": self.cfg.head_hidden, "dropout": self.cfg.head_dropout},
            "head": self.head.state_dict(),
            "center": self.center.detach().cpu().clone(),
            "score": self.cfg.score,
            "knn_k": self.cfg.knn_k,
            "knn_bank": {k: v.clone() for k, v in self.knn_bank().items()},
            "finetune_config": self.cfg.to_dict(),
        }


# =================================================================================================
# The DCASE autoencoder baseline through the same interface


class AETrainer(_AnomalyTrainer):
    """Trains the DCASE 2025 AE baseline on frame-context vectors of the normal training clips.

    Each epoch visits every clip of the balanced set once and reconstructs ``ae_vectors_per_clip``
    randomly placed 5-frame windows of it (all ~1,000 windows of every clip would be ~2.6 GB per
    machine in float32). Validation and scoring use every window of a clip. Uses ``lr``,
    ``weight_decay``, ``batch_size``, ``max_epochs``, ``patience`` and ``ae_score`` of the config.
    """

    kind = "ae"

    def __init__(self, cfg: FinetuneConfig, data: FinetuneData, device: str | torch.device = "auto",
                 ae_cfg: AEConfig | None = None):
        super().__init__(cfg, data, device)
        self.ae_cfg = ae_cfg or AEConfig(n_mels=data.feature_cfg.n_mels)
        self.ae = DCASEAutoencoder(self.ae_cfg).to(self.device)
        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.mahalanobis: MahalanobisModel | None = None

    def _train_epoch(self) -> dict:
        cfg = self.cfg
        self.ae.train()
        total, n = 0.0, 0
        for idx in _batches(self.data.n_train, cfg.batch_size, self.generator):
            x = to_tensor(self.data.train_base[self.data.train_index[idx]], self.device).squeeze(1)
            vecs = frame_context_vectors(x, self.ae_cfg.n_frames)  # (B, V, 640)
            pick = torch.randint(0, vecs.shape[1], (len(idx), cfg.ae_vectors_per_clip), generator=self.generator)
            sample = torch.gather(vecs, 1, pick.to(self.device)[..., None].expand(-1, -1, vecs.shape[-1]))
            flat = sample.reshape(-1, vecs.shape[-1])
            loss = F.mse_loss(self.ae(flat), flat)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite AE loss at epoch {self.epoch + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(idx)
            n += len(idx)
        if self.cfg.ae_score == "mahalanobis":
            self.mahalanobis = self.fit_mahalanobis()
        return {"loss_total": total / max(n, 1)}

    @torch.no_grad()
    def errors(self, features: np.ndarray, batch_size: int = 16) -> torch.Tensor:
        """Per-clip mean reconstruction-error vector (N, 640) — the input of the Mahalanobis score."""
        self.ae.eval()
        out = []
        for i in range(0, len(features), batch_size):
            x = to_tensor(features[i : i + batch_size], self.device).squeeze(1)
            out.append(reconstruction_errors(self.ae, x).cpu())
        return torch.cat(out)

    def fit_mahalanobis(self) -> MahalanobisModel:
        rows, dom = self._unique_training_rows()
        err = self.errors(self.data.train_base[rows])
        by_domain = {name: err[dom == i] for name, i in (("source", 0), ("target", 1)) if (dom == i).sum() >= 2}
        return fit_mahalanobis(by_domain, shrinkage=1e-3)

    @torch.no_grad()
    def score(self, features: np.ndarray) -> np.ndarray:
        err = self.errors(features)
        if self.cfg.ae_score == "mahalanobis":
            self.mahalanobis = self.mahalanobis or self.fit_mahalanobis()
            return mahalanobis_scores(err, self.mahalanobis).numpy()
        return mse_scores(err).numpy()

    def _model_state(self) -> dict:
        return {"ae": copy.deepcopy(self.ae.state_dict()),
                "mahalanobis": None if self.mahalanobis is None else self.mahalanobis.to_dict()}

    def _load_model_state(self, state: dict) -> None:
        self.ae.load_state_dict(state["ae"])
        m = state.get("mahalanobis")
        self.mahalanobis = None if m is None else MahalanobisModel.from_dict(m)

    def _extra_state(self) -> dict:
        return {"ae_config": self.ae_cfg.to_dict(), "optimizer": self.optimizer.state_dict()}

    def _load_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def export(self) -> dict:
        if self.cfg.ae_score == "mahalanobis" and self.mahalanobis is None:
            self.mahalanobis = self.fit_mahalanobis()
        return {
            "model_kind": "ae",
            "ae_config": self.ae_cfg.to_dict(),
            "ae": self.ae.state_dict(),
            "score": self.cfg.ae_score,
            "ae_stats": None if self.mahalanobis is None else self.mahalanobis.to_dict(),
            "finetune_config": self.cfg.to_dict(),
        }

"""Stage 2: fine-tuning with pOE + GRL (paper 2.5, eq. 8-11, 3.2)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from data.datasets import FinetuneData, to_tensor
from models import AnomalyHead, DomainClassifier, EncoderConfig, build_encoder, grad_reverse, load_weights

from ..scoring.banks import EmbeddingScorer
from ..scoring.config import ScoreConfig
from .base import AnomalyTrainer, autocast
from .configs import FinetuneConfig, PseudoOutlierConfig
from .losses import combined_objective, domain_adversarial_loss, init_center, poe_loss_terms, update_center
from .pseudo_outliers import make_pseudo_outliers

HELDOUT_OUTLIER_SEED = 10_007  # the held-out validation's pseudo outliers: the same clips every epoch and trial


def pseudo_outlier_config(cfg: FinetuneConfig, feature_cfg) -> PseudoOutlierConfig:
    """pOE settings of a run, with the mel geometry of the features the outliers are made from."""
    return PseudoOutlierConfig(
        ratio=cfg.poe_ratio, other_machine_share=cfg.other_machine_share,
        sample_rate=feature_cfg.audio.sample_rate, n_fft=feature_cfg.n_fft, hop_length=feature_cfg.hop_length,
        f_min=feature_cfg.f_min, f_max=feature_cfg.f_max or feature_cfg.audio.sample_rate / 2,
        **({"kinds": cfg.perturbations} if cfg.perturbations else {}))


def default_head_layers(depth: int) -> list[int]:
    """Up to three intermediate blocks just before the last one (the last one is the global feature)."""
    return list(range(max(0, depth - 4), depth - 1)) or [depth - 1]


class FinetuneTrainer(AnomalyTrainer):
    """θ_f (last K blocks + anomaly head) on L_oe + λ_adv·L_adv; θ_D on CE of detached embeddings."""

    kind = "finetune"

    def __init__(self, cfg: FinetuneConfig, encoder_cfg: EncoderConfig, data: FinetuneData,
                 encoder_state: dict | None = None, device: str | torch.device = "auto"):
        super().__init__(cfg, data, device)
        self.poe_cfg = pseudo_outlier_config(cfg, data.feature_cfg)
        self.pool = (torch.from_numpy(data.outlier_pool.astype(np.float32))
                     if data.outlier_pool is not None and len(data.outlier_pool) else None)
        # the gradient reversal needs two domains to adapt between; with one it would only add noise
        self.grl_active = cfg.lambda_adv > 0 and len(np.unique(data.train_domain)) >= 2
        self.notes = [] if self.grl_active or cfg.lambda_adv == 0 else [
            f"lambda_adv {cfg.lambda_adv:g} -> 0: the training data has one domain, so there is nothing to adapt"]
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
        self.head = AnomalyHead(encoder_cfg.pooled_dim, layers, cfg.emb_dim, cfg.head_hidden, cfg.head_dropout).to(self.device)
        self.domain_clf = DomainClassifier(cfg.emb_dim, cfg.domain_hidden, 2).to(self.device)
        self._freeze(depth - cfg.unfreeze_k)
        self.opt_f = torch.optim.AdamW(self.feature_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.opt_d = torch.optim.AdamW(self.domain_clf.parameters(), lr=cfg.domain_lr, weight_decay=cfg.domain_weight_decay)
        self.center: torch.Tensor | None = None
        self._build_validation()

    @property
    def lambda_adv(self) -> float:
        """λ_adv in effect: 0 when the training data has a single domain."""
        return self.cfg.lambda_adv if self.grl_active else 0.0

    def _heldout_validation(self) -> None:
        # held-out normals vs pseudo outliers made from them with a FIXED generator, so every epoch
        # (and every trial of a search) is validated on the same clips; made machine by machine so
        # every pseudo outlier is scored against the banks of the machine it was made from
        d = self.data
        gen = torch.Generator().manual_seed(HELDOUT_OUTLIER_SEED)
        xs, ys, machines = [], [], []
        for machine in sorted(set(d.heldout_machine)):
            normals = torch.from_numpy(d.heldout_normals[d.heldout_machine == machine].astype(np.float32))
            outliers, _ = make_pseudo_outliers(normals, gen, dataclasses.replace(self.poe_cfg, ratio=1.0), self.pool)
            xs += [normals.numpy(), outliers.numpy()]
            ys += [np.zeros(len(normals)), np.ones(len(outliers))]
            machines += [machine] * (len(normals) + len(outliers))
        self.val_x = np.concatenate(xs).astype(np.float16)
        self.val_y = np.concatenate(ys).astype(np.int64)
        self.val_machine = np.array(machines, dtype=object)

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
        with autocast(self.device, self.cfg.amp):
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
        if self.lambda_adv > 0:
            adv = domain_adversarial_loss(self.domain_clf(grad_reverse(z_normal, 1.0)), domains)
            loss = combined_objective(parts.total, adv, self.lambda_adv)
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
        batch_ids = self._epoch_batch_ids()
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
            if self.lambda_adv > 0:
                logs.update(self.domain_step(z_normal, domains))
            self.center = update_center(self.center, z_normal, cfg.center_momentum)
            logs["loss_total"] = loss.item()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        out = {k: v / max(len(batch_ids), 1) for k, v in sums.items()}
        out["optimizer_steps"] = -(-len(batch_ids) // cfg.accum_steps)
        return out

    # ---- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, features: np.ndarray, batch_size: int | None = None, embedding: str = "head") -> torch.Tensor:
        """Head embeddings, or (``embedding="patch_stats"``) the tokenizer's patch statistics, of log-mel clips."""
        self._set_train(False)
        bs = batch_size or self.cfg.batch_size
        if embedding == "patch_stats":
            forward = lambda x: self.encoder.patch_statistics(x).float()  # noqa: E731
        else:
            forward = self._forward
        out = [forward(to_tensor(features[i : i + bs], self.device)).cpu() for i in range(0, len(features), bs)]
        return torch.cat(out) if out else torch.zeros(0, self.cfg.emb_dim)

    def training_embeddings(self, embedding: str = "head") -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Embeddings of the unique training normals with their domains (0/1) and machines: the material
        every score is fitted on (never a validation or test clip)."""
        rows, dom = self._unique_training_rows()
        return self.embed(self.data.train_base[rows], embedding=embedding), dom, self._training_machines(rows)

    def scorer(self, score_cfg: ScoreConfig | None = None) -> EmbeddingScorer:
        """The configured score (or ``score_cfg``) fitted on the current training embeddings."""
        score_cfg = score_cfg or ScoreConfig.of(self.cfg)
        z, dom, machines = self.training_embeddings(score_cfg.embedding)
        center = self._center_or_mean(z) if score_cfg.embedding == "head" else None
        return EmbeddingScorer(score_cfg, center, seed=self.cfg.seed).fit(z, dom, machines)

    def _center_or_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The tracked centre, or, where none was ever tracked (the margin objective with every clip of
        every batch mixed or perturbed), the centre eq. 8 would start from: the normalised mean of the
        training embeddings, so the cosine score always exists."""
        return init_center(z).cpu() if self.center is None else self.center.detach().cpu()

    @torch.no_grad()
    def score(self, features: np.ndarray, machines=None) -> np.ndarray:
        score_cfg = ScoreConfig.of(self.cfg)
        return self.scorer(score_cfg).score(self.embed(features, embedding=score_cfg.embedding), machines).numpy()

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
        """Weights, settings and the training embeddings every score is fitted on (see ``scoring.model``)."""
        z, dom, machines = self.training_embeddings()
        return {
            "model_kind": self.encoder_cfg.kind,
            "encoder_config": self.encoder_cfg.to_dict(),
            "encoder": self.encoder.state_dict(),
            "head_config": {"layers": list(self.head_layers), "emb_dim": self.cfg.emb_dim,
                            "hidden": self.cfg.head_hidden, "dropout": self.cfg.head_dropout},
            "head": self.head.state_dict(),
            "center": self._center_or_mean(z).clone(),
            "score_config": ScoreConfig.of(self.cfg).to_dict(),
            "train_embeddings": z.clone(),
            # what --embedding patch_stats is fitted on, so any saved model can be re-scored with it
            "train_patch_stats": self.training_embeddings("patch_stats")[0].clone(),
            "train_domains": [int(d) for d in dom],
            "train_machines": [str(m) for m in machines],
            "score_seed": int(self.cfg.seed),
            "finetune_config": self.cfg.to_dict(),
            "lambda_adv_effective": self.lambda_adv,
            "notes": list(self.notes),
        }

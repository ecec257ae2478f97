"""The discriminative fine-tuning objective (``objective: margin``): classify what is known about each
normal clip with an angular-margin loss, then score with k-NN over per-domain banks.

The strongest DCASE 2023-2025 systems train their embedding this way (Wilkinghoff & Kurth, TASLP 2024:
minimising an angular-margin classification loss also makes normal embeddings compact, without the
collapsed solution a compactness loss allows). Here, on the same encoder and anomaly head as the paper:

* **classes** — ``machine|section|attributes|domain`` of every training clip (the domain stays a class);
  a machine-specific model also learns the other machines' normals (the pool the pOE objective uses as
  outliers) as classes of their own; clips without attributes (DCASE 2020/2021 naming, synthetic clips
  without attribute files) are split into ``pseudo_classes`` k-means clusters of the *pre-trained*
  encoder's embeddings, per machine and domain; with ``perturbation_classes`` a clip perturbed in way
  j (the pOE log-mel perturbations) is class (its class, j), a self-supervised task in the spirit of
  feature/statistics exposure;
* **tokenizer** (``train_tokenizer``) — stage 2 otherwise leaves the tokenizer as pre-training made it,
  and with it the patch statistics the default score reads. With this setting its patch projection is
  trained too, through a second margin head on those statistics (:class:`~models.heads.PatchStatisticsMap`,
  the same classes and soft labels, un-mixed clips only); the blocks' task reads the tokens but does not
  move them (its gradient stops at the tokenizer), because the embedding the blocks learn is the one
  that discards the faults (BENCHMARKS.md "margin-statistics"; "tokenizer-objectives" measures the idea);
* **loss** — sub-cluster AdaCos or ArcFace (:mod:`models.margin`), soft labels, class weights
  (N / (C·n_c))^power so that the ~10 target clips' classes do not vanish;
* **mixup** — with probability ``mixup_prob`` a clip is mixed with another clip of the batch, in the
  power domain (10·log10 of the weighted sum of powers, as mixing the waveforms would), labels mixed
  with the same weight λ ~ U(0, 1).

The gradient-reversal domain classifier is not used (the domain is part of every class). A centre of
the normal embeddings is kept as the pOE objective keeps it, so the cosine score remains available.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from data.datasets import NO_ATTRIBUTES, FinetuneData, to_tensor
from models import ArcFace, EncoderConfig, PatchStatisticsMap, SubClusterAdaCos

from .configs import FinetuneConfig
from .finetune import FinetuneTrainer
from .losses import init_center, update_center
from .perturbations import PERTURBATIONS

_LN10_OVER_10 = math.log(10.0) / 10.0
PERTURBED_SHARE = 1 / 3  # with perturbation classes: share of a batch's own clips that are perturbed
HEADS = ("margin_head", "stats_map", "stats_head")  # the trainer's modules beside the encoder and anomaly head


def pseudo_class_labels(embeddings: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means cluster of each embedding, numbered by cluster size (largest first); at most one cluster
    per 5 clips, so a domain of 10 target clips gets at most 2."""
    k = max(1, min(n_clusters, len(embeddings) // 5))
    if k == 1:
        return np.zeros(len(embeddings), dtype=np.int64)
    from sklearn.cluster import KMeans

    z = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(z)
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    return np.argsort(order)[labels]


def power_mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """10·log10(λ·10^(a/10) + (1 − λ)·10^(b/10)) for log-mels in dB, computed stably; λ (B,) in (0, 1)."""
    lam = lam.clamp(1e-6, 1 - 1e-6).view(-1, *([1] * (a.dim() - 1)))
    return torch.logaddexp(a * _LN10_OVER_10 + lam.log(), b * _LN10_OVER_10 + (1 - lam).log()) / _LN10_OVER_10


class MarginTrainer(FinetuneTrainer):
    """The encoder's last K blocks and the anomaly head trained to classify clips (see the module text)."""

    kind = "margin"

    def __init__(self, cfg: FinetuneConfig, encoder_cfg: EncoderConfig, data: FinetuneData,
                 encoder_state: dict | None = None, device: str | torch.device = "auto"):
        super().__init__(cfg, encoder_cfg, data, encoder_state, device)
        self.grl_active = False
        self.notes = [f"lambda_adv {cfg.lambda_adv:g} is not used by the margin objective: the domain is part of "
                      "every class"] if cfg.lambda_adv > 0 else []
        base_keys = self._with_pseudo_classes(np.asarray(data.base_key, dtype=object))
        pool_keys = np.asarray(data.pool_key, dtype=object) if data.pool_key is not None and self.pool is not None \
            else np.zeros(0, dtype=object)
        if cfg.other_machine_share == 0:
            pool_keys = pool_keys[:0]
        self.kinds = tuple(self.poe_cfg.kinds) if cfg.perturbation_classes else ()
        own = sorted(set(base_keys))
        self.classes = own + sorted(set(pool_keys) - set(own)) + [f"{k}#{j}" for k in own for j in self.kinds]
        if len(self.classes) < 2:
            raise ValueError("the margin objective needs at least two classes: the machine's clips have a single "
                             "class and there are no other machines' clips (--pseudo-classes, --perturbation-classes)")
        index = {c: i for i, c in enumerate(self.classes)}
        self.base_label = torch.tensor([index[k] for k in base_keys])
        self.pool_label = torch.tensor([index[k] for k in pool_keys], dtype=torch.long)
        self.perturbed_label = {j: torch.tensor([index[f"{k}#{j}"] for k in base_keys]) for j in self.kinds}
        self.class_weight = self._class_weights()
        self.margin_head = self._new_margin_head(cfg.seed)
        self.stats_map: PatchStatisticsMap | None = None
        self.stats_head: torch.nn.Module | None = None
        if cfg.train_tokenizer:
            self._add_tokenizer_task()
        self.opt_f = torch.optim.AdamW(self.feature_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _new_margin_head(self, seed: int) -> torch.nn.Module:
        cfg, n = self.cfg, len(self.classes)
        if cfg.margin_loss == "arcface":
            head = ArcFace(cfg.emb_dim, n, cfg.arcface_margin, cfg.arcface_scale, seed=seed)
        else:
            head = SubClusterAdaCos(cfg.emb_dim, n, cfg.n_subclusters, cfg.adacos_dynamic, seed=seed)
        return head.to(self.device)

    def _add_tokenizer_task(self) -> None:
        """The statistics map and its own margin head (other centres: seed + 1), the patch projection made
        trainable, and the blocks cut off from it (a forward hook detaches the tokenizer's output)."""
        stats = self.embed(self.data.train_base, batch_size=32, embedding="patch_stats")
        self.stats_map = PatchStatisticsMap(stats.mean(0), stats.std(0), self.cfg.emb_dim,
                                            seed=self.cfg.seed + 1).to(self.device)
        self.stats_head = self._new_margin_head(self.cfg.seed + 1)
        for p in self.encoder.embed.proj.parameters():
            p.requires_grad_(True)
        self.encoder.embed.register_forward_hook(lambda module, inputs, tokens: tokens.detach())

    # ---- classes ------------------------------------------------------------------------------
    def _with_pseudo_classes(self, keys: np.ndarray) -> np.ndarray:
        """Clips without attributes: their attribute part becomes a k-means cluster of pre-trained embeddings."""
        parts = np.array([k.split("|") for k in keys], dtype=object).reshape(len(keys), 4)
        plain = parts[:, 2] == NO_ATTRIBUTES
        if not plain.any() or self.cfg.pseudo_classes <= 1:
            return keys
        with torch.no_grad():
            self.encoder.eval()
            feats = self.data.train_base
            pooled = torch.cat([self.encoder(to_tensor(feats[i : i + 32], self.device)).pooled.float().cpu()
                                for i in range(0, len(feats), 32)]).numpy()
        out = keys.copy()
        groups = {}
        for i in np.flatnonzero(plain):
            groups.setdefault((parts[i, 0], parts[i, 1], parts[i, 3]), []).append(i)
        for (machine, section, domain), rows in sorted(groups.items()):
            labels = pseudo_class_labels(pooled[rows], self.cfg.pseudo_classes, self.cfg.seed)
            for r, c in zip(rows, labels):
                out[r] = f"{machine}|{section}|pseudo{c}|{domain}"
        return out

    def _class_weights(self) -> torch.Tensor:
        """(N / (C·n_c))^power over the clips an epoch draws (the balanced set, the pool at its share,
        perturbed copies at theirs), clipped to [0.1, 10], mean 1 over those clips."""
        cfg = self.cfg
        n_own = np.bincount(self.base_label.numpy()[self.data.train_index], minlength=len(self.classes)).astype(float)
        counts = n_own.copy()
        if len(self.pool_label):
            share = cfg.other_machine_share * len(self.data.train_index) / len(self.pool_label)
            counts += share * np.bincount(self.pool_label.numpy(), minlength=len(self.classes))
        for labels in self.perturbed_label.values():
            counts += (PERTURBED_SHARE / len(self.kinds)) * np.bincount(
                labels.numpy()[self.data.train_index], minlength=len(self.classes))
        present = counts > 0
        w = np.ones(len(self.classes))
        w[present] = (counts[present].sum() / (present.sum() * counts[present])) ** cfg.class_weight_power
        w = np.clip(w, 0.1, 10.0)
        w = w / (np.sum(w * counts) / counts.sum())
        return torch.tensor(w, dtype=torch.float32)

    # ---- one epoch ----------------------------------------------------------------------------
    def feature_parameters(self) -> list[torch.nn.Parameter]:
        params = super().feature_parameters()
        for name in HEADS:  # absent while the base class is built
            module = getattr(self, name, None)
            params += [p for p in module.parameters() if p.requires_grad] if module is not None else []
        return params

    def _set_train(self, training: bool) -> None:
        super()._set_train(training)
        for name in HEADS:
            if getattr(self, name, None) is not None:
                getattr(self, name).train(training)

    def _batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-mels, soft labels, a mask of the un-mixed own clips (for the centre) and one of the mixed
        clips of one batch."""
        cfg, gen, n_cls = self.cfg, self.generator, len(self.classes)
        rows = self.data.train_index[idx]
        x = torch.from_numpy(self.data.train_base[rows].astype(np.float32))
        labels = self.base_label[rows].clone()
        if self.kinds:  # perturbed copies of some own clips are classes of their own
            pick = torch.rand(len(rows), generator=gen) < PERTURBED_SHARE
            kind_of = torch.randint(0, len(self.kinds), (len(rows),), generator=gen)
            for j, kind in enumerate(self.kinds):
                sel = (pick & (kind_of == j)).nonzero().flatten()
                if len(sel):
                    x[sel] = PERTURBATIONS[kind](x[sel], gen, self.poe_cfg)
                    labels[sel] = self.perturbed_label[kind][rows[sel.numpy()]]
        own = torch.ones(len(x), dtype=torch.bool)
        n_pool = int(round(cfg.other_machine_share * len(rows))) if len(self.pool_label) else 0
        if n_pool:
            p = torch.randint(0, len(self.pool_label), (n_pool,), generator=gen)
            x = torch.cat([x, self.pool[p]])
            labels = torch.cat([labels, self.pool_label[p]])
            own = torch.cat([own, torch.zeros(n_pool, dtype=torch.bool)])
        y = torch.nn.functional.one_hot(labels, n_cls).float()
        mixed = torch.rand(len(x), generator=gen) < cfg.mixup_prob
        if mixed.any():
            partner = torch.randperm(len(x), generator=gen)
            lam = torch.rand(len(x), generator=gen)
            lam = torch.where(mixed, lam, torch.ones_like(lam))
            x = torch.where(mixed.view(-1, 1, 1), power_mix(x, x[partner], lam), x)
            y = lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[partner]
        return x, y, own & ~mixed, mixed

    def _train_epoch(self) -> dict:
        cfg = self.cfg
        self._set_train(True)
        self.opt_f.zero_grad(set_to_none=True)
        batch_ids = self._epoch_batch_ids()
        total, total_tokenizer, correct, seen = 0.0, 0.0, 0.0, 0
        w = self.class_weight.to(self.device)
        for b, idx in enumerate(batch_ids):
            x, y, plain, mixed = self._batch(idx)
            x, y = x.unsqueeze(1).to(self.device), y.to(self.device)
            z = self._forward(x)
            if not torch.isfinite(z).all():
                raise FloatingPointError(f"non-finite embeddings at epoch {self.epoch + 1} (diverged, or NaN input)")
            logp = self.margin_head(z, y)
            loss = -(y * w * logp).sum(dim=1).mean()
            if self.stats_map is not None and not mixed.all():
                keep = ~mixed.to(self.device)
                logp_stats = self.stats_head(self.stats_map(self.encoder.patch_statistics(x[keep])), y[keep])
                loss_tokenizer = -(y[keep] * w * logp_stats).sum(dim=1).mean()
                loss = loss + loss_tokenizer
                total_tokenizer += loss_tokenizer.item()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite margin loss at epoch {self.epoch + 1}, batch {b + 1}")
            (loss / cfg.accum_steps).backward()
            if (b + 1) % cfg.accum_steps == 0 or b + 1 == len(batch_ids):
                torch.nn.utils.clip_grad_norm_(self.feature_parameters(), cfg.grad_clip)
                self.opt_f.step()
                self.opt_f.zero_grad(set_to_none=True)
            z_plain = z[plain.to(self.device)].detach()
            if len(z_plain):
                self.center = init_center(z_plain) if self.center is None else \
                    update_center(self.center, z_plain, cfg.center_momentum)
            total += loss.item()
            correct += float((logp.argmax(1) == y.argmax(1)).float().sum())
            seen += len(y)
        out = {"loss_total": total / max(len(batch_ids), 1), "train_accuracy": correct / max(seen, 1),
               "margin_scale": float(self.margin_head.scale) if hasattr(self.margin_head, "scale") else
               self.margin_head.s, "optimizer_steps": -(-len(batch_ids) // cfg.accum_steps)}
        if self.stats_map is not None:
            out["loss_tokenizer"] = total_tokenizer / max(len(batch_ids), 1)
        return out

    # ---- state --------------------------------------------------------------------------------
    def _model_state(self) -> dict:
        state = super()._model_state()
        for name in HEADS:
            module = getattr(self, name)
            if module is not None:
                state[name] = {k: v.clone() for k, v in module.state_dict().items()}
        return state

    def _load_model_state(self, state: dict) -> None:
        super()._load_model_state(state)
        for name in HEADS:
            module = getattr(self, name)
            if (module is None) != (name not in state):
                raise ValueError(f"the saved margin trainer was run with train_tokenizer {name in state}, "
                                 f"this one with {module is not None}")
            if module is not None:
                module.load_state_dict(state[name])

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "classes": list(self.classes)}

    def _load_extra_state(self, state: dict) -> None:
        if list(state.get("classes", [])) != list(self.classes):
            raise ValueError("the saved margin trainer was built on other classes (other data or settings)")
        super()._load_extra_state(state)

    def export(self) -> dict:
        return {**super().export(), "objective": "margin", "classes": list(self.classes)}

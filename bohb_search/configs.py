"""Typed run configurations of both training stages (no torch import: the CLI's --help reads them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal


def _from_dict(cls, d: dict):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}")
    return cls(**d)


@dataclass
class PretrainConfig:
    """Stage 1 settings (paper 3.2: AdamW lr 1e-4, weight decay 1e-2, batch 256, 5 epochs)."""

    lr: float = 1e-4
    weight_decay: float = 1e-2
    batch_size: int = 256  # effective batch; split into micro-batches when micro_batch_size is smaller
    micro_batch_size: int = 256  # gradient accumulation when memory is short
    epochs: int = 5
    target: Literal["machine", "machine_section_attr"] = "machine"  # classes: machine types, or type × section × attributes
    val_fraction: float = 0.1
    amp: bool = True  # bfloat16 autocast on CUDA
    seed: int = 0

    def __post_init__(self):
        for name in ("lr", "batch_size", "micro_batch_size", "epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"pretrain {name} must be > 0, got {getattr(self, name)}")
        if self.micro_batch_size > self.batch_size:
            self.micro_batch_size = self.batch_size

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FinetuneConfig:
    """Stage 2 settings. Defaults follow paper 3.2; the searched ones are marked (search)."""

    lr: float = 1e-4  # (search) AdamW lr of θ_f = last K blocks + anomaly head
    weight_decay: float = 1e-2  # (search)
    lambda_adv: float = 0.1  # (search) weight of L_adv in L_total (eq. 11); 0 = "pOE only"
    delta: float = 0.5  # (search) margin δ of eq. 9: outliers are pushed until cos(z, c) ≤ δ
    unfreeze_k: int = 2  # (search) number of final encoder blocks trained; the rest stay frozen
    head_dropout: float = 0.1  # (search) dropout p of eq. 6
    poe_ratio: float = 1.0  # (search) pseudo outliers per normal clip in a batch; 0 = OC-SVDD (no outliers)
    other_machine_share: float = 0.5  # fraction of outliers taken from other machine types (when available)
    perturbations: tuple[str, ...] = ()  # perturbation kinds; () = the pseudo-outlier module's defaults
    emb_dim: int = 128  # dimension D of the anomaly embedding z
    head_hidden: int = 256  # width of the head MLP's hidden layer
    head_layers: tuple[int, ...] = ()  # intermediate blocks fused by eq. 4; () = up to 3 blocks before the last
    batch_size: int = 256
    accum_steps: int = 2  # gradient accumulation over 2 steps (paper 3.2)
    grad_clip: float = 1.0  # max L2 norm of θ_f's gradient
    center_momentum: float = 0.99  # μ of eq. 8 (applied literally: c ← (1-μ)c + μ·mean(z_normal))
    domain_lr: float = 1e-4  # θ_D optimizer: fixed lr 1e-4, wd 1e-2 (paper 3.2)
    domain_weight_decay: float = 1e-2
    domain_hidden: int = 64
    max_epochs: int = 100
    patience: int = 15  # early stopping on validation AUC
    score: Literal["cosine", "knn"] = "cosine"  # anomaly score: 1 − cos(z, c), or k-NN cosine distance (min over domains)
    knn_k: int = 1
    ae_score: Literal["mse", "mahalanobis"] = "mse"  # AE baseline only: its two DCASE scoring modes
    ae_vectors_per_clip: int = 64  # AE baseline only: 5-frame windows reconstructed per clip and epoch
    amp: bool = True
    seed: int = 0

    def __post_init__(self):
        checks = {
            "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0, "lambda_adv": self.lambda_adv >= 0,
            "delta": -1 <= self.delta <= 1, "unfreeze_k": self.unfreeze_k >= 0,
            "head_dropout": 0 <= self.head_dropout < 1, "poe_ratio": self.poe_ratio >= 0,
            "other_machine_share": 0 <= self.other_machine_share <= 1, "batch_size": self.batch_size > 0,
            "accum_steps": self.accum_steps >= 1, "grad_clip": self.grad_clip > 0,
            "center_momentum": 0 < self.center_momentum <= 1, "max_epochs": self.max_epochs >= 1,
            "patience": self.patience >= 1, "knn_k": self.knn_k >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"finetune {name}: invalid value {getattr(self, name)!r}")
        if self.ae_score not in ("mse", "mahalanobis"):
            raise ValueError(f"finetune ae_score must be 'mse' or 'mahalanobis', got {self.ae_score!r}")
        if self.ae_vectors_per_clip < 1:
            raise ValueError(f"finetune ae_vectors_per_clip must be >= 1, got {self.ae_vectors_per_clip}")
        if self.score not in ("cosine", "knn"):
            raise ValueError(f"finetune score must be 'cosine' or 'knn', got {self.score!r}")
        self.perturbations = tuple(self.perturbations)
        self.head_layers = tuple(int(i) for i in self.head_layers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["perturbations"] = list(self.perturbations)
        d["head_layers"] = list(self.head_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        return _from_dict(cls, dict(d))

    @property
    def variant(self) -> str:
        """The ablation row this config is (paper Table 1)."""
        outliers = "pOE" if self.poe_ratio > 0 else "OC-SVDD"
        return f"{outliers} + GRL" if self.lambda_adv > 0 else f"{outliers} only"

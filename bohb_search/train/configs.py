"""Typed run configurations of both training stages, and the helpers every config class shares.

No torch import: the CLI builds its flags from these classes (name, type, default, and the help
text from each field's comment) and ``--help`` must answer instantly.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Literal

from data.config import check_fields

from ..scoring.config import ScoreConfig


def check_ranges(obj, what: str, ranges: dict[str, tuple]) -> None:
    """``ranges``: {field: (test, "the range in words")}; the first field whose value fails its test raises a
    one-line ValueError ``"<what> <field> must be <range>, got <value>"`` (the CLI names the flag or the file)."""
    for name, (test, words) in ranges.items():
        value = getattr(obj, name)
        if not test(value):
            raise ValueError(f"{what} {name} must be {words}, got {value!r}")


def strict_from_dict(cls, d: dict):
    """``cls(**d)`` that names unknown keys instead of raising a TypeError about ``__init__``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}")
    return cls(**d)


_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:[^=#]*(?:=[^#]*)?#\s*(.+?)\s*$")


def field_docs(cls) -> dict[str, str]:
    """{field name: the comment written after it in the class body}: the help text of its flag."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            m = _FIELD_LINE.match(line)
            if m:
                docs[m.group(1)] = m.group(2)
    return {f.name: docs.get(f.name, "") for f in fields(cls)}


def field_default(f):
    """The default value of a dataclass field (``MISSING`` when it has none)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


@dataclass
class PretrainConfig:
    """Stage 1 settings (paper 3.2: AdamW lr 1e-4, weight decay 1e-2, batch 256, 5 epochs)."""

    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 1e-2  # AdamW weight decay
    batch_size: int = 256  # effective batch; split into micro-batches when micro_batch_size is smaller
    micro_batch_size: int = 256  # gradient accumulation when memory is short
    epochs: int = 5  # pre-training epochs (paper: 5)
    min_steps_per_epoch: int = 20  # an epoch is at least this many optimizer steps (small data sets are cycled)
    target: Literal["machine", "machine_section_attr"] = "machine"  # classes: machine types, or type × section × attributes
    val_fraction: float = 0.1  # held-out share in [0, 1) of the clips of every class (accuracy, mAP)
    perturbation_classes: bool = False  # also one class per pseudo-outlier perturbation (impulses, time warp, …): a share of every batch is perturbed and labelled by its perturbation, so the encoder must notice short events and timing
    perturbed_share: float = 0.5  # with perturbation_classes: share in (0, 1) of every batch that is perturbed
    amp: bool = True  # bfloat16 autocast on CUDA
    seed: int = 0  # weight initialisation, batch order and validation split

    def __post_init__(self):
        check_fields(self, "pretrain")
        if not 0 < self.perturbed_share < 1:
            raise ValueError(f"pretrain perturbed_share must be in (0, 1), got {self.perturbed_share}")
        check_ranges(self, "pretrain", {
            "lr": (lambda v: v > 0, "> 0"), "weight_decay": (lambda v: v >= 0, ">= 0"),
            "batch_size": (lambda v: v >= 1, ">= 1"), "micro_batch_size": (lambda v: v >= 1, ">= 1"),
            "epochs": (lambda v: v >= 1, ">= 1"), "min_steps_per_epoch": (lambda v: v >= 0, ">= 0"),
            "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1) (a share of every class's clips)"),
            "seed": (lambda v: v >= 0, ">= 0"),
        })
        if self.micro_batch_size > self.batch_size:
            self.micro_batch_size = self.batch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        return strict_from_dict(cls, dict(d))


@dataclass
class FinetuneConfig(ScoreConfig):
    """Stage 2 settings. Defaults follow paper 3.2; the searched ones are marked (search). The anomaly
    score's fields (score, knn_k, …) come from :class:`~bohb_search.scoring.config.ScoreConfig`."""

    # The score a fine-tuned model is selected and scored with by default: k-NN over the tokenizer's patch
    # statistics with per-bank standardisation, the best row of BENCHMARKS.md "detection" (the paper's
    # cosine score: --score cosine).
    score: Literal["cosine", "knn"] = "knn"
    embedding: Literal["head", "patch_stats"] = "patch_stats"
    standardise: bool = True
    objective: Literal["poe", "margin"] = "poe"  # (search) poe: the paper's pOE around a centre + GRL; margin: classify what is known about each clip with an angular margin
    lr: float = 1e-4  # (search) AdamW lr of θ_f = last K blocks + anomaly head, > 0
    weight_decay: float = 1e-2  # (search) AdamW weight decay of θ_f
    lambda_adv: float = 0.1  # (search) weight of L_adv in L_total (eq. 11); 0 = "pOE only"
    delta: float = 0.5  # (search) margin δ of eq. 9, in [-1, 1]: outliers are pushed until cos(z, c) ≤ δ
    unfreeze_k: int = 2  # (search) number of final encoder blocks trained; the rest stay frozen
    head_dropout: float = 0.1  # (search) dropout p of eq. 6, in [0, 1)
    poe_ratio: float = 1.0  # (search) pseudo outliers per normal clip in a batch, >= 0; 0 = OC-SVDD (no outliers)
    other_machine_share: float = 0.5  # share in [0, 1] of outliers (pOE) or extra clips (margin) from other machine types
    perturbations: tuple[str, ...] = ()  # perturbation kinds; () = the pseudo-outlier module's defaults
    emb_dim: int = 128  # dimension D of the anomaly embedding z
    head_hidden: int = 256  # width of the head MLP's hidden layer
    head_layers: tuple[int, ...] = ()  # intermediate blocks fused by eq. 4; () = up to 3 blocks before the last
    batch_size: int = 256  # normal clips per batch (each gets poe_ratio pseudo outliers)
    accum_steps: int = 2  # gradient accumulation over 2 steps (paper 3.2)
    grad_clip: float = 1.0  # max L2 norm of θ_f's gradient
    center_momentum: float = 0.99  # μ of eq. 8, in (0, 1] (applied literally: c ← (1-μ)c + μ·mean(z_normal))
    domain_lr: float = 1e-4  # θ_D optimizer: fixed lr 1e-4, wd 1e-2 (paper 3.2)
    domain_weight_decay: float = 1e-2  # θ_D optimizer's weight decay (paper 3.2)
    domain_hidden: int = 64  # hidden width of the domain classifier
    margin_loss: Literal["adacos", "arcface"] = "adacos"  # margin objective: sub-cluster AdaCos (fixed centres) or ArcFace
    n_subclusters: int = 16  # margin objective, adacos: centres per class
    adacos_dynamic: bool = False  # margin objective, adacos: adapt the scale (AdaCos rule) instead of the fixed √2·ln(C·K − 1)
    arcface_margin: float = 0.5  # margin objective, arcface: additive angular margin m (radians)
    arcface_scale: float = 30.0  # margin objective, arcface: scale s
    mixup_prob: float = 0.5  # margin objective: share in [0, 1] of clips mixed with another clip of the batch (labels mixed)
    perturbation_classes: bool = False  # margin objective: a clip perturbed in way j is an extra class (its class, j)
    train_tokenizer: bool = False  # margin objective: also train the tokenizer's patch projection, through a second margin head on its patch statistics (what the default score reads)
    pseudo_classes: int = 4  # margin objective: k-means clusters of the pre-trained embeddings per machine and domain, for clips without attributes (1 = none)
    class_weight_power: float = 0.5  # margin objective: class weight (N / (C·n_c))^power, power in [0, 1]: 0 = unweighted, 1 = fully balanced
    max_epochs: int = 100  # at most this many epochs (paper: 100)
    patience: int = 15  # early stopping: epochs without a better validation score
    min_steps_per_epoch: int = 20  # an epoch is at least this many optimizer steps (the balanced set is cycled), whatever the data size
    select_on_all: bool = False  # select on the whole labelled test split instead of its validation half (tables then carry a mark)
    heldout_fraction: float = 0.1  # without labels: share in [0, 1) of each machine's and domain's normals held out for validation
    heldout_floor: int = 16  # without labels: fewer held-out normals than this means a fixed budget, no early stopping
    amp: bool = True  # bfloat16 autocast on CUDA
    seed: int = 0  # weight initialisation, batch order, pseudo outliers

    def __post_init__(self):
        self.perturbations = tuple(self.perturbations)
        self.head_layers = tuple(int(i) if isinstance(i, float) and i.is_integer() else i for i in self.head_layers)
        check_fields(self, "finetune")
        super().__post_init__()
        positive, nonnegative, at_least_1 = (lambda v: v > 0, "> 0"), (lambda v: v >= 0, ">= 0"), (lambda v: v >= 1, ">= 1")
        check_ranges(self, "finetune", {
            "lr": positive, "weight_decay": nonnegative, "lambda_adv": nonnegative,
            "delta": (lambda v: -1 <= v <= 1, "in [-1, 1]"), "unfreeze_k": nonnegative,
            "head_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"), "poe_ratio": nonnegative,
            "other_machine_share": (lambda v: 0 <= v <= 1, "in [0, 1]"), "emb_dim": at_least_1,
            "head_hidden": at_least_1, "head_layers": (lambda v: all(i >= 0 for i in v), "block indices >= 0"),
            "batch_size": at_least_1, "accum_steps": at_least_1, "grad_clip": positive,
            "center_momentum": (lambda v: 0 < v <= 1, "in (0, 1]"), "domain_lr": positive,
            "domain_weight_decay": nonnegative, "domain_hidden": at_least_1, "max_epochs": at_least_1,
            "patience": at_least_1, "min_steps_per_epoch": nonnegative,
            "heldout_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"), "heldout_floor": nonnegative,
            "n_subclusters": at_least_1, "arcface_margin": (lambda v: 0 <= v < 1.5, "in [0, 1.5) radians"),
            "arcface_scale": positive, "mixup_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
            "pseudo_classes": at_least_1, "class_weight_power": (lambda v: 0 <= v <= 1, "in [0, 1]"),
            "seed": nonnegative,
        })
        for name, allowed in (("objective", ("poe", "margin")), ("margin_loss", ("adacos", "arcface"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"finetune {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.train_tokenizer and self.objective != "margin":
            # measured: the pOE task trains the tokenizer away from the faults (BENCHMARKS.md "tokenizer-objectives")
            raise ValueError(f"finetune train_tokenizer: only the margin objective trains the tokenizer "
                             f"(objective is {self.objective!r})")
        self.perturbations = tuple(self.perturbations)
        self.head_layers = tuple(int(i) for i in self.head_layers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["perturbations"] = list(self.perturbations)
        d["head_layers"] = list(self.head_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        return strict_from_dict(cls, dict(d))

    @property
    def variant(self) -> str:
        """The ablation row this config is (paper Table 1), or the margin objective's loss."""
        if self.objective == "margin":
            return f"margin ({self.margin_loss})"
        outliers = "pOE" if self.poe_ratio > 0 else "OC-SVDD"
        return f"{outliers} + GRL" if self.lambda_adv > 0 else f"{outliers} only"


@dataclass
class AEBaselineConfig:
    """The DCASE 2023-2025 Task 2 autoencoder baseline's recipe (nttcslab/dcase2023_task2_baseline_ae, 2025t2),
    the yardstick every table compares with. Its features are ``data.config.dcase_ae_features``."""

    lr: float = 1e-3  # Adam learning rate (no weight decay, no scheduler)
    max_epochs: int = 100  # every epoch is trained; the last epoch's weights are kept (no early stopping)
    batch_size: int = 256  # frame-context vectors per batch, shuffled every epoch
    validation_split: float = 0.1  # share of the vectors held out at random and never trained on, as the official code
    score: Literal["mse", "mahalanobis"] = "mse"  # MSE: mean squared reconstruction error; MAHALA: per-domain covariance of residual frames, min over domains
    n_frames: int = 5  # consecutive frames per vector (5 × 128 = 640 values)
    min_steps_per_epoch: int = 0  # at least this many optimizer steps per epoch (0: one pass, the official recipe)
    seed: int = 13711  # the official seed
    amp: bool = False  # the AE is tiny: always float32

    def __post_init__(self):
        check_fields(self, "baseline")
        check_ranges(self, "baseline", {
            "lr": (lambda v: v > 0, "> 0"), "max_epochs": (lambda v: v >= 1, ">= 1"),
            "batch_size": (lambda v: v >= 2, ">= 2"),
            "validation_split": (lambda v: 0 <= v < 1, "in [0, 1)"), "n_frames": (lambda v: v >= 1, ">= 1"),
            "min_steps_per_epoch": (lambda v: v >= 0, ">= 0"), "seed": (lambda v: v >= 0, ">= 0"),
        })
        if self.score not in ("mse", "mahalanobis"):
            raise ValueError(f"baseline score must be 'mse' or 'mahalanobis', got {self.score!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AEBaselineConfig":
        return strict_from_dict(cls, dict(d))


# =================================================================================================
# pseudo outliers (the perturbations themselves are in perturbations.py)

#: Every perturbation, in registry order; the default ``PseudoOutlierConfig.kinds``.
ALL_KINDS: tuple[str, ...] = (
    "freq_shift",
    "pitch_shift",
    "time_stretch",
    "time_warp",
    "impulses",
    "noise_burst",
    "harmonic",
    "amplitude_mod",
    "spectral_notch",
)

# Range fields: name -> (integer?, lowest allowed, highest allowed, low end exclusive?)
_RANGE_LIMITS: dict[str, tuple[bool, float, float, bool]] = {
    "freq_shift_bins": (False, 0.0, math.inf, False),
    "pitch_shift_percent": (False, 0.0, 50.0, False),
    "time_stretch_percent": (False, 0.0, 50.0, False),
    "time_warp_fraction": (False, 0.0, 0.25, False),
    "impulse_count": (True, 1, 10_000, False),
    "impulse_gain_db": (False, -math.inf, math.inf, False),
    "noise_band_bins": (True, 1, 10_000, False),
    "noise_duration_fraction": (False, 0.0, 1.0, True),
    "noise_gain_db": (False, -math.inf, math.inf, False),
    "harmonic_level_db": (False, -math.inf, math.inf, False),
    "am_depth": (False, 0.0, 0.95, False),  # < 1 keeps (1 + m sin) > 0, i.e. finite dB
    "am_rate_hz": (False, 0.0, math.inf, False),  # upper bound (frame Nyquist) checked below
    "notch_width_bins": (True, 1, 10_000, False),
    "notch_depth_db": (False, 0.0, math.inf, False),
}


@dataclass(frozen=True)
class PseudoOutlierConfig:
    """How many pseudo outliers, from where, and how strong. Ranges are ``(low, high)``, drawn
    uniformly per outlier; ``low == high`` fixes the strength."""

    # -- mix ---------------------------------------------------------------------------------
    ratio: float = 1.0  # pseudo outliers per normal in a batch: round(ratio * B) are made
    other_machine_share: float = 0.5  # fraction of them from other_pool, when a pool is given
    kinds: tuple[str, ...] = ALL_KINDS  # perturbations to use (see the module table)

    # -- front end the log-mels were made with (must match data.features.FeatureConfig) -------
    sample_rate: int = 16000
    n_fft: int = 1024  # window length too: sets how many frames a click spreads over
    hop_length: int = 156  # frames per second = sample_rate / hop_length
    f_min: float = 0.0
    f_max: float = 8000.0
    db_floor: float = -100.0  # 10*log10(1e-10): a notch or modulation never goes below it

    # -- per-kind strengths (subtle by default: outliers should sit near the normal manifold) -
    freq_shift_bins: tuple[float, float] = (0.5, 2.0)  # |shift| along the mel axis, in bins
    pitch_shift_percent: tuple[float, float] = (1.0, 4.0)  # |frequency scaling - 1| in %
    time_stretch_percent: tuple[float, float] = (3.0, 10.0)  # |rate - 1| in %
    time_warp_fraction: tuple[float, float] = (0.02, 0.08)  # anchor displacement / clip length
    impulse_count: tuple[int, int] = (1, 4)  # clicks per clip
    impulse_gain_db: tuple[float, float] = (6.0, 15.0)  # click peak vs. the clip's mean dB level
    noise_band_bins: tuple[int, int] = (4, 16)  # burst bandwidth in mel bins
    noise_duration_fraction: tuple[float, float] = (0.1, 0.4)  # burst length / clip length
    noise_gain_db: tuple[float, float] = (-3.0, 6.0)  # burst vs. the band's median level
    harmonic_peaks: int = 3  # strongest spectral peaks that get harmonics
    harmonic_level_db: tuple[float, float] = (-18.0, -6.0)  # 2nd harmonic vs. its fundamental
    harmonic_third_offset_db: float = -6.0  # 3rd harmonic relative to the 2nd
    am_depth: tuple[float, float] = (0.1, 0.3)  # modulation index m of (1 + m sin)
    am_rate_hz: tuple[float, float] = (2.0, 12.0)  # modulation frequency (rotation-rate scale)
    notch_width_bins: tuple[int, int] = (2, 8)  # notch width in mel bins
    notch_depth_db: tuple[float, float] = (3.0, 10.0)  # attenuation at the notch centre

    def __post_init__(self) -> None:
        # Configs loaded from JSON/YAML carry lists; store tuples so the config stays hashable.
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        self._validate()

    def _validate(self) -> None:
        def number(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")
            return float(v)

        def integer(name: str, low: int) -> int:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {v!r}")
            return v

        if number("ratio") < 0:
            raise ValueError(f"ratio: expected >= 0 (outliers per normal), got {self.ratio!r}")
        if not 0.0 <= number("other_machine_share") <= 1.0:
            raise ValueError(
                f"other_machine_share: expected a fraction in [0, 1], got {self.other_machine_share!r}"
            )
        if not isinstance(self.kinds, tuple) or not all(isinstance(k, str) for k in self.kinds):
            raise ValueError(f"kinds: expected a tuple of perturbation names, got {self.kinds!r}")
        unknown = [k for k in self.kinds if k not in ALL_KINDS]
        if unknown:
            raise ValueError(f"kinds: unknown perturbation(s) {unknown}; known kinds: {list(ALL_KINDS)}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds: duplicate names in {list(self.kinds)}")
        if not self.kinds and self.other_machine_share < 1.0:
            # Without perturbations every outlier must come from the other-machine pool.
            raise ValueError(
                "kinds: empty, which needs other_machine_share = 1.0 (all outliers from other_pool)"
            )

        sr = integer("sample_rate", 1)
        integer("n_fft", 2)
        hop = integer("hop_length", 1)
        f_min, f_max = number("f_min"), number("f_max")
        if not 0.0 <= f_min < f_max <= sr / 2.0:
            raise ValueError(
                f"f_max: need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}"
            )
        number("db_floor")
        integer("harmonic_peaks", 1)
        number("harmonic_third_offset_db")

        for name, (is_int, low, high, low_open) in _RANGE_LIMITS.items():
            v = getattr(self, name)
            allowed = int if is_int else (int, float)
            if (
                not isinstance(v, tuple)
                or len(v) != 2
                or any(isinstance(x, bool) or not isinstance(x, allowed) for x in v)
                or not all(math.isfinite(x) for x in v)
            ):
                kind = "integers" if is_int else "finite numbers"
                raise ValueError(f"{name}: expected a (low, high) pair of {kind}, got {v!r}")
            lo, hi = v
            if lo > hi:
                raise ValueError(f"{name}: low > high in {v!r}")
            if lo < low or (low_open and lo <= low) or hi > high:
                bracket = "(" if low_open else "["
                raise ValueError(f"{name}: values must lie in {bracket}{low}, {high}], got {v!r}")
        frame_rate = sr / hop
        if self.am_rate_hz[1] >= frame_rate / 2.0:
            raise ValueError(
                f"am_rate_hz: must stay below half the frame rate ({frame_rate / 2.0:.1f} Hz), "
                f"got {self.am_rate_hz!r}"
            )

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PseudoOutlierConfig":
        return strict_from_dict(cls, dict(d))

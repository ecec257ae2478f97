"""Typed encoder configuration and the tiny / small / base presets.

One :class:`EncoderConfig` describes either backbone (the bidirectional SSM or the AST-style transformer)
together with its tokenizer, so a checkpoint that records ``cfg.to_dict()`` can rebuild the exact model.
Everything in it is a plain str / int / float / None, which ``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

SCAN_BACKENDS = ("auto", "torch", "reference", "cuda", "cpp")  # see models.scan

ENCODER_KINDS = ("ssm", "ast")
MIXERS = ("mamba1", "mamba2")  # the SSM block's token mixer: models.ssm (Mamba-1, S6) or models.ssd (Mamba-2, SSD)
POOLS = ("cls_middle", "mean", "stats")
NORMS = ("layernorm", "rmsnorm")


@dataclass
class EncoderConfig:
    # backbone
    kind: str = "ssm"  # "ssm": bidirectional Audio-Mamba blocks (section 2.2); "ast": pre-norm self-attention baseline
    dim: int = 192  # token width D
    depth: int = 24  # number of blocks K (the AuM reference uses 24; tests use 1-2)
    # tokenizer (section 2.1, eq. 1-2)
    n_mels: int = 128  # H: mel bins of the input
    n_frames: int = 1024  # W the positional embedding is sized for (10 s); other lengths resample it
    unshuffle: int = 4  # pixel-unshuffle factor r: r² fewer tokens, r² more channels per patch
    patch: int = 16  # side p of the square patches cut from the unshuffled map (their height when patch_time is set)
    patch_time: int | None = None  # width in time of a patch (unshuffled frames); None = patch (square, the paper's)
    pool: str = "cls_middle"  # "cls_middle": class token in the middle of the sequence (as AuM); "mean": token mean; "stats": mean, std and max over time of the tokens of each frequency row (keeps short events)
    # selective SSM mixer (Mamba defaults)
    d_state: int = 16  # N: state size per channel
    expand: int = 2  # inner width E = expand * dim
    d_conv: int = 4  # kernel of the depthwise causal Conv1D
    dt_rank: int | None = None  # rank of the Δ projection; None = ceil(dim / 16)
    dt_min: float = 1e-3  # Δ is initialised log-uniform in [dt_min, dt_max]
    dt_max: float = 0.1
    scan_backend: str = "auto"  # "auto" | "cpp" | "torch" | "reference" | "cuda"  (see models.scan)
    mixer: str = "mamba1"  # "mamba1": the paper's selective scan (S6, a decay per channel and state); "mamba2": SSD (Dao & Gu 2024), a scalar decay per head, computed as chunked matrix products (models.ssd)
    headdim: int = 16  # mixer="mamba2": channels per head P, sharing one decay; must divide E = expand*dim. Mamba-2's 64 would leave E=128..384 (dim 64..192) with 2..6 heads, i.e. only 2..6 memory lengths; 16 gives 8..24
    # attention (kind="ast")
    n_heads: int = 3  # heads of the self-attention; dim must divide evenly
    # parts shared by both block types
    mlp_ratio: float = 4.0  # hidden width of the MLP sub-block as a multiple of dim; 0 drops the sub-block
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    dropout: float = 0.0  # dropout on the mixer / MLP outputs
    drop_path: float = 0.0  # stochastic depth, rising linearly to this rate at the last block
    # input normalisation, filled from the training set's statistics so a checkpoint is self-contained
    input_mean: float = 0.0  # the encoder computes (x - input_mean) / input_std first
    input_std: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def inner_dim(self) -> int:
        """E, the width inside the SSM mixer."""
        return self.expand * self.dim

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.dim / 16)

    @property
    def time_patch(self) -> int:
        """The patch's width in unshuffled frames (``patch_time``, or ``patch`` for square patches)."""
        return self.patch if self.patch_time is None else self.patch_time

    @property
    def frame_step(self) -> int:
        """Log-mel frames per token along time: the frame count must be a multiple of it."""
        return self.unshuffle * self.time_patch

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency, time) patches of an n_mels × n_frames input."""
        return self.n_mels // (self.unshuffle * self.patch), self.n_frames // self.frame_step

    @property
    def pooled_dim(self) -> int:
        """Width of the pooled feature the heads read: D, or 3·F·D for statistics pooling (F frequency rows)."""
        return 3 * self.grid[0] * self.dim if self.pool == "stats" else self.dim

    @property
    def n_tokens(self) -> int:
        """N = H·W / (p² r²), patch tokens of an n_mels × n_frames input (class token not counted)."""
        f, t = self.grid
        return f * t

    def validate(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"kind must be one of {ENCODER_KINDS}, got {self.kind!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"scan_backend must be one of {SCAN_BACKENDS}, got {self.scan_backend!r}")
        positive = ("dim", "depth", "n_mels", "n_frames", "unshuffle", "patch", "d_state", "expand", "d_conv", "n_heads",
                    "headdim")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        if self.kind == "ssm" and self.mixer == "mamba2":
            if self.inner_dim % self.headdim:
                raise ValueError(f"headdim={self.headdim} must divide the mixer width expand*dim={self.inner_dim}")
            if self.scan_backend == "cpp":  # the compiled kernel runs the Mamba-1 recurrence only
                raise ValueError("scan_backend='cpp' is the compiled Mamba-1 scan; mixer='mamba2' takes "
                                 "'auto', 'torch', 'reference' or 'cuda'")
        if self.patch_time is not None and (isinstance(self.patch_time, bool) or not isinstance(self.patch_time, int)
                                            or self.patch_time < 1):
            raise ValueError(f"patch_time must be a positive integer or None, got {self.patch_time!r}")
        if self.dt_rank is not None and (not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            raise ValueError(f"dt_rank must be a positive integer or None, got {self.dt_rank!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"dt_min and dt_max must satisfy 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if self.kind == "ast" and self.dim % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide dim={self.dim}")
        if self.mlp_ratio < 0:
            raise ValueError(f"mlp_ratio must be >= 0, got {self.mlp_ratio}")
        for name in ("dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not (math.isfinite(self.input_mean) and math.isfinite(self.input_std) and self.input_std > 0):
            raise ValueError(f"input_std must be a finite positive number and input_mean finite, got "
                             f"mean={self.input_mean}, std={self.input_std}")
        for name, size, step, what in (("n_mels", self.n_mels, self.unshuffle * self.patch, "unshuffle*patch"),
                                       ("n_frames", self.n_frames, self.frame_step, "unshuffle*patch_time")):
            if size % step:
                raise ValueError(f"{name}={size} must be a multiple of {what} = {step} so the patches tile it")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown EncoderConfig field(s): {', '.join(unknown)}")
        return cls(**d)


# Widths follow AuM / DeiT (tiny 192, small 384, base 768); all have depth 24 in the reference.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=192, depth=24),
    "small": dict(dim=384, depth=24),
    "base": dict(dim=768, depth=24),
}


def default_heads(dim: int) -> int:
    """Attention heads for a width: 64-wide heads as DeiT/AST (3, 6, 12 for the presets), 16-wide
    below 128 so that small test and CPU models still get several heads; lowered until it divides dim."""
    heads = max(1, dim // 64) if dim >= 128 else max(1, dim // 16)
    while dim % heads:
        heads -= 1
    return heads


def encoder_preset(name: str, **overrides) -> EncoderConfig:
    """The named size preset with any field overridden, e.g. ``encoder_preset("tiny", depth=2, kind="ast")``.

    The one place where sizing rules live: ``n_heads`` follows ``dim`` (:func:`default_heads`) unless given.
    """
    if name not in PRESETS:
        raise ValueError(f"encoder preset must be one of {tuple(PRESETS)}, got {name!r}")
    known = {f.name for f in fields(EncoderConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown EncoderConfig field(s) in overrides: {', '.join(unknown)}")
    settings = {**PRESETS[name], **overrides}
    if "n_heads" not in overrides:
        dim = settings["dim"]
        if isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1:
            settings["n_heads"] = default_heads(dim)
    return EncoderConfig(**settings)

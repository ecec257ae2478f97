"""The encoder shell shared by both backbones: normalise → tokenize → K blocks → final norm → pool.

``build_encoder(cfg)`` returns an :class:`Encoder` whose blocks are bidirectional SSM blocks
(``cfg.kind == "ssm"``, paper section 2.2) or pre-norm attention blocks (``"ast"``, the Table 1 baseline).
Its output carries what both stages need: the final pooled feature h⁽⁰⁾ for the classification head
(section 2.4) and every block's pooled feature for the anomaly head's fusion (section 2.3, eq. 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from .attention import AttentionBlock
from .config import EncoderConfig
from .layers import make_norm
from .scan import SCAN_BACKENDS
from .ssd import BiMamba2Mixer
from .ssm import BiMambaMixer, SSMBlock
from .statistics import time_statistics
from .tokenizer import PixelUnshufflePatchEmbed


@dataclass
class EncoderOutput:
    pooled: torch.Tensor  # (B, pooled_dim) global feature of the final block, h⁽⁰⁾ of eq. 5
    layers: list[torch.Tensor]  # [(B, pooled_dim)] * depth: each block's output, final-normed and pooled; layers[-1] is pooled
    tokens: torch.Tensor  # (B, N, D) final-normed patch tokens (the class token, if any, removed)


class Encoder(nn.Module):
    """(B, 1, H, W) or (B, H, W) log-mel → :class:`EncoderOutput`."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        cfg.validate()
        self.config = replace(cfg)  # a private copy: set_scan_backend must not edit the caller's config
        self.embed = PixelUnshufflePatchEmbed(
            cfg.dim, cfg.n_mels, cfg.n_frames, cfg.unshuffle, cfg.patch, cls_token=cfg.pool == "cls_middle",
            patch_time=cfg.patch_time,
        )
        block = SSMBlock if cfg.kind == "ssm" else AttentionBlock
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # deeper blocks dropped more
        self.blocks = nn.ModuleList(block(cfg, rate) for rate in rates)
        self.norm = make_norm(cfg.norm, cfg.dim)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # nanoGPT / GPT-2 scheme: N(0, 0.02) weights and zero biases for every nn.Linear, and the projections
        # that write into the residual stream (mixer out, MLP fc2) scaled by 1/√(2·depth) so the stream's
        # variance does not grow with depth. The SSM's own parameters (conv, x/Δ projections, A, D) are
        # raw Parameters initialised in BiMambaMixer and are not touched here.
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.config.depth) if getattr(module, "residual_out", False) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def set_scan_backend(self, name: str) -> None:
        """Switch every SSM block's scan backend ("auto" | "cpp" | "torch" | "reference" | "cuda"), e.g. after loading."""
        if name not in SCAN_BACKENDS:
            raise ValueError(f"scan_backend must be one of {SCAN_BACKENDS}, got {name!r}")
        self.config.scan_backend = name
        for module in self.modules():
            if isinstance(module, (BiMambaMixer, BiMamba2Mixer)):
                module.scan_backend = name

    def _pool(self, h: torch.Tensor, cls_at: int | None, rows: int) -> torch.Tensor:
        """Final-normed global feature of a (B, L, D) sequence: its class token, the mean over tokens, or
        (``pool="stats"``) the mean, standard deviation and maximum over time of every frequency row's tokens,
        (B, 3·F·D). A class token or a mean is one summary of the whole clip in which a two-frame event is
        one token among hundreds; the maximum over time keeps it (test_models: the click test)."""
        if cls_at is not None:
            return self.norm(h[:, cls_at])  # the norm is per token: norming one token is enough
        if self.config.pool == "stats":
            b, length, d = h.shape
            grid = self.norm(h).view(b, length // rows, rows, d).permute(0, 2, 3, 1)  # time-major → (B, F, D, T)
            return time_statistics(grid, "meanstd_max").flatten(1)
        return self.norm(h).mean(dim=1)

    def patch_statistics(self, x: torch.Tensor, frame_stride: int = 16) -> torch.Tensor:
        """(B, [1,] H, W) log-mel → (B, 2·F·D) time statistics of the tokenizer's patch projection taken every
        ``frame_stride`` log-mel frames (rounded to a multiple of the unshuffle factor), see
        :meth:`PixelUnshufflePatchEmbed.time_statistics`. Uses no block: pre-training changes it; fine-tuning
        freezes the tokenizer and leaves it as it is, unless the margin objective's ``train_tokenizer`` trains
        the patch projection through it."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        cfg = self.config
        return self.embed.time_statistics((x - cfg.input_mean) / cfg.input_std, max(1, frame_stride // cfg.unshuffle))

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(
                f"expected a (batch, mels, frames) or (batch, 1, mels, frames) log-mel, got {tuple(x.shape)}"
            )
        cfg = self.config
        x = (x - cfg.input_mean) / cfg.input_std
        h = self.embed(x)
        n_patches = self.embed.n_patches(*x.shape[-2:])
        cls_at = self.embed.cls_index(n_patches) if self.embed.cls_token is not None else None
        rows = x.shape[-2] // self.embed.steps[0]
        layers = []
        for block in self.blocks:
            h = block(h)
            layers.append(self._pool(h, cls_at, rows))
        tokens = self.norm(h)
        if cls_at is not None:
            tokens = torch.cat([tokens[:, :cls_at], tokens[:, cls_at + 1:]], dim=1)
        return EncoderOutput(pooled=layers[-1], layers=layers, tokens=tokens)


def build_encoder(cfg: EncoderConfig | dict) -> Encoder:
    """An SSM or AST encoder from its config (or the config's ``to_dict()``)."""
    if isinstance(cfg, dict):
        cfg = EncoderConfig.from_dict(cfg)
    return Encoder(cfg)

"""The AST-style baseline block (Table 1's "AST Baseline" row): pre-norm multi-head self-attention + MLP.

Same tokenizer, width, depth, norms and MLP as the SSM encoder; only the token mixer differs, so the
backbone comparison isolates attention (O(N²) in the sequence length) against the bidirectional scan (O(N)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig
from .layers import PreNormBlock


class SelfAttention(nn.Module):
    """Bidirectional (unmasked) multi-head attention; uses PyTorch's fused scaled-dot-product kernel."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj.residual_out = True
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(batch, length, dim))


class AttentionBlock(PreNormBlock):
    """Pre-norm residual block: x + Attention(Norm(x)), then x + MLP(Norm(x))."""

    def __init__(self, cfg: EncoderConfig, drop_path: float = 0.0):
        super().__init__(SelfAttention(cfg.dim, cfg.n_heads, cfg.dropout), cfg.dim, cfg.norm, cfg.mlp_ratio, cfg.dropout, drop_path)

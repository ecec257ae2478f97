"""Spectrogram tokenization by space-to-depth (paper section 2.1, eq. 1-2).

    X ∈ R^{C×H×W}  --PU(·, r)-->  X' ∈ R^{r²C × H/r × W/r}  --p×p patches, vec, linear-->  E ∈ R^{N×D}

with N = HW / (p² r²): r = 4, p = 16 turn a 128 × 1024 log-mel into 2 × 16 = 32 tokens, r = 1 into 512.
A p × p patch of X' is a (rp) × (rp) region of X, so the unshuffle trades sequence length for patch width
without discarding any input value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelUnshufflePatchEmbed(nn.Module):
    """(B, 1, H, W) log-mel → (B, N [+1], D) tokens with a learnable positional embedding.

    Tokens are ordered time-major (all frequency patches of the first time step, then the next), so a
    scan over the sequence moves forward in time and a longer input only appends tokens. With
    ``cls_token`` a learned class token is inserted in the middle of the sequence, at index N // 2, as in
    Audio-Mamba: there both scan directions reach it after half the sequence instead of one of them
    seeing it first with no context.
    """

    def __init__(self, dim: int, n_mels: int = 128, n_frames: int = 1024, unshuffle: int = 4, patch: int = 16,
                 in_chans: int = 1, cls_token: bool = True, patch_time: int | None = None):
        super().__init__()
        self.unshuffle, self.patch, self.in_chans = unshuffle, patch, in_chans
        # patches p tall (frequency) and patch_time wide (time): tall, narrow patches give one token per short
        # stretch of time, which is where many machine faults are (a knock, a valve closing hard)
        self.patch_time = patch if patch_time is None else patch_time
        self.steps = (unshuffle * patch, unshuffle * self.patch_time)  # log-mel (bins, frames) per token
        if n_mels % self.steps[0] or n_frames % self.steps[1]:
            raise ValueError(f"n_mels={n_mels} and n_frames={n_frames} must be multiples of unshuffle*patch = "
                             f"{self.steps[0]} and unshuffle*patch_time = {self.steps[1]}")
        self.grid = (n_mels // self.steps[0], n_frames // self.steps[1])
        # Eq. 2, E_i = W_patch vec(S_i) + b_patch, for every patch at once: a p×p convolution with stride p
        # is exactly one shared linear map applied to each non-overlapping patch.
        kernel = (patch, self.patch_time)
        self.proj = nn.Conv2d(unshuffle * unshuffle * in_chans, dim, kernel_size=kernel, stride=kernel)
        # Initialised like a Linear on the flattened patch (the conv's default fan-in init would also do;
        # xavier keeps token scale independent of r and p).
        nn.init.xavier_uniform_(self.proj.weight.view(dim, -1))
        nn.init.zeros_(self.proj.bias)
        # Positional embedding kept as a (D, F, T) grid so other input lengths can resample it.
        self.pos_embed = nn.Parameter(torch.empty(1, dim, *self.grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim)) if cls_token else None
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def n_patches(self, height: int, width: int) -> int:
        return (height // self.steps[0]) * (width // self.steps[1])

    @staticmethod
    def cls_index(n_patches: int) -> int:
        """Where the class token sits in a sequence of ``n_patches`` patch tokens."""
        return n_patches // 2

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid:
            return self.pos_embed
        # Other input sizes (e.g. 30 s or 60 s clips): resample the learned grid bilinearly.
        return F.interpolate(self.pos_embed, size=grid, mode="bilinear", align_corners=False)

    def time_statistics(self, x: torch.Tensor, time_stride: int) -> torch.Tensor:
        """(B, 1, H, W) normalised log-mel → (B, 2·F·D): mean and standard deviation over time of the patch
        projection (eq. 2, no positional embedding) slid along time every ``time_stride`` unshuffled frames.

        The tokens of ``forward`` sit side by side (stride p): with r = 4, p = 16 each covers 64 frames
        (0.64 s), and the blocks above mix them further, so a short event — a knock, a click, a brief
        fluctuation, which is what many machine faults sound like — is averaged into its neighbours. The same
        learned projection applied at every ``time_stride`` and summarised per frequency row by how its
        output varies over time keeps exactly that. (Measured: BENCHMARKS.md "detection".)
        """
        xu = F.pixel_unshuffle(x, self.unshuffle)
        e = F.conv2d(xu, self.proj.weight, self.proj.bias, stride=(self.patch, time_stride))  # (B, D, F, T')
        stats = torch.stack([e.mean(dim=-1), e.std(dim=-1)], dim=1)  # (B, 2, D, F)
        return stats.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected a (batch, {self.in_chans}, mels, frames) spectrogram, got shape {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if height % self.steps[0] or width % self.steps[1]:
            raise ValueError(
                f"a {height}×{width} (mels × frames) input does not tile into patches: they must be multiples of "
                f"unshuffle*patch = {self.steps[0]} and unshuffle*patch_time = {self.steps[1]}"
            )
        x = F.pixel_unshuffle(x, self.unshuffle)  # eq. 1: (B, r²C, H/r, W/r)
        x = self.proj(x) + self._pos_embed((height // self.steps[0], width // self.steps[1]))  # eq. 2: (B, D, F, T)
        tokens = x.permute(0, 3, 2, 1).flatten(1, 2)  # time-major: (B, T·F, D)
        if self.cls_token is None:
            return tokens
        mid = self.cls_index(tokens.shape[1])
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([tokens[:, :mid], cls, tokens[:, mid:]], dim=1)

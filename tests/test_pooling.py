"""Statistics pooling (``EncoderConfig.pool = "stats"``) with tokens narrow in time keeps a short event that a
class token averages away; the pooled width follows the geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models import build_encoder, encoder_preset


def _click_auc(pool: str, patch_time: int | None, seed: int) -> float:
    """AUC of "distance of the pooled feature to the nearest other click-free clip" for 12 click-free clips
    against 12 clips with a 2-frame, +4 dB broadband click at a random time (untrained encoder, seeded)."""
    torch.manual_seed(seed)
    cfg = encoder_preset("tiny", dim=32, depth=2, pool=pool, patch_time=patch_time, n_frames=256, scan_backend="torch")
    enc = build_encoder(cfg).eval()
    g = torch.Generator().manual_seed(1)
    # a steady machine: a fixed spectral tilt plus 1 dB of frame-to-frame noise
    base = torch.linspace(-1, 1, 128)[:, None] * 3 + torch.randn(24, 128, 256, generator=g)
    x = base.clone()
    for i in range(12, 24):
        t = int(torch.randint(10, 240, (1,), generator=g))
        x[i, :, t : t + 2] += 4.0
    with torch.no_grad():
        reference, pooled = enc(base[:12]).pooled, enc(x).pooled
    nearest_other = torch.cdist(pooled, reference).sort(dim=1).values[:, 1]  # a click-free clip is its own nearest
    return roc_auc_score([0] * 12 + [1] * 12, nearest_other.numpy())


def test_statistics_pooling_of_narrow_tokens_sees_a_two_frame_click_the_class_token_misses():
    stats = [_click_auc("stats", 2, seed) for seed in range(4)]  # 32 tokens along time, 8 frames each
    cls = [_click_auc("cls_middle", None, seed) for seed in range(4)]  # the paper's geometry: 4 tokens along time
    assert np.mean(stats) >= 0.95, stats
    assert np.mean(stats) >= np.mean(cls) + 0.1, (stats, cls)


@pytest.mark.parametrize("pool,patch_time,width", [("cls_middle", None, 32), ("mean", 2, 32), ("stats", 2, 3 * 2 * 32)])
def test_pooled_width_and_token_grid_follow_the_geometry(pool, patch_time, width):
    cfg = encoder_preset("tiny", dim=32, depth=1, pool=pool, patch_time=patch_time, n_frames=256, scan_backend="torch")
    assert cfg.pooled_dim == width
    enc = build_encoder(cfg)
    out = enc(torch.randn(2, 128, 256))
    assert out.pooled.shape == (2, width) and all(layer.shape == (2, width) for layer in out.layers)
    assert out.tokens.shape == (2, cfg.n_tokens, 32)
    assert cfg.n_tokens == 2 * 256 // (4 * (patch_time or 16))
    out.pooled.sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad and p is not enc.embed.cls_token)


def test_a_frame_count_the_time_patches_do_not_tile_is_refused():
    with pytest.raises(ValueError, match="unshuffle\\*patch_time = 8"):
        encoder_preset("tiny", dim=32, depth=1, patch_time=2, n_frames=1020)

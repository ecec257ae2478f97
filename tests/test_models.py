"""models/: tokenizer, encoders, heads, GRL, domain classifier, AE baseline, configs and checkpoints."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from models import (
    AEConfig,
    AnomalyHead,
    CheckpointError,
    ClassificationHead,
    DCASEAutoencoder,
    DomainClassifier,
    EncoderConfig,
    GradientReversal,
    PixelUnshufflePatchEmbed,
    build_encoder,
    encoder_preset,
    grad_reverse,
)
from models.ssm import BiMambaMixer


def tiny_cfg(**overrides) -> EncoderConfig:
    """A very small encoder: 32 wide, 1 block, 128 × 256 input (8 tokens at r = 4)."""
    base = dict(dim=32, depth=1, n_heads=2, n_frames=256)
    return encoder_preset("tiny", **{**base, **overrides})


def logmel(batch=2, frames=256, seed=0) -> torch.Tensor:
    return torch.randn(batch, 128, frames, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("r, expected", [(1, 512), (2, 128), (4, 32)])
def test_token_count_matches_eq2(r, expected):
    assert expected == 128 * 1024 // (16**2 * r**2)
    embed = PixelUnshufflePatchEmbed(dim=8, unshuffle=r, patch=16, cls_token=False)
    assert embed(torch.randn(1, 1, 128, 1024)).shape == (1, expected, 8)
    with_cls = PixelUnshufflePatchEmbed(dim=8, unshuffle=r, patch=16, cls_token=True)
    assert with_cls(torch.randn(1, 1, 128, 1024)).shape == (1, expected + 1, 8)
    assert EncoderConfig(unshuffle=r).n_tokens == expected


def test_class_token_sits_in_the_middle():
    embed = PixelUnshufflePatchEmbed(dim=8, n_frames=256, unshuffle=4, patch=16)
    tokens = embed(torch.randn(3, 1, 128, 256))  # 2 × 4 = 8 patches + class token
    assert tokens.shape == (3, 9, 8)
    mid = embed.cls_index(8)
    assert mid == 4
    for b in range(3):
        assert torch.equal(tokens[b, mid], embed.cls_token[0, 0])
    others = torch.cat([tokens[:, :mid], tokens[:, mid + 1:]], dim=1)
    assert not any(torch.equal(others[0, i], embed.cls_token[0, 0]) for i in range(8))


def test_patch_projection_is_a_linear_map_of_unshuffled_patches():
    # eq. 1-2 by hand for one patch: unshuffle, cut the p×p patch, vec, W x + b, plus its position embedding
    embed = PixelUnshufflePatchEmbed(dim=5, n_mels=16, n_frames=32, unshuffle=2, patch=4, cls_token=False)
    x = torch.randn(1, 1, 16, 32)
    tokens = embed(x)  # grid 2 (freq) × 4 (time), time-major order
    unshuffled = F.pixel_unshuffle(x, 2)  # (1, 4, 8, 16)
    f, t = 1, 2
    patch = unshuffled[0, :, f * 4:(f + 1) * 4, t * 4:(t + 1) * 4].reshape(-1)
    expected = embed.proj.weight.reshape(5, -1) @ patch + embed.proj.bias + embed.pos_embed[0, :, f, t]
    torch.testing.assert_close(tokens[0, t * 2 + f], expected, rtol=1e-5, atol=1e-6)


def test_time_statistics_at_stride_p_are_the_statistics_of_the_tokens():
    """With time stride p the sliding projection is exactly the tokenizer's tokens (minus positions): their
    mean and std over time per frequency row; a finer stride adds the positions in between."""
    embed = PixelUnshufflePatchEmbed(dim=5, n_mels=16, n_frames=32, unshuffle=2, patch=4, cls_token=False)
    x = torch.randn(3, 1, 16, 32)
    tokens = (embed(x) - embed.pos_embed.permute(0, 3, 2, 1).flatten(1, 2)).reshape(3, 4, 2, 5)  # B, T, F, D
    stats = embed.time_statistics(x, time_stride=4).reshape(3, 2, 5, 2)  # B, (mean, std), D, F
    torch.testing.assert_close(stats[:, 0], tokens.mean(1).transpose(1, 2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats[:, 1], tokens.std(1).transpose(1, 2), rtol=1e-5, atol=1e-6)
    assert embed.time_statistics(x, time_stride=1).shape == (3, 2 * 5 * 2)


def test_patch_statistics_see_a_click_that_pooled_tokens_average_away():
    """Why the score can use patch statistics: a 2-frame click moves the std over time of the sliding
    projection far more than the mean-pooled tokens, relative to their spread over clean clips."""
    torch.manual_seed(0)
    enc = build_encoder(encoder_preset("tiny", dim=16, depth=1, n_mels=32, n_frames=256, unshuffle=2, patch=8))
    enc.eval()
    clean = torch.randn(16, 32, 256) * 0.5
    clicked = clean.clone()
    clicked[:, :, 100:102] += 3.0
    with torch.no_grad():
        stats_clean, stats_click = enc.patch_statistics(clean, frame_stride=2), enc.patch_statistics(clicked, frame_stride=2)
        pooled_clean, pooled_click = enc(clean).pooled, enc(clicked).pooled

    def shift(a, b):  # mean change in units of the clean clips' spread, per dimension
        return ((b - a).abs() / (a.std(0) + 1e-6)).mean().item()

    assert shift(stats_clean, stats_click) > 2 * shift(pooled_clean, pooled_click)


def test_input_that_does_not_tile_raises_clear_error():
    embed = PixelUnshufflePatchEmbed(dim=8, unshuffle=4, patch=16)
    with pytest.raises(ValueError, match="unshuffle\\*patch"):
        embed(torch.randn(1, 1, 128, 1000))
    with pytest.raises(ValueError, match="n_frames=1000"):
        EncoderConfig(n_frames=1000)


@pytest.mark.parametrize("kind", ["ssm", "ast"])
def test_other_input_lengths_resample_positions(kind):
    enc = build_encoder(tiny_cfg(kind=kind, n_frames=1024)).eval()
    assert enc.embed._pos_embed(enc.embed.grid) is enc.embed.pos_embed
    for frames, tokens in [(1024, 32), (3072, 96), (512, 16)]:  # 10 s, 30 s, 5 s
        out = enc(torch.randn(1, 128, frames))
        assert out.tokens.shape == (1, tokens, 32)
        assert torch.isfinite(out.pooled).all()


# ---------------------------------------------------------------------------------------------------- every model


def _encoder_case(kind, preset, pool):
    enc = build_encoder(encoder_preset(preset, kind=kind, pool=pool, depth=1, n_frames=256, scan_backend="torch"))
    x = logmel()

    def loss():
        out = enc(x)
        total = out.pooled.square().mean() + sum(h.sin().mean() for h in out.layers) + out.tokens.cos().mean()
        return total, out.pooled

    return enc, loss


def _heads_case():
    enc = build_encoder(tiny_cfg(depth=3))
    cls_head = ClassificationHead(32, n_classes=7)
    anomaly = AnomalyHead(32, layer_indices=[0, 1], emb_dim=16, hidden=24, dropout=0.1)
    grl, domain = GradientReversal(0.5), DomainClassifier(16, hidden=8, n_domains=2)
    model = nn.ModuleDict(dict(enc=enc, cls=cls_head, anomaly=anomaly, domain=domain))
    x, labels, domains = logmel(4), torch.tensor([0, 3, 6, 1]), torch.tensor([0, 1, 0, 1])

    def loss():
        out = enc(x)
        z = anomaly(out.pooled, out.layers)
        total = F.cross_entropy(cls_head(out.pooled), labels) + z.square().mean()
        return total + F.cross_entropy(domain(grl(z)), domains), z

    return model, loss


def _ae_case():
    ae = DCASEAutoencoder(AEConfig())
    vectors = models.frame_context_vectors(logmel(2, frames=12)).reshape(-1, 640)

    def loss():
        recon = ae(vectors)
        return F.mse_loss(recon, vectors), recon

    return ae, loss


CASES = {f"{kind}-{preset}-{pool}": (lambda k=kind, p=preset, q=pool: _encoder_case(k, p, q))
         for kind in ("ssm", "ast") for preset in ("tiny", "small", "base") for pool in ("cls_middle", "mean")}
CASES["heads-grl-domain"] = _heads_case
CASES["dcase-ae"] = _ae_case


@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward_every_parameter_gets_gradient(case):
    torch.manual_seed(0)
    model, loss_fn = CASES[case]()
    model.train()
    loss, output = loss_fn()
    assert torch.isfinite(output).all() and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_presets_have_the_reference_sizes():
    for name, dim in (("tiny", 192), ("small", 384), ("base", 768)):
        cfg = encoder_preset(name)
        assert (cfg.dim, cfg.depth, cfg.d_state, cfg.expand, cfg.d_conv) == (dim, 24, 16, 2, 4)
        assert cfg.dim % cfg.n_heads == 0
    with pytest.raises(ValueError, match="preset"):
        encoder_preset("huge")
    with pytest.raises(ValueError, match="unknown EncoderConfig field"):
        encoder_preset("tiny", width=3)


# ---------------------------------------------------------------------------------------------------- SSM encoder


def long_memory_(enc) -> None:
    """Put every SSM into a trained-like regime: slow decay (A = -0.05, Δ ≈ 0.7) and larger B, C.

    At initialisation B, C and Δ are small, so information crosses a sequence only faintly (it does
    cross: see the bitwise check below); this makes the effect large enough to assert on clearly.
    """
    with torch.no_grad():
        for block in enc.blocks:
            block.mixer.A_log.fill_(math.log(0.05))
            block.mixer.dt_bias.zero_()
            block.mixer.x_proj_weight.mul_(20.0)
            block.mixer.out_proj.weight.mul_(20.0)


def test_encoder_is_bidirectional():
    enc = build_encoder(tiny_cfg(depth=2, pool="mean")).eval()
    h = torch.randn(1, 10, 32)

    def blocks(x):
        for block in enc.blocks:
            x = block(x)
        return x

    last_changed = h.clone()
    last_changed[:, -1] += torch.randn(32)  # not a constant shift: the pre-norm LayerNorm would remove it
    first_changed = h.clone()
    first_changed[:, 0] += torch.randn(32)
    with torch.no_grad():
        # at initialisation the mixer's cross-sequence effect is tiny but real (a severed path would give
        # bit-identical outputs; the residual stream would round it away, so look at the mixer itself)
        mixer = enc.blocks[0].mixer
        assert not torch.equal(mixer(last_changed)[:, 0], mixer(h)[:, 0])
        assert not torch.equal(mixer(first_changed)[:, -1], mixer(h)[:, -1])
        long_memory_(enc)
        base = blocks(h)
        assert (blocks(last_changed)[:, 0] - base[:, 0]).abs().max() > 1e-2  # the future reaches the start
        assert (blocks(first_changed)[:, -1] - base[:, -1]).abs().max() > 1e-2  # the past reaches the end
        # the same through the whole encoder: the last frames of the clip change the first token
        x = logmel(1)
        late = x.clone()
        late[..., -64:] += 3.0 * torch.randn(128, 64)
        assert (enc(late).tokens[:, 0] - enc(x).tokens[:, 0]).abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_each_direction_is_causal(backend):
    mixer = BiMambaMixer(tiny_cfg(scan_backend=backend))
    x = torch.randn(2, 12, 32)
    t = 5
    future = x.clone()
    future[:, t + 1:] += torch.randn_like(future[:, t + 1:])
    past = x.clone()
    past[:, :t] += torch.randn_like(past[:, :t])
    with torch.no_grad():
        y_f, y_b, _ = mixer.directional_outputs(x)
        y_f_future, y_b_future, _ = mixer.directional_outputs(future)
        y_f_past, y_b_past, _ = mixer.directional_outputs(past)
    # forward direction: positions ≤ t are blind to later tokens, later positions see them
    torch.testing.assert_close(y_f_future[:, : t + 1], y_f[:, : t + 1], rtol=0, atol=1e-6)
    assert (y_f_future[:, t + 1:] - y_f[:, t + 1:]).abs().max() > 1e-4
    # backward direction: positions ≥ t are blind to earlier tokens
    torch.testing.assert_close(y_b_past[:, t:], y_b[:, t:], rtol=0, atol=1e-6)
    assert (y_b_past[:, :t] - y_b[:, :t]).abs().max() > 1e-4


def test_scan_backends_give_the_same_encoder():
    torch.manual_seed(0)
    enc = build_encoder(tiny_cfg(depth=2, scan_backend="torch"))
    x = logmel(1)
    fast = enc(x).pooled
    enc.set_scan_backend("reference")
    torch.testing.assert_close(enc(x).pooled, fast, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="scan_backend"):
        enc.set_scan_backend("gpu")


def test_encoder_output_structure_and_interfaces():
    cfg = tiny_cfg(depth=3)
    enc = build_encoder(cfg)
    out = enc(logmel(2).unsqueeze(1))  # (B, 1, H, W) is accepted as well as (B, H, W)
    assert out.pooled.shape == (2, 32) and len(out.layers) == 3 and out.tokens.shape == (2, 8, 32)
    assert torch.equal(out.layers[-1], out.pooled)
    assert isinstance(enc.blocks, nn.ModuleList) and len(enc.blocks) == 3
    assert isinstance(enc.embed, PixelUnshufflePatchEmbed) and isinstance(enc.norm, nn.LayerNorm)
    assert isinstance(build_encoder(tiny_cfg(norm="rmsnorm")).norm, nn.RMSNorm)
    with pytest.raises(ValueError, match="log-mel"):
        enc(torch.randn(2, 2, 128, 256))


def test_input_normalisation_uses_config_statistics():
    torch.manual_seed(0)
    plain = build_encoder(tiny_cfg()).eval()
    normed = build_encoder(tiny_cfg(input_mean=-40.0, input_std=12.0)).eval()
    normed.load_state_dict(plain.state_dict())
    x = logmel(2) * 12.0 - 40.0
    with torch.no_grad():
        torch.testing.assert_close(normed(x).pooled, plain((x + 40.0) / 12.0).pooled)
    with pytest.raises(ValueError, match="input_std"):
        tiny_cfg(input_std=0.0)


@pytest.mark.parametrize(
    "field, value",
    [("kind", "cnn"), ("dim", 0), ("pool", "max"), ("norm", "batch"), ("scan_backend", "gpu"), ("depth", -1),
     ("dropout", 1.5), ("mlp_ratio", -1.0)],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_cfg(**{field: value})


def test_ast_heads_must_divide_width():
    with pytest.raises(ValueError, match="n_heads"):
        tiny_cfg(kind="ast", n_heads=5)


def test_config_dict_round_trip():
    cfg = tiny_cfg(kind="ast", input_mean=-3.5, dt_rank=4)
    d = cfg.to_dict()
    assert all(isinstance(v, (str, int, float, type(None))) for v in d.values())
    assert EncoderConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown EncoderConfig field"):
        EncoderConfig.from_dict({**d, "colour": "red"})


# ---------------------------------------------------------------------------------------------------- heads


def test_anomaly_head_fusion_is_eq4_and_eq5():
    torch.manual_seed(0)
    head = AnomalyHead(16, layer_indices=[0, 2, -1], emb_dim=8, hidden=12, dropout=0.3)
    with torch.no_grad():
        head.alpha.copy_(torch.tensor([0.3, -1.0, 2.0]))
    beta = head.fusion_weights()
    torch.testing.assert_close(beta, torch.softmax(head.alpha, 0))
    assert torch.all(beta > 0) and torch.isclose(beta.sum(), torch.tensor(1.0))
    pooled, layers = torch.randn(4, 16), [torch.randn(4, 16) for _ in range(4)]
    h = head.fused_feature(pooled, layers)
    torch.testing.assert_close(h.norm(dim=-1), torch.ones(4))
    manual = pooled + beta[0] * layers[0] + beta[1] * layers[2] + beta[2] * layers[3]
    torch.testing.assert_close(h, manual / manual.norm(dim=-1, keepdim=True))
    with pytest.raises(ValueError, match="out of range"):
        head.fused_feature(pooled, layers[:2])


def test_anomaly_head_eval_is_deterministic_and_train_is_not():
    torch.manual_seed(0)
    head = AnomalyHead(16, layer_indices=[0], emb_dim=8, hidden=32, dropout=0.5)
    pooled, layers = torch.randn(6, 16), [torch.randn(6, 16)]
    head.train()
    assert not torch.equal(head(pooled, layers), head(pooled, layers))  # dropout active
    head.eval()
    z = head(pooled, layers)
    assert z.shape == (6, 8) and torch.equal(z, head(pooled, layers))
    torch.testing.assert_close(head(pooled[:1], [layers[0][:1]]), z[:1])  # no batch statistics in eval


def test_anomaly_head_without_intermediate_layers():
    head = AnomalyHead(16, layer_indices=[], emb_dim=8, hidden=12)
    pooled = torch.randn(3, 16)
    torch.testing.assert_close(head.fused_feature(pooled, []), F.normalize(pooled, dim=-1))
    assert head.fusion_weights().numel() == 0


def test_gradient_reversal_is_exact():
    torch.manual_seed(0)
    x = torch.randn(5, 7, requires_grad=True)
    net = nn.Sequential(nn.Linear(7, 3), nn.Tanh())
    for scale in (1.0, 0.37, 2.5):
        (g_plain,) = torch.autograd.grad(net(x).square().sum(), x)
        (g_rev,) = torch.autograd.grad(net(grad_reverse(x, scale)).square().sum(), x)
        assert torch.equal(g_rev, -scale * g_plain)
        assert torch.equal(grad_reverse(x, scale), x)
    grl = GradientReversal(0.5)
    grl.scale = 3.0  # schedules change λ between steps
    (g_mod,) = torch.autograd.grad(net(grl(x)).square().sum(), x)
    (g_plain,) = torch.autograd.grad(net(x).square().sum(), x)
    assert torch.equal(g_mod, -3.0 * g_plain)


def test_domain_classifier_and_classification_head_shapes():
    assert DomainClassifier(16, hidden=8)(torch.randn(3, 16)).shape == (3, 2)
    assert DomainClassifier(16, hidden=8, n_domains=3)(torch.randn(3, 16)).shape == (3, 3)
    assert ClassificationHead(16, 7)(torch.randn(3, 16)).shape == (3, 7)
    with pytest.raises(ValueError, match="n_domains"):
        DomainClassifier(16, n_domains=1)


# ---------------------------------------------------------------------------------------------------- AE baseline


def test_frame_context_vectors_concatenate_consecutive_frames():
    x = logmel(2, frames=10)
    v = models.frame_context_vectors(x, n_frames=5)
    assert v.shape == (2, 6, 640)
    for t in (0, 3, 5):
        assert torch.equal(v[1, t], torch.cat([x[1, :, t + k] for k in range(5)]))
    assert models.frame_context_vectors(x[0]).shape == (1, 6, 640)
    with pytest.raises(ValueError, match="n_frames=5"):
        models.frame_context_vectors(x[:, :, :3])


def test_autoencoder_architecture_matches_the_baseline():
    ae = DCASEAutoencoder()
    linears = [m for m in ae.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == (
        [(640, 128)] + [(128, 128)] * 3 + [(128, 8)] + [(8, 128)] + [(128, 128)] * 3 + [(128, 640)]
    )
    assert sum(isinstance(m, nn.BatchNorm1d) for m in ae.modules()) == 9
    assert ae(torch.randn(4, 640)).shape == (4, 640)
    with pytest.raises(ValueError, match="640"):
        ae(torch.randn(4, 128))
    with pytest.raises(ValueError, match="bottleneck"):
        AEConfig(bottleneck=0)


def test_ae_scores_mse_and_mahalanobis():
    torch.manual_seed(0)
    ae = DCASEAutoencoder().eval()
    x = logmel(3, frames=9)
    with torch.no_grad():
        errors = models.reconstruction_errors(ae, x)
        vectors = models.frame_context_vectors(x)
        manual = vectors - ae(vectors.reshape(-1, 640)).view(3, 5, 640)
    torch.testing.assert_close(errors, manual)
    torch.testing.assert_close(models.mse_scores(errors), manual.square().mean(dim=(1, 2)))

    # MAHALA as the official code: covariance of residual FRAMES (M values) summed from per-batch centred
    # scatter matrices over (vectors − 1); the score is mᵀ Σ⁻¹ m with m the clip's mean residual frame
    g = torch.Generator().manual_seed(1)
    m_dim, n_frames = 2, 5
    acc = models.ResidualCovariance(m_dim)
    scale = {"source": torch.tensor([1.0, 3.0]), "target": torch.tensor([0.2, 0.2])}
    for _ in range(20):  # 20 batches of 200 vectors, each 5 frames of 2 values, half of each domain
        doms = ["source"] * 100 + ["target"] * 100
        frames = torch.randn(200, n_frames, m_dim, generator=g)
        frames = frames * torch.stack([scale[d] for d in doms])[:, None, :]
        acc.add(frames.reshape(200, n_frames * m_dim), doms)
    fit = acc.finish()
    assert fit.domains == ["source", "target"]
    cov_source = torch.linalg.inv(fit.precisions[0].double())
    # per-frame variances times the 5 frames per vector (the official divisor counts vectors, not frames)
    torch.testing.assert_close(cov_source.diagonal(), torch.tensor([5.0, 45.0], dtype=torch.float64), rtol=0.1, atol=0)
    query = torch.tensor([[1.0, 0.0] * n_frames, [0.0, 0.0] * n_frames]).reshape(2, 1, n_frames * m_dim)
    per = models.mahalanobis_scores(query, fit, per_domain=True)
    m = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(per[0], torch.stack([m @ fit.precisions[k] @ m for k in range(2)]))
    torch.testing.assert_close(models.mahalanobis_scores(query, fit), per.min(dim=1).values)
    assert per[1].max() == 0  # the mean residual is not centred: a zero residual scores 0 in every domain
    restored = models.MahalanobisModel.from_dict(fit.to_dict())
    assert torch.equal(models.mahalanobis_scores(query, restored), models.mahalanobis_scores(query, fit))
    only_source = models.ResidualCovariance(m_dim)
    only_source.add(torch.randn(50, n_frames * m_dim, generator=g), ["source"] * 50)
    copied = only_source.finish()  # no target vectors: the target covariance is the source's, as the baseline does
    assert torch.equal(copied.precisions[0], copied.precisions[1])
    with pytest.raises(ValueError, match="at least 2"):
        one = models.ResidualCovariance(m_dim)
        one.add(torch.randn(1, n_frames * m_dim), ["source"])
        one.finish()


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_save_and_load_encoder_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(depth=2, input_mean=-20.0, input_std=5.0)
    enc = build_encoder(cfg).eval()
    path = tmp_path / "run" / "encoder.pt"
    models.save_model(path, enc, {"encoder": cfg.to_dict()}, extra={"epoch": 3})
    assert sorted(os.listdir(path.parent)) == ["encoder.pt"]  # no temporary file left behind
    state = torch.load(path, weights_only=True)
    assert state["extra"] == {"epoch": 3} and state["configs"]["encoder"]["input_mean"] == -20.0
    loaded = models.load_encoder(path).eval()
    assert loaded.config == cfg
    x = logmel(2)
    with torch.no_grad():
        assert torch.equal(loaded(x).pooled, enc(x).pooled)
    assert models.load_encoder(path, scan_backend="reference").config.scan_backend == "reference"


def test_save_and_load_autoencoder(tmp_path):
    ae = DCASEAutoencoder(AEConfig(bottleneck=4)).eval()
    models.save_model(tmp_path / "ae.pt", ae, {"autoencoder": ae.config.to_dict()})
    loaded = models.load_autoencoder(tmp_path / "ae.pt").eval()
    assert loaded.config == ae.config
    x = torch.randn(3, 640)
    assert torch.equal(loaded(x), ae(x))
    with pytest.raises(CheckpointError, match="'encoder' config"):
        models.load_encoder(tmp_path / "ae.pt")
    models.save_model(tmp_path / "ae.pt", ae, {"autoencoder": {**ae.config.to_dict(), "hidden": 64}})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        models.load_autoencoder(tmp_path / "ae.pt")


def test_load_encoder_from_a_wrapper_model(tmp_path):
    cfg = tiny_cfg()
    wrapper = nn.ModuleDict({"encoder": build_encoder(cfg), "head": ClassificationHead(32, 3)})
    models.save_model(tmp_path / "m.pt", wrapper, {"encoder": cfg.to_dict()})
    loaded = models.load_encoder(tmp_path / "m.pt")
    assert torch.equal(loaded.embed.proj.weight, wrapper["encoder"].embed.proj.weight)


def test_config_weight_mismatch_is_a_clear_error(tmp_path):
    cfg = tiny_cfg(depth=2)
    enc = build_encoder(cfg)
    path = tmp_path / "enc.pt"
    models.save_model(path, enc, {"encoder": {**cfg.to_dict(), "depth": 3}})
    with pytest.raises(CheckpointError, match="missing: blocks.2"):
        models.load_encoder(path)
    models.save_model(path, enc, {"encoder": {**cfg.to_dict(), "d_state": 8}})
    with pytest.raises(CheckpointError, match="shape mismatch: .*A_log"):
        models.load_encoder(path)
    models.save_model(path, enc, {"encoder": {**cfg.to_dict(), "pool": "sideways"}})
    with pytest.raises(CheckpointError, match="pool"):
        models.load_encoder(path)
    models.save_model(path, enc, {"head": {}})
    with pytest.raises(CheckpointError, match="'encoder' config"):
        models.load_encoder(path)


def test_checkpoint_refuses_objects_and_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="to_dict"):
        models.save_checkpoint(tmp_path / "c.pt", {"config": tiny_cfg()})
    assert not any(tmp_path.iterdir())
    with pytest.raises(CheckpointError, match="not found"):
        models.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a checkpoint of this tool .*not loaded"):
        models.load_checkpoint(tmp_path / "junk.pt")
    models.save_checkpoint(tmp_path / "ok.pt", {"a": [1, 2.5, "x", None], "t": torch.arange(3)})
    state = models.load_checkpoint(tmp_path / "ok.pt")
    assert state["a"] == [1, 2.5, "x", None] and torch.equal(state["t"], torch.arange(3))


def test_load_weights_reports_mismatches():
    small, other = nn.Linear(3, 2), nn.Linear(4, 2)
    with pytest.raises(CheckpointError, match="shape mismatch: weight"):
        models.load_weights(small, other.state_dict())
    with pytest.raises(CheckpointError, match="unexpected: extra"):
        models.load_weights(small, {**small.state_dict(), "extra": torch.zeros(1)})

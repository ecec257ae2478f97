"""Mamba-2 (SSD) mixer: the chunked scan against the step-by-step recurrence, the mixer, the encoder with
``mixer="mamba2"``, checkpoints and the config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from models import EncoderConfig, build_encoder, encoder_preset
from models.ssd import TORCH_CHUNK, BiMamba2Mixer, cuda_ssd_available, resolve_ssd_backend, ssd_chunked, ssd_reference
from models.ssm import BiMambaMixer

ARG_NAMES = ("x", "dt", "A", "B", "C", "D", "dt_bias")
REPO = Path(__file__).resolve().parents[1]


def make_inputs(batch, length, heads, headdim, groups, n_state, seed=0, device="cpu"):
    """Random SSD inputs in mamba-ssm's layout, all requiring grad. Δ = softplus(dt + dt_bias) mostly in
    (0.2, 1.5) and A in [-2, -0.05]: short and long memories both present."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_()

    return {
        "x": rnd(batch, length, heads, headdim),
        "dt": rnd(batch, length, heads, scale=0.5),
        "A": (-torch.rand(heads, generator=g) * 2 - 0.05).to(device).requires_grad_(),
        "B": rnd(batch, length, groups, n_state),
        "C": rnd(batch, length, groups, n_state),
        "D": rnd(heads),
        "dt_bias": rnd(heads, scale=0.5),
    }


def run(fn, inputs, **kwargs):
    """Output and the gradients of a fixed random projection of it w.r.t. every input."""
    y = fn(**inputs, dt_softplus=True, **kwargs)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(123)).to(y)
    grads = torch.autograd.grad((y * weights).sum(), [inputs[k] for k in ARG_NAMES])
    return [y] + list(grads)


def worst_error(actual, expected) -> tuple[float, str]:
    """max |a - e| / max(1, max |e|) over the output and every gradient, and the name where it occurs."""
    names = ("y",) + ARG_NAMES
    errors = [((a.double() - e.double()).abs().max() / max(1.0, e.abs().max().item())).item()
              for a, e in zip(actual, expected)]
    worst = max(range(len(errors)), key=errors.__getitem__)
    return errors[worst], names[worst]


# ---------------------------------------------------------------------------------------------------- the scan


@pytest.mark.parametrize("length, chunk", [(1, TORCH_CHUNK), (7, TORCH_CHUNK), (7, 4), (64, TORCH_CHUNK),
                                           (100, TORCH_CHUNK), (512, TORCH_CHUNK)])
@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_ssd_matches_the_step_by_step_recurrence(length, chunk, groups):
    """Forward and every gradient, float32, within 1e-5 absolute where values are ≤ 1 and 1e-5 of the tensor's
    largest element where they are larger: the gradients of A and dt_bias sum batch × L × headdim terms and
    reach ~100 at L = 512, where element-wise 1e-5 is below float32's own rounding. 7 with chunk 4 and 100 with
    chunk 16 are not multiples of the chunk; groups = 2 is how the mixer runs both directions in one call."""
    inputs = make_inputs(batch=2, length=length, heads=4, headdim=3, groups=groups, n_state=5)
    error, where = worst_error(run(ssd_chunked, inputs, chunk=chunk), run(ssd_reference, inputs))
    assert error <= 1e-5, (where, error)


def _float64(inputs):
    return {k: v.detach().double().requires_grad_() for k, v in inputs.items()}


@pytest.mark.parametrize("chunk", [TORCH_CHUNK, 64])
def test_chunked_ssd_is_as_accurate_as_the_loop(chunk):
    """Against the float64 recurrence, the chunked float32 scan errs no more than twice the float32 loop. Segment
    sums taken as differences of within-chunk cumulative sums lose digits to cancellation and fail this at chunk
    64 (10× the loop's error; the cancellation grows with the chunk)."""
    inputs = make_inputs(batch=2, length=512, heads=4, headdim=3, groups=2, n_state=5, seed=1)
    truth = run(ssd_reference, _float64(inputs))
    chunked, _ = worst_error(run(ssd_chunked, inputs, chunk=chunk), truth)
    loop, _ = worst_error(run(ssd_reference, inputs), truth)
    assert chunked <= 2 * loop + 1e-7, (chunked, loop)


def test_chunked_ssd_is_finite_under_very_fast_decay():
    """Δ·A ≈ -300 per step: cumulative sums reach -10⁴ within a chunk; nothing may exponentiate their negation."""
    inputs = make_inputs(batch=1, length=70, heads=2, headdim=3, groups=1, n_state=4)
    with torch.no_grad():
        inputs["dt_bias"].fill_(20.0)
        inputs["A"].fill_(-16.0)
    chunked, reference = run(ssd_chunked, inputs, chunk=64), run(ssd_reference, inputs)
    assert all(torch.isfinite(t).all() for t in chunked)
    error, where = worst_error(chunked, reference)
    assert error <= 1e-5, (where, error)


def test_float64_inputs_run_in_float64():
    inputs = {k: v.detach() for k, v in make_inputs(1, 9, 2, 2, 1, 3).items()}
    y = ssd_chunked(**{k: v.double() for k, v in inputs.items()}, dt_softplus=True)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y.float(), ssd_chunked(**inputs, dt_softplus=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, shape", [("dt", (1, 5, 3)), ("A", (2, 1)), ("B", (1, 5, 3, 4)), ("C", (1, 5, 1, 2)),
                                         ("D", (3,)), ("dt_bias", (1,))])
def test_shape_errors_name_the_argument(name, shape):
    inputs = {k: v.detach() for k, v in make_inputs(1, 5, 2, 3, 1, 4).items()}
    inputs[name] = torch.randn(shape)
    with pytest.raises(ValueError, match=rf"^{name} must"):
        ssd_chunked(**inputs)


def test_backend_choice():
    assert resolve_ssd_backend("auto", "cpu") == "torch"
    assert resolve_ssd_backend("reference", "cpu") == "reference"
    with pytest.raises(ValueError, match="'cpp' is the compiled Mamba-1 scan"):
        resolve_ssd_backend("cpp", "cpu")
    if not cuda_ssd_available():
        with pytest.raises(RuntimeError, match="scan_backend='cuda'"):
            resolve_ssd_backend("cuda", "cpu")


def test_mamba_ssm_is_not_imported_by_the_mamba2_encoder():
    code = ("import sys, torch, models\n"
            "enc = models.build_encoder(models.encoder_preset('tiny', dim=32, depth=1, n_frames=256, mixer='mamba2'))\n"
            "enc(torch.randn(1, 128, 256))\n"
            "assert 'mamba_ssm' not in sys.modules, 'imported on CPU'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=300)


# ---------------------------------------------------------------------------------------------------- the mixer


def mamba2_cfg(**overrides) -> EncoderConfig:
    return encoder_preset("tiny", **{**dict(dim=32, depth=1, n_frames=256, mixer="mamba2"), **overrides})


@pytest.mark.parametrize("length", [7, 64])
def test_mixer_directions_match_the_reference_scan(length):
    """Both directions (the backward one on time-reversed input, its own B/C group) and every parameter's
    gradient, the chunked scan against the loop, exactly as the mixer calls them."""
    torch.manual_seed(0)
    mixer = BiMamba2Mixer(mamba2_cfg(dim=16))
    x = torch.randn(2, length, 16, requires_grad=True)
    results = {}
    for backend in ("reference", "torch"):
        mixer.scan_backend = backend
        mixer.zero_grad(set_to_none=True)
        x.grad = None
        y_f, y_b, _ = mixer.directional_outputs(x)
        y = mixer(x)  # through the fusion gate, the norm and the output projection as well
        weights = torch.linspace(-1, 1, y_f.numel()).view_as(y_f)
        ((y_f * weights).sum() + (y_b * weights.flip(-1)).sum() + (y * y.detach()).sum()).backward()
        results[backend] = [y_f.detach(), y_b.detach(), x.grad.clone()] + [p.grad.clone() for p in mixer.parameters()]
    for got, want in zip(results["torch"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_each_direction_is_causal():
    torch.manual_seed(0)
    mixer = BiMamba2Mixer(mamba2_cfg())
    x = torch.randn(2, 40, 32)  # several chunks of 16, so the state is carried across chunk boundaries
    t = 20
    future, past = x.clone(), x.clone()
    future[:, t + 1:] += torch.randn_like(future[:, t + 1:])
    past[:, :t] += torch.randn_like(past[:, :t])
    with torch.no_grad():
        y_f, y_b, _ = mixer.directional_outputs(x)
        y_f_future, _, _ = mixer.directional_outputs(future)
        _, y_b_past, _ = mixer.directional_outputs(past)
    torch.testing.assert_close(y_f_future[:, : t + 1], y_f[:, : t + 1], rtol=0, atol=1e-6)
    assert (y_f_future[:, t + 1:] - y_f[:, t + 1:]).abs().max() > 1e-4
    torch.testing.assert_close(y_b_past[:, t:], y_b[:, t:], rtol=0, atol=1e-6)
    assert (y_b_past[:, :t] - y_b[:, :t]).abs().max() > 1e-4
    # and information crosses the whole sequence, beyond the conv's reach, in each direction
    late, early = x.clone(), x.clone()
    late[:, -1] += 5.0 * torch.randn(32)
    early[:, 0] += 5.0 * torch.randn(32)
    with torch.no_grad():
        assert (mixer.directional_outputs(late)[1][:, 0] - y_b[:, 0]).abs().max() > 1e-6
        assert (mixer.directional_outputs(early)[0][:, -1] - y_f[:, -1]).abs().max() > 1e-6


def test_mixer_initialisation():
    cfg = mamba2_cfg(dim=64)
    mixer = BiMamba2Mixer(cfg)
    heads = cfg.inner_dim // cfg.headdim
    assert mixer.A_log.shape == mixer.dt_bias.shape == mixer.D.shape == (2, heads)
    A = -torch.exp(mixer.A_log)
    assert (A <= -1.0).all() and (A >= -16.0).all() and A.std() > 1.0  # a spread of decays over the heads
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    assert (dt >= cfg.dt_min * 0.999).all() and (dt <= cfg.dt_max * 1.001).all()
    assert torch.equal(mixer.D, torch.ones_like(mixer.D))


# ---------------------------------------------------------------------------------------------------- the encoder


@pytest.mark.parametrize("preset, pool", [("tiny", "cls_middle"), ("small", "mean")])
def test_mamba2_encoder_forward_backward_every_parameter_gets_gradient(preset, pool):
    torch.manual_seed(0)
    enc = build_encoder(encoder_preset(preset, mixer="mamba2", pool=pool, depth=1, n_frames=256))
    assert all(isinstance(block.mixer, BiMamba2Mixer) for block in enc.blocks)
    enc.train()
    out = enc(torch.randn(2, 128, 256, generator=torch.Generator().manual_seed(0)))
    loss = out.pooled.square().mean() + sum(h.sin().mean() for h in out.layers) + out.tokens.cos().mean()
    assert torch.isfinite(out.pooled).all() and torch.isfinite(loss)
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_mamba2_checkpoint_round_trip_and_old_checkpoints_load_as_mamba1(tmp_path):
    torch.manual_seed(0)
    cfg = mamba2_cfg(depth=2)
    enc = build_encoder(cfg).eval()
    models.save_model(tmp_path / "m2.pt", enc, {"encoder": cfg.to_dict()})
    loaded = models.load_encoder(tmp_path / "m2.pt").eval()
    assert loaded.config == cfg and loaded.config.mixer == "mamba2"
    x = torch.randn(2, 128, 256)
    with torch.no_grad():
        assert torch.equal(loaded(x).pooled, enc(x).pooled)
    # a checkpoint from before the field existed records neither mixer nor headdim: it is a Mamba-1 encoder
    old_cfg = mamba2_cfg(depth=2, mixer="mamba1")
    old = build_encoder(old_cfg)
    recorded = {k: v for k, v in old_cfg.to_dict().items() if k not in ("mixer", "headdim")}
    models.save_model(tmp_path / "old.pt", old, {"encoder": recorded})
    restored = models.load_encoder(tmp_path / "old.pt")
    assert restored.config.mixer == "mamba1" and isinstance(restored.blocks[0].mixer, BiMambaMixer)
    # Mamba-2 weights under a Mamba-1 config are refused, with the mismatch named
    models.save_model(tmp_path / "wrong.pt", enc, {"encoder": {**cfg.to_dict(), "mixer": "mamba1"}})
    with pytest.raises(models.CheckpointError, match="A_log"):
        models.load_encoder(tmp_path / "wrong.pt")


def test_config_errors():
    with pytest.raises(ValueError, match=r"^mixer must be one of \('mamba1', 'mamba2'\), got 'mamba3'$"):
        EncoderConfig(mixer="mamba3")
    with pytest.raises(ValueError, match="headdim=48 must divide"):
        mamba2_cfg(headdim=48)  # E = 64
    with pytest.raises(ValueError, match="headdim must be a positive integer"):
        mamba2_cfg(headdim=0)
    with pytest.raises(ValueError, match="'cpp'"):
        mamba2_cfg(scan_backend="cpp")
    assert mamba2_cfg(kind="ast", headdim=48, n_heads=2).mixer == "mamba2"  # no SSM, nothing to divide


# ---------------------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_ssd_available(), reason="needs CUDA and mamba-ssm's SSD kernel")
@pytest.mark.parametrize("length", [1, 7, 64, 512, 700])
def test_cuda_kernel_matches_reference(length):
    inputs = make_inputs(batch=2, length=length, heads=4, headdim=16, groups=2, n_state=16, device="cuda")
    error, where = worst_error(run(models.ssd.ssd_cuda, inputs), run(ssd_reference, inputs))
    # the kernel sums in another order, with float32 matrix products in TF32 (Triton's default): 1e-2 of the largest
    # element, still far below what a wrong mask, decay or direction gives (errors of order 1)
    assert error <= 1e-2, (where, error)
    assert resolve_ssd_backend("auto", "cuda") == "cuda"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_chunked_ssd_runs_on_cuda_tensors():
    inputs = make_inputs(batch=2, length=100, heads=4, headdim=3, groups=2, n_state=5, device="cuda")
    error, where = worst_error(run(ssd_chunked, inputs), run(ssd_reference, inputs))
    assert error <= 1e-4, (where, error)

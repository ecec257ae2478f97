"""Tests for bohb_search.pseudo_outliers: mel geometry, each perturbation, the mix, the config."""

from __future__ import annotations

import math

import pytest
import torch

from bohb_search.train.mel_geometry import hz_to_mel, hz_to_mel_bin, mel_bin_centers_hz, tone_response, white_response
from bohb_search.train.pseudo_outliers import (
    ALL_KINDS,
    OTHER_MACHINE,
    PERTURBATIONS,
    PseudoOutlierConfig,
    make_pseudo_outliers,
)

SR, N_FFT, HOP, N_MELS = 16000, 1024, 156, 128


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _htk_center(m: int, n_mels: int = N_MELS, f_max: float = 8000.0) -> float:
    """Independent (math-module) HTK peak frequency of mel filter m, f_min = 0."""
    top = 2595.0 * math.log10(1.0 + f_max / 700.0)
    return 700.0 * (10.0 ** ((m + 1) * top / (n_mels + 1) / 2595.0) - 1.0)


@pytest.fixture(scope="module")
def logmels() -> torch.Tensor:
    """Four realistic 1-s log-mels: a machine-like hum with harmonics, a whine and noise, passed
    through the paper's front end (STFT 1024 / hop 156, HTK mel 0-8 kHz, 10·log10, -100 dB floor)."""
    g = gen(1234)
    t = torch.arange(SR) / SR
    fb = tone_response(torch.linspace(0.0, SR / 2.0, N_FFT // 2 + 1), N_MELS).float()  # (513, 128)
    out = []
    for _ in range(4):
        f0 = 100.0 + 60.0 * torch.rand(1, generator=g).item()
        wave = sum((0.4 / k) * torch.sin(2 * math.pi * k * f0 * t) for k in range(1, 5))
        wave = wave + 0.2 * torch.sin(2 * math.pi * 2300.0 * t) + 0.05 * torch.randn(SR, generator=g)
        spec = torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
        mel = fb.T @ spec.abs() ** 2
        out.append(10.0 * torch.log10(mel.clamp_min(1e-10)))
    return torch.stack(out)  # (4, 128, 103)


def flat(level: float = -40.0, n: int = 2, frames: int = 64) -> torch.Tensor:
    return torch.full((n, N_MELS, frames), level)


# ---------------------------------------------------------------- mel geometry


def test_mel_geometry_matches_htk_formula():
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.02)  # HTK's anchor point
    centers = mel_bin_centers_hz(N_MELS, 0.0, 8000.0)
    for m in (0, 1, 63, 127):
        assert centers[m].item() == pytest.approx(_htk_center(m), rel=1e-9)
        assert hz_to_mel_bin(_htk_center(m), N_MELS) == pytest.approx(m, abs=1e-9)
    assert centers[63].item() == pytest.approx(1743.8, abs=0.1)


def test_tone_response_is_the_triangle_filterbank():
    centers = mel_bin_centers_hz(N_MELS)
    w = tone_response(centers[[40]], N_MELS)[0]
    assert w[40].item() == pytest.approx(1.0) and w.sum().item() == pytest.approx(1.0)
    # between two peaks the two triangles share the tone (weights linear in Hz, summing to 1)
    f = 0.25 * centers[40] + 0.75 * centers[41]
    w = tone_response(f.reshape(1), N_MELS)[0]
    assert w[40].item() == pytest.approx(0.25) and w[41].item() == pytest.approx(0.75)
    assert tone_response(torch.tensor([8500.0]), N_MELS).sum().item() == 0.0  # above f_max


def test_white_response_grows_with_filter_bandwidth():
    r = white_response(N_MELS, N_FFT, SR, 0.0, 8000.0)
    assert (r > 0).all()  # no empty filter at this resolution
    # sampled at 15.6 Hz STFT spacing the sums wiggle bin to bin, but widen along the axis
    octaves = r.view(8, 16).mean(dim=1)
    assert (octaves[1:] > octaves[:-1]).all()
    # a flat spectrum is ~10 dB louder in the top mel bin than in the bottom one
    assert 8.0 < 10.0 * math.log10(r[-1] / r[0]) < 13.0


# ---------------------------------------------------------------- every perturbation


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_perturbation_contract(kind, logmels):
    x = logmels.clone()
    y = PERTURBATIONS[kind](x, gen(0))
    assert torch.equal(x, logmels)  # input untouched
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    changed = (y - x).abs().amax(dim=(1, 2))
    assert (changed > 0.1).all(), f"{kind} left a clip (almost) unchanged: {changed}"
    # plausible dB range: never below the front end's floor, never far above the loudest input
    assert y.min() >= -100.0 - 1e-4
    assert y.max() <= x.max() + 12.0


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_perturbation_determinism(kind, logmels):
    a = PERTURBATIONS[kind](logmels, gen(7))
    b = PERTURBATIONS[kind](logmels, gen(7))
    c = PERTURBATIONS[kind](logmels, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_perturbation_half_precision_and_empty(kind, logmels):
    y = PERTURBATIONS[kind](logmels.half(), gen(0))
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    empty = logmels[:0]
    assert PERTURBATIONS[kind](empty, gen(0)).shape == empty.shape


def test_perturbations_do_not_use_global_rng(logmels):
    state = torch.get_rng_state()
    torch.manual_seed(1)
    a = make_pseudo_outliers(logmels, gen(5), PseudoOutlierConfig(ratio=3.0))[0]
    torch.manual_seed(2)
    b = make_pseudo_outliers(logmels, gen(5), PseudoOutlierConfig(ratio=3.0))[0]
    assert torch.equal(a, b)
    torch.set_rng_state(state)


def test_freq_shift_moves_a_peak_by_the_configured_bins():
    x = flat()
    x[:, 40, :] = 0.0  # a tone in bin 40
    cfg = PseudoOutlierConfig(freq_shift_bins=(2.0, 2.0))
    y = PERTURBATIONS["freq_shift"](x, gen(0), cfg)
    peaks = {int(p) for p in y.mean(dim=2).argmax(dim=1)}
    assert peaks <= {38, 42}
    assert torch.allclose(y.amax(dim=1), torch.zeros(2, 64))  # the tone moved whole
    # edges are filled by repeating the edge bin: the first/last bins stay at the background
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, -1], x[:, -1])


def test_pitch_shift_scales_frequency_through_the_mel_scale():
    x = flat()
    x[:, 100, :] = 0.0
    cfg = PseudoOutlierConfig(pitch_shift_percent=(4.0, 4.0))
    y = PERTURBATIONS["pitch_shift"](x, gen(0), cfg)
    f = mel_bin_centers_hz(N_MELS)[100].item()
    expected = {round(hz_to_mel_bin(f * 1.04, N_MELS)), round(hz_to_mel_bin(f / 1.04, N_MELS))}
    assert expected == {98, 102}  # at 5 kHz a 4 % speed change is about two mel bins
    assert {int(p) for p in y.mean(dim=2).argmax(dim=1)} <= expected


def test_time_stretch_rate_and_centre():
    frames = 101
    ramp = torch.arange(frames, dtype=torch.float32).expand(3, N_MELS, frames).clone()
    cfg = PseudoOutlierConfig(time_stretch_percent=(10.0, 10.0))
    y = PERTURBATIONS["time_stretch"](ramp, gen(0), cfg)
    assert torch.allclose(y[:, :, 50], ramp[:, :, 50])  # stretched about the centre
    slopes = (y[:, 0, 60] - y[:, 0, 40]) / 20.0
    for s in slopes:
        assert s.item() == pytest.approx(1.1, abs=1e-4) or s.item() == pytest.approx(0.9, abs=1e-4)
    assert y.min() >= 0 and y.max() <= frames - 1  # mirrored, never read outside the clip


def test_time_warp_keeps_ends_and_order():
    frames = 200
    ramp = torch.arange(frames, dtype=torch.float32).expand(4, N_MELS, frames).clone()
    y = PERTURBATIONS["time_warp"](ramp, gen(0))
    assert torch.allclose(y[..., 0], ramp[..., 0]) and torch.allclose(y[..., -1], ramp[..., -1])
    assert (y[..., 1:] >= y[..., :-1] - 1e-5).all()  # time order is preserved
    assert (y - ramp).abs().amax() > 2.0


def test_impulses_are_broadband_short_and_additive():
    x = flat(-60.0, n=3, frames=300)
    cfg = PseudoOutlierConfig(impulse_count=(1, 1), impulse_gain_db=(10.0, 10.0))
    y = PERTURBATIONS["impulses"](x, gen(0), cfg)
    rise = y - x
    assert (rise >= -1e-4).all()  # energy is only ever added
    tilt = white_response(N_MELS, N_FFT, SR, 0.0, 8000.0)
    for r, yi in zip(rise, y):
        hit = (r.amax(dim=0) > 1e-3).nonzero().flatten()
        # one click seen through a 1024-sample window at hop 156: at most 7 consecutive frames
        assert 1 <= hit.numel() <= 7 and hit[-1] - hit[0] == hit.numel() - 1
        peak = r[:, hit].sum(dim=0).argmax()
        assert (r[:, hit[peak]] > 1.0).all()  # broadband: every mel bin rises
        # the added power is white, so across bins it follows the filters' white-noise tilt
        added = 10.0 * torch.log10(10.0 ** (yi[:, hit[peak]].double() / 10.0) - 10.0 ** (-6.0))
        expected = 10.0 * math.log10(tilt[-1] / tilt[0])
        assert (added[-1] - added[0]).item() == pytest.approx(expected, abs=0.02)
        # over time the click follows the squared Hann window: rises to one peak, then decays,
        # with frames 3 hops (468 samples) from its centre ~20 dB down
        env = 10.0 ** (yi[-1, hit].double() / 10.0) - 10.0 ** (-6.0)
        top = int(env.argmax())
        assert (env[1 : top + 1] > env[:top]).all() and (env[top + 1 :] < env[top:-1]).all()
        assert env.max() / env.min() > 20.0


def test_noise_burst_is_a_band_over_a_segment():
    x = flat(-30.0, n=4, frames=100)
    cfg = PseudoOutlierConfig(noise_gain_db=(6.0, 6.0))
    y = PERTURBATIONS["noise_burst"](x, gen(0), cfg)
    assert ((y - x) >= -1e-4).all()
    for r in y - x:
        changed = r > 1e-4
        bins = changed.any(dim=1).nonzero().flatten()
        frames = changed.any(dim=0).nonzero().flatten()
        assert 4 <= bins.numel() <= 16 and bins[-1] - bins[0] == bins.numel() - 1
        assert 10 <= frames.numel() <= 40 and frames[-1] - frames[0] == frames.numel() - 1
    # burst power averages +6 dB over the background (~ +7 dB in sum), with a noisy texture
    burst = (y - x)[(y - x) > 1e-4]
    assert 4.0 < burst.mean().item() < 9.0 and burst.std().item() > 0.3


def test_harmonic_adds_2f_and_3f_at_the_right_mel_bins():
    x = flat(-60.0, n=2, frames=16)
    peak = 30
    x[:, peak, :] = 20.0
    cfg = PseudoOutlierConfig(
        harmonic_peaks=1, harmonic_level_db=(-6.0, -6.0), harmonic_third_offset_db=-6.0
    )
    y = PERTURBATIONS["harmonic"](x, gen(0), cfg)
    f = mel_bin_centers_hz(N_MELS)[peak]
    for h, level in ((2, 20.0 - 6.0), (3, 20.0 - 12.0)):
        w = tone_response((h * f).reshape(1), N_MELS)[0]
        b = int(w.argmax())
        assert b == math.floor(hz_to_mel_bin(h * f.item(), N_MELS) + 0.5)
        expected = 10.0 * math.log10(10 ** (-6.0) + 10 ** (level / 10.0) * w[b].item())
        assert torch.allclose(y[:, b, :], torch.full((2, 16), expected), atol=1e-3)
    touched = (y - x).abs().amax(dim=(0, 2)) > 1e-4
    allowed = (tone_response(torch.stack([2 * f, 3 * f]), N_MELS) > 0).any(dim=0)
    assert not (touched & ~allowed).any()  # nothing outside the two harmonic triangles
    assert torch.equal(y[:, peak], x[:, peak])  # the fundamental itself is unchanged


def test_amplitude_mod_is_a_periodic_broadband_gain():
    x = flat(-20.0, n=3, frames=300) + torch.linspace(0, 10, N_MELS).view(1, -1, 1)
    cfg = PseudoOutlierConfig(am_depth=(0.3, 0.3))
    y = PERTURBATIONS["amplitude_mod"](x, gen(0), cfg)
    gain = y - x
    assert torch.allclose(gain, gain[:, :1].expand_as(gain), atol=1e-4)  # same for every bin
    assert gain.max() <= 20 * math.log10(1.3) + 1e-4 and gain.min() >= 20 * math.log10(0.7) - 1e-4
    assert gain.max() > 2.0 and gain.min() < -2.5  # the full depth is reached within 3 s


def test_spectral_notch_is_a_time_invariant_dip():
    x = flat(-20.0, n=4, frames=50)
    y = PERTURBATIONS["spectral_notch"](x, gen(0))
    dip = x - y
    assert (dip >= -1e-5).all() and dip.max() <= 10.0 + 1e-4
    assert torch.allclose(dip, dip[:, :, :1].expand_as(dip))  # the same at every frame
    for d in dip[:, :, 0]:
        band = (d > 1e-5).nonzero().flatten()
        assert 1 <= band.numel() <= 8 and band[-1] - band[0] == band.numel() - 1


def test_attenuation_never_goes_below_the_floor():
    x = flat(-99.0, n=2, frames=20)
    cfg = PseudoOutlierConfig(notch_depth_db=(10.0, 10.0), am_depth=(0.9, 0.9))
    for kind in ("spectral_notch", "amplitude_mod"):
        assert PERTURBATIONS[kind](x, gen(0), cfg).min() >= -100.0


# ---------------------------------------------------------------- the mix


def _pool(n: int, frames: int) -> torch.Tensor:
    # each pool clip is a distinct ramp over time, so a crop can be located exactly
    base = torch.arange(frames, dtype=torch.float32).view(1, 1, -1)
    clip_id = torch.arange(1, n + 1, dtype=torch.float32).view(-1, 1, 1)
    return base + 1000.0 * clip_id + torch.zeros(1, N_MELS, 1)


@pytest.mark.parametrize(
    "b, ratio, share, n_other, n_total",
    [
        (8, 1.0, 0.5, 4, 8),
        (8, 0.5, 0.5, 2, 4),
        (8, 1.0, 0.25, 2, 8),
        (3, 1.5, 0.5, 3, 5),  # 4.5 outliers round half up to 5, of which 2.5 -> 3 from the pool
        (4, 0.0, 0.5, 0, 0),
        (4, 2.0, 1.0, 8, 8),
        (4, 1.0, 0.0, 0, 4),
    ],
)
def test_mix_respects_ratio_and_share(b, ratio, share, n_other, n_total):
    normals = torch.randn(b, N_MELS, 32, generator=gen(0)) - 30.0
    cfg = PseudoOutlierConfig(ratio=ratio, other_machine_share=share)
    out, kinds = make_pseudo_outliers(normals, gen(1), cfg, _pool(5, 40))
    assert out.shape == (n_total, N_MELS, 32) and len(kinds) == n_total
    assert kinds.count(OTHER_MACHINE) == n_other
    assert all(k in ALL_KINDS for k in kinds if k != OTHER_MACHINE)


def test_mix_without_pool_uses_only_perturbations_and_balances_kinds():
    normals = torch.randn(9, N_MELS, 32, generator=gen(0)) - 30.0
    cfg = PseudoOutlierConfig(ratio=2.0, other_machine_share=1.0)  # but no pool is given
    out, kinds = make_pseudo_outliers(normals, gen(1), cfg)
    assert out.shape[0] == 18 and OTHER_MACHINE not in kinds
    assert sorted(kinds) == sorted(ALL_KINDS * 2)  # every kind exactly twice


def test_pool_outliers_are_crops_or_wraps_of_pool_clips():
    normals = torch.zeros(6, N_MELS, 32)
    for pool_frames in (40, 32, 20):
        pool = _pool(3, pool_frames)
        cfg = PseudoOutlierConfig(other_machine_share=1.0)
        out, kinds = make_pseudo_outliers(normals, gen(2), cfg, pool)
        assert kinds == [OTHER_MACHINE] * 6
        for clip in out:
            j = int(clip[0, 0] // 1000) - 1
            start = int(clip[0, 0] % 1000)
            expected = (start + torch.arange(32)) % pool_frames + 1000.0 * (j + 1)
            assert torch.equal(clip, expected.expand(N_MELS, 32))
            if pool_frames >= 32:
                assert start <= pool_frames - 32  # a plain crop, no wrap


def test_each_normal_is_perturbed_equally_often():
    normals = torch.randn(5, N_MELS, 16, generator=gen(0))
    # a zero-depth notch leaves the clip as is, so the outputs show which normals were used
    cfg = PseudoOutlierConfig(ratio=2.0, kinds=("spectral_notch",), notch_depth_db=(0.0, 0.0))
    out, kinds = make_pseudo_outliers(normals, gen(3), cfg)
    assert kinds == ["spectral_notch"] * 10
    used = [int(((normals - o).abs().amax(dim=(1, 2)) == 0).nonzero()) for o in out]
    assert sorted(used) == sorted(list(range(5)) * 2)


def test_mix_is_deterministic_per_generator_and_keeps_dtype(logmels):
    pool = logmels.flip(0)[:, :, :80]
    cfg = PseudoOutlierConfig(ratio=2.0)
    a, ka = make_pseudo_outliers(logmels.half(), gen(4), cfg, pool)
    b, kb = make_pseudo_outliers(logmels.half(), gen(4), cfg, pool)
    c, _ = make_pseudo_outliers(logmels.half(), gen(5), cfg, pool)
    assert torch.equal(a, b) and ka == kb and not torch.equal(a, c)
    assert a.dtype == torch.float16 and torch.isfinite(a).all()
    g = gen(4)
    first, _ = make_pseudo_outliers(logmels, g, cfg, pool)
    second, _ = make_pseudo_outliers(logmels, g, cfg, pool)
    assert not torch.equal(first, second)  # the generator advances between batches
    # restoring the generator state reproduces a batch exactly (what the trainer relies on)
    state = g.get_state()
    third, _ = make_pseudo_outliers(logmels, g, cfg, pool)
    g.set_state(state)
    again, _ = make_pseudo_outliers(logmels, g, cfg, pool)
    assert torch.equal(third, again)


def test_mix_rejects_bad_inputs(logmels):
    with pytest.raises(ValueError, match=r"^other_pool:"):
        make_pseudo_outliers(logmels, gen(0), None, torch.zeros(2, 64, 10))
    with pytest.raises(ValueError, match=r"^normals:"):
        make_pseudo_outliers(logmels[0], gen(0))
    with pytest.raises(TypeError, match=r"^generator:"):
        make_pseudo_outliers(logmels, 0)
    with pytest.raises(ValueError, match=r"^kinds:"):
        make_pseudo_outliers(logmels, gen(0), PseudoOutlierConfig(kinds=(), other_machine_share=1.0))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"ratio": -0.5}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"other_machine_share": 1.5}, "other_machine_share"),
        ({"other_machine_share": -0.1}, "other_machine_share"),
        ({"kinds": ("freq_shift", "bogus")}, "kinds"),
        ({"kinds": ("harmonic", "harmonic")}, "kinds"),
        ({"kinds": ()}, "kinds"),
        ({"noise_gain_db": (6.0, 3.0)}, "noise_gain_db"),
        ({"impulse_count": (1.0, 2.0)}, "impulse_count"),
        ({"impulse_count": (0, 2)}, "impulse_count"),
        ({"am_depth": (0.1, 1.0)}, "am_depth"),
        ({"am_rate_hz": (2.0, 60.0)}, "am_rate_hz"),
        ({"noise_duration_fraction": (0.0, 0.5)}, "noise_duration_fraction"),
        ({"time_warp_fraction": (0.1,)}, "time_warp_fraction"),
        ({"f_max": 9000.0}, "f_max"),
        ({"harmonic_peaks": 0}, "harmonic_peaks"),
        ({"hop_length": 0}, "hop_length"),
    ],
)
def test_config_rejects_bad_values_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}:") as err:
        PseudoOutlierConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_unknown_kind_message_lists_known_kinds():
    with pytest.raises(ValueError, match="bogus") as err:
        PseudoOutlierConfig(kinds=("bogus",))
    assert all(k in str(err.value) for k in ALL_KINDS)


def test_config_defaults_and_dict_round_trip():
    cfg = PseudoOutlierConfig()
    assert cfg.kinds == ALL_KINDS == tuple(PERTURBATIONS)
    assert (cfg.ratio, cfg.other_machine_share) == (1.0, 0.5)
    d = cfg.to_dict()
    d["kinds"] = list(d["kinds"])[:3]  # as a JSON file would give it
    d["noise_gain_db"] = [0.0, 1.0]
    back = PseudoOutlierConfig.from_dict(d)
    assert back.kinds == ALL_KINDS[:3] and back.noise_gain_db == (0.0, 1.0)
    hash(back)
    with pytest.raises(ValueError, match="unknown setting.*colour"):
        PseudoOutlierConfig.from_dict({"colour": 1})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_with_cpu_or_cuda_generator(logmels):
    x = logmels.cuda()
    cpu_a, ka = make_pseudo_outliers(x, gen(0), PseudoOutlierConfig(ratio=2.0), x.flip(0))
    cpu_b, kb = make_pseudo_outliers(x, gen(0), PseudoOutlierConfig(ratio=2.0), x.flip(0))
    assert cpu_a.is_cuda and torch.equal(cpu_a, cpu_b) and ka == kb
    # the CPU reference on the same draws agrees to float tolerance
    ref, kr = make_pseudo_outliers(logmels, gen(0), PseudoOutlierConfig(ratio=2.0), logmels.flip(0))
    assert kr == ka and torch.allclose(cpu_a.cpu(), ref, atol=1e-2)
    g = torch.Generator(device="cuda").manual_seed(0)
    out, _ = make_pseudo_outliers(x, g, PseudoOutlierConfig(ratio=2.0))
    assert out.is_cuda and torch.isfinite(out).all()

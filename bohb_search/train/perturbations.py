"""Log-mel perturbations that turn normal clips into pseudo outliers (pOE, paper section 2.5, eq. 9).

Eq. 9 needs samples labelled ``y = 1`` that are *not* normal but lie close to the normal
manifold, so that pushing them away from the centre sharpens the boundary around the normals.
No test audio is ever used. Two sources, mixed by :class:`PseudoOutlierConfig`:

(a) **other machines** - normal clips of other machine types / sections, passed in by the caller
    as a pool of log-mels (``other_pool``); we only sample (and crop or wrap to length) from it;
(b) **perturbed normals** - the machine's own normal clips with a small, physically motivated
    change applied directly to the cached log-mel (cheap: no audio is re-read or re-transformed).

Log-mel convention (``data.features.FeatureConfig``): ``(B, n_mels, T)`` power in dB
(``10·log10``, floor -100 dB), 16 kHz, ``n_fft = 1024`` periodic Hann window, hop 156 (about
102.6 frames/s), HTK mel scale ``mel(f) = 2595·log10(1 + f/700)``, triangular filters without
area normalisation between ``f_min = 0`` and ``f_max = 8000`` Hz (torchaudio's ``MelSpectrogram``
defaults). The mel geometry below is recomputed from these formulas, so the harmonic and pitch
perturbations put energy where the front end would really have put it. Energy is always *added*
in the power domain, ``10·log10(10^(x/10) + 10^(e/10))`` (computed as a stable ``logaddexp``),
never by adding dB values.

Perturbations (all in :data:`PERTURBATIONS`). The default ``kinds`` = :data:`ALL_KINDS` uses
**all of them**; each perturbed outlier gets exactly one, assigned so that every kind appears
equally often (±1) in a batch. Strengths are drawn per outlier, uniformly within the configured
range, and are subtle by default:

==================  ==================================================  ==========================
kind                what it models / how                                default strength
==================  ==================================================  ==========================
``freq_shift``      whole spectrum moved along the mel axis             0.5-2 bins, either sign
                    (fractional bins, edge bins repeated). Above ~1
                    kHz one HTK bin here is a ~2 % frequency ratio: a
                    small resonance / speed change.
``pitch_shift``     exact speed change: every frequency scaled by 1 ±   1-4 %, either sign
                    p (rotating parts faster / slower), mapped through
                    the mel scale; edge bins repeated.
``time_stretch``    tempo change without pitch change (slider stroke,   3-10 %, either sign
                    valve period, train speed): time axis resampled
                    about the clip centre, mirrored at the ends.
``time_warp``       local timing irregularity (hesitation, stutter):    2-8 % of the clip, either
                    piecewise-linear warp moving one anchor frame,      direction
                    ends fixed.
``impulses``        clicks / knocks (loose part, chipped tooth,         1-4 clicks, peak 6-15 dB
                    bearing defect): white spectrum through the mel     above the clip's mean
                    filters, spread over frames by the squared Hann     level
                    window.
``noise_burst``     leak / hiss / rubbing: noise in a band of mel bins  4-16 bins, 10-40 % of the
                    over a time segment, with the texture of noise      clip, -3..+6 dB re the
                    summed within each mel filter.                      band's median
``harmonic``        nonlinear distortion (misalignment, looseness):     3 peaks; 2f at -18..-6 dB,
                    tones at 2f and 3f of the strongest spectral        3f a further -6 dB
                    peaks, following the fundamental's envelope.
``amplitude_mod``   imbalance / eccentricity / belt flutter: periodic   depth 0.1-0.3, 2-12 Hz
                    loudness modulation, power times (1 + m sin)².
``spectral_notch``  damped or missing resonance / component: a smooth   2-8 bins, 3-10 dB deep
                    (Hann-shaped) dip over a band of mel bins, the
                    same in every frame.
==================  ==================================================  ==========================

Every random choice draws from the explicit ``torch.Generator`` argument (on the generator's own
device, then moved), never from the global RNG, so the trainer can save and restore the
generator for an exact resume. Computations run in float32 and the result is returned in the
input's dtype and device (the feature cache stores float16, in which ``10^(x/10)`` overflows).
"""


from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .configs import ALL_KINDS, PseudoOutlierConfig
from .mel_geometry import harmonic_maps, hz_to_mel_bin, mel_bin_centers_hz, white_response

# Natural-log factor of the decibel: 10*log10(p) = ln(p) / _LN10_OVER_10.
_LN10_OVER_10 = math.log(10.0) / 10.0

# --------------------------------------------------------------------------------------------
# Random draws: always from the given generator, on its device, then moved to the data.
# --------------------------------------------------------------------------------------------


def _uniform(gen: torch.Generator, shape, lo: float, hi: float, device) -> Tensor:
    u = torch.rand(shape, generator=gen, device=gen.device, dtype=torch.float64)
    return (lo + (hi - lo) * u).to(device=device, dtype=torch.float32)


def randint(gen: torch.Generator, shape, lo: int, hi_inclusive: int, device) -> Tensor:
    r = torch.randint(int(lo), int(hi_inclusive) + 1, shape, generator=gen, device=gen.device)
    return r.to(device)


def _sign(gen: torch.Generator, shape, device) -> Tensor:
    return (randint(gen, shape, 0, 1, device) * 2 - 1).to(torch.float32)


# --------------------------------------------------------------------------------------------
# Helpers on (n, F, T) dB tensors
# --------------------------------------------------------------------------------------------


def _db_add(x: Tensor, add_db: Tensor) -> Tensor:
    """Power-domain sum in dB, ``10·log10(10^(x/10) + 10^(a/10))``; ``a = -inf`` adds nothing."""
    return torch.logaddexp(x * _LN10_OVER_10, add_db * _LN10_OVER_10) / _LN10_OVER_10


def _floor_like(x: Tensor, y: Tensor, floor: float) -> Tensor:
    # Attenuation may not push a value below the front end's floor (unless it already was).
    return torch.maximum(y, torch.clamp(x, max=floor))


def _interp(x: Tensor, pos: Tensor, dim: int) -> Tensor:
    """Linear interpolation of ``x`` (n, F, T) at fractional positions along ``dim`` (1 or 2).

    ``pos`` is (n, F) for ``dim = 1`` and (n, T) for ``dim = 2``; positions are clamped to the
    axis, which repeats the edge values (the "edge fill").
    """
    size = x.shape[dim]
    pos = pos.clamp(0.0, size - 1.0)
    i0 = pos.floor().long().clamp(max=size - 1)
    i1 = (i0 + 1).clamp(max=size - 1)
    w = pos - i0.to(pos.dtype)
    if dim == 1:  # weights (n, F, 1), indices repeated over time
        w = w.unsqueeze(2)
        idx0 = i0.unsqueeze(2).expand(-1, -1, x.shape[2])
        idx1 = i1.unsqueeze(2).expand(-1, -1, x.shape[2])
    else:  # weights (n, 1, T), indices repeated over mel bins
        w = w.unsqueeze(1)
        idx0 = i0.unsqueeze(1).expand(-1, x.shape[1], -1)
        idx1 = i1.unsqueeze(1).expand(-1, x.shape[1], -1)
    return x.gather(dim, idx0) * (1.0 - w) + x.gather(dim, idx1) * w


def _reflect(pos: Tensor, size: int) -> Tensor:
    # Mirror positions into [0, size - 1] (period 2(size - 1)): keeps level continuity at the
    # clip edges, where wrapping would splice the end onto the start.
    if size < 2:
        return torch.zeros_like(pos)
    period = 2.0 * (size - 1)
    p = torch.remainder(pos, period)
    return torch.where(p > size - 1, period - p, p)


Perturbation = Callable[..., Tensor]  # (x, generator, cfg) -> perturbed x

# --------------------------------------------------------------------------------------------
# Perturbations. Each takes x (n, F, T) float32, a generator and the config, and returns a new
# (n, F, T) float32 tensor; the public registry wraps them with checks and dtype handling.
# --------------------------------------------------------------------------------------------


def _freq_shift(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, n_mels, _ = x.shape
    shift = _uniform(gen, (n,), *cfg.freq_shift_bins, x.device) * _sign(gen, (n,), x.device)
    # Output bin m reads input bin m - shift: positive shift moves content up in frequency.
    bins = torch.arange(n_mels, device=x.device, dtype=torch.float32)
    pos = bins.unsqueeze(0) - shift.unsqueeze(1)
    return _interp(x, pos, dim=1)


def _pitch_shift(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, n_mels, _ = x.shape
    pct = _uniform(gen, (n,), *cfg.pitch_shift_percent, x.device) * _sign(gen, (n,), x.device)
    factor = (1.0 + pct.double() / 100.0).cpu()
    centers = mel_bin_centers_hz(n_mels, cfg.f_min, cfg.f_max)
    # A machine running faster by `factor` puts at f the content that was at f / factor.
    src = hz_to_mel_bin(centers.unsqueeze(0) / factor.unsqueeze(1), n_mels, cfg.f_min, cfg.f_max)
    return _interp(x, src.to(device=x.device, dtype=torch.float32), dim=1)


def _time_stretch(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, _, t = x.shape
    pct = _uniform(gen, (n,), *cfg.time_stretch_percent, x.device) * _sign(gen, (n,), x.device)
    rate = 1.0 + pct / 100.0
    centre = (t - 1) / 2.0
    frames = torch.arange(t, device=x.device, dtype=torch.float32).unsqueeze(0)
    # Stretch about the centre so both ends move symmetrically; a faster rate (> 1) reads past
    # the clip, which is mirrored back in.
    pos = centre + (frames - centre) * rate.unsqueeze(1)
    return _interp(x, _reflect(pos, t), dim=2)


def _time_warp(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, _, t = x.shape
    last = float(t - 1)
    anchor = _uniform(gen, (n,), 0.25, 0.75, x.device) * last
    move = _uniform(gen, (n,), *cfg.time_warp_fraction, x.device) * _sign(gen, (n,), x.device) * last
    target = (anchor + move).clamp(1.0, max(last - 1.0, 1.0))
    frames = torch.arange(t, device=x.device, dtype=torch.float32).unsqueeze(0)
    a, b = anchor.unsqueeze(1), target.unsqueeze(1)
    # Piecewise-linear map with fixed end points: output frame b shows source frame a, so the
    # part before the anchor is slowed down and the part after sped up (or vice versa).
    before = frames * (a / b)
    after = a + (frames - b) * ((last - a) / (last - b).clamp_min(1e-6))
    pos = torch.where(frames <= b, before, after)
    return _interp(x, pos, dim=2)


def _white(cfg: PseudoOutlierConfig, n_mels: int) -> Tensor:
    return white_response(n_mels, cfg.n_fft, cfg.sample_rate, float(cfg.f_min), float(cfg.f_max))


def _impulses(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, n_mels, t = x.shape
    lo, hi = cfg.impulse_count
    count = randint(gen, (n,), lo, hi, x.device)
    onset = _uniform(gen, (n, hi), 0.0, float(t * cfg.hop_length), x.device)  # sample position
    gain = _uniform(gen, (n, hi), *cfg.impulse_gain_db, x.device)
    used = torch.arange(hi, device=x.device).unsqueeze(0) < count.unsqueeze(1)  # (n, hi)
    # Frame k (center=True) sees samples [k·hop - n_fft/2, k·hop + n_fft/2) through a periodic
    # Hann window, so an impulse at sample s appears in every such frame with power w(offset)^2.
    frame_centre = torch.arange(t, device=x.device, dtype=torch.float32) * cfg.hop_length
    offset = onset.unsqueeze(2) - frame_centre + cfg.n_fft / 2.0  # (n, hi, T)
    inside = (offset >= 0) & (offset < cfg.n_fft)
    win_sq = (0.5 * (1.0 - torch.cos(2.0 * math.pi * offset / cfg.n_fft))) ** 2
    click_power = torch.pow(10.0, gain / 10.0).unsqueeze(2)
    power = torch.where(inside & used.unsqueeze(2), win_sq * click_power, 0.0)
    envelope_db = 10.0 * torch.log10(power.sum(dim=1))  # (n, T); -inf where no click
    # White spectrum through the mel filters, expressed relative to its mean over bins.
    white_db = 10.0 * torch.log10(_white(cfg, n_mels))
    shape_db = (white_db - white_db.mean()).to(device=x.device, dtype=torch.float32)
    level = x.mean(dim=(1, 2), keepdim=True)  # the clip's mean dB level: clicks sit relative to it
    add = level + envelope_db.unsqueeze(1) + shape_db.view(1, -1, 1)
    return _db_add(x, add)


def _noise_burst(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, n_mels, t = x.shape
    out = x.clone()
    width = randint(gen, (n,), *cfg.noise_band_bins, "cpu").clamp(max=n_mels)
    frac = _uniform(gen, (n,), *cfg.noise_duration_fraction, "cpu")
    gain = _uniform(gen, (n,), *cfg.noise_gain_db, "cpu")
    # Each mel bin sums about white_response[m] STFT bins of noise, and a sum of k exponential
    # powers is smoother than one: average k_m unit exponentials to get that texture.
    k_bins = _white(cfg, n_mels).round().clamp_min(1).long()
    for i in range(n):
        w = int(width[i])
        length = max(1, int(round(float(frac[i]) * t)))
        f0 = int(randint(gen, (1,), 0, n_mels - w, "cpu"))
        t0 = int(randint(gen, (1,), 0, t - length, "cpu"))
        k = k_bins[f0 : f0 + w].to(x.device)
        k_max = int(k.max())
        u = torch.rand((w, length, k_max), generator=gen, device=gen.device).to(x.device)
        expo = -torch.log1p(-u)  # unit exponential, finite since u < 1
        take = torch.arange(k_max, device=x.device).view(1, 1, -1) < k.view(-1, 1, 1)
        texture = (expo * take).sum(dim=2) / k.view(-1, 1)
        band = x[i, f0 : f0 + w, :]
        reference = band.median(dim=1).values.unsqueeze(1)  # background level of each bin
        add = reference + float(gain[i]) + 10.0 * torch.log10(texture.clamp_min(1e-12))
        out[i, f0 : f0 + w, t0 : t0 + length] = _db_add(band[:, t0 : t0 + length], add)
    return out


def _harmonic(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, n_mels, _ = x.shape
    n_peaks = min(cfg.harmonic_peaks, n_mels)
    level2 = _uniform(gen, (n, 1), *cfg.harmonic_level_db, x.device)  # dB re the fundamental
    level3 = level2 + cfg.harmonic_third_offset_db
    h2, h3 = harmonic_maps(n_mels, float(cfg.f_min), float(cfg.f_max))
    centers = mel_bin_centers_hz(n_mels, cfg.f_min, cfg.f_max)
    # Only bins whose 2nd harmonic is still inside the mel range can be fundamentals.
    eligible = (centers * 2.0 <= cfg.f_max).to(x.device)
    if not bool(eligible.any()):  # f_min above f_max / 2: no harmonic can land in the mel range
        return x.clone()
    spec = x.mean(dim=2)  # (n, F) mean dB spectrum: where the stationary tones are
    padded = torch.nn.functional.pad(spec, (1, 1), value=-math.inf)
    is_peak = (spec >= padded[:, :-2]) & (spec >= padded[:, 2:]) & eligible
    # A monotone spectrum has no interior peak: then the strongest eligible bins are used.
    is_peak = torch.where(is_peak.any(dim=1, keepdim=True), is_peak, eligible.expand_as(is_peak))
    score = spec.masked_fill(~is_peak, -math.inf)
    top = torch.topk(score, n_peaks, dim=1)
    peaks, valid = top.indices, torch.isfinite(top.values)  # (n, P); fewer peaks -> invalid
    fund = x.gather(1, peaks.unsqueeze(2).expand(-1, -1, x.shape[2]))  # (n, P, T)
    # Linear weight of each harmonic in each mel bin (tone response times relative level);
    # harmonics follow their fundamental's envelope frame by frame.
    w2 = h2.to(device=x.device, dtype=torch.float32)[peaks] * torch.pow(10.0, level2 / 10.0)[..., None]
    w3 = h3.to(device=x.device, dtype=torch.float32)[peaks] * torch.pow(10.0, level3 / 10.0)[..., None]
    weights = torch.cat([w2, w3], dim=1) * valid.repeat(1, 2).unsqueeze(2)  # (n, 2P, F)
    # Powers relative to the loudest fundamental frame keep 10^(x/10) in float32 range.
    ref = fund.amax(dim=(1, 2), keepdim=True)
    rel_power = torch.pow(10.0, (fund - ref) / 10.0).repeat(1, 2, 1)  # (n, 2P, T)
    added = torch.bmm(weights.transpose(1, 2), rel_power)  # (n, F, T) linear power re ref
    return _db_add(x, ref + 10.0 * torch.log10(added))


def _amplitude_mod(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, _, t = x.shape
    depth = _uniform(gen, (n, 1), *cfg.am_depth, x.device)
    rate = _uniform(gen, (n, 1), *cfg.am_rate_hz, x.device)
    phase = _uniform(gen, (n, 1), 0.0, 2.0 * math.pi, x.device)
    seconds = torch.arange(t, device=x.device, dtype=torch.float32).unsqueeze(0) / cfg.frame_rate
    # Amplitude (1 + m sin) scales power by its square, i.e. 20*log10 in dB. The 64 ms window
    # smooths fast modulation a little; with rates <= 12 Hz (period >= 83 ms) that is minor.
    gain_db = 20.0 * torch.log10(1.0 + depth * torch.sin(2.0 * math.pi * rate * seconds + phase))
    return _floor_like(x, x + gain_db.unsqueeze(1), cfg.db_floor)


def _spectral_notch(x: Tensor, gen: torch.Generator, cfg: PseudoOutlierConfig) -> Tensor:
    n, n_mels, _ = x.shape
    width = randint(gen, (n,), *cfg.notch_width_bins, x.device).clamp(max=n_mels)
    u = _uniform(gen, (n,), 0.0, 1.0, x.device)
    start = (u * (n_mels - width + 1).float()).floor().clamp(max=n_mels - 1)  # band fits the axis
    depth = _uniform(gen, (n,), *cfg.notch_depth_db, x.device)
    bins = torch.arange(n_mels, device=x.device, dtype=torch.float32).unsqueeze(0)
    rel = (bins - start.unsqueeze(1) + 0.5) / width.unsqueeze(1).float()  # (0, 1) inside the band
    inside = (rel > 0) & (rel < 1)
    # Hann-shaped dip: deepest in the middle, no hard spectral edge for the model to key on.
    atten = torch.where(inside, depth.unsqueeze(1) * torch.sin(math.pi * rel) ** 2, 0.0)
    return _floor_like(x, x - atten.unsqueeze(2), cfg.db_floor)


def check_logmel(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a float tensor of shape (B, n_mels, T), got {got}")
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"{name}: need n_mels >= 2 and T >= 2, got shape {tuple(x.shape)}")


def check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")


def _checked(fn: Perturbation, name: str) -> Perturbation:
    def apply(x: Tensor, generator: torch.Generator, cfg: PseudoOutlierConfig | None = None) -> Tensor:
        check_logmel("x", x)
        check_generator(generator)
        cfg = PseudoOutlierConfig() if cfg is None else cfg
        if not isinstance(cfg, PseudoOutlierConfig):
            raise ValueError(f"cfg: expected a PseudoOutlierConfig, got {type(cfg).__name__}")
        if x.shape[0] == 0:
            return x.clone()
        return fn(x.float(), generator, cfg).to(x.dtype)

    apply.__name__ = name
    apply.__qualname__ = name
    apply.__doc__ = f"Apply ``{name}`` to ``x`` (n, n_mels, T) in dB; see the module table."
    return apply


_IMPLEMENTATIONS = {
    "freq_shift": _freq_shift,
    "pitch_shift": _pitch_shift,
    "time_stretch": _time_stretch,
    "time_warp": _time_warp,
    "impulses": _impulses,
    "noise_burst": _noise_burst,
    "harmonic": _harmonic,
    "amplitude_mod": _amplitude_mod,
    "spectral_notch": _spectral_notch,
}
assert tuple(_IMPLEMENTATIONS) == ALL_KINDS  # one list of names, checked at import

#: name -> perturbation ``f(x (n, F, T), generator, cfg=None) -> (n, F, T)``, same dtype as ``x``.
PERTURBATIONS: dict[str, Perturbation] = {
    name: _checked(fn, name) for name, fn in _IMPLEMENTATIONS.items()
}

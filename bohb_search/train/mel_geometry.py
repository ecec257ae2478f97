"""Mel geometry of the front end (HTK, as torchaudio's default ``MelSpectrogram``), recomputed from
the formulas so the pitch and harmonic perturbations put energy where the front end would."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


def hz_to_mel(f: float | Tensor) -> float | Tensor:
    """HTK mel scale, ``2595·log10(1 + f/700)``."""
    if isinstance(f, Tensor):
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_to_hz(m: float | Tensor) -> float | Tensor:
    """Inverse of :func:`hz_to_mel`."""
    if isinstance(m, Tensor):
        return 700.0 * (torch.pow(10.0, m / 2595.0) - 1.0)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def mel_points_hz(n_mels: int, f_min: float, f_max: float) -> Tensor:
    """The n_mels + 2 filter edge/peak frequencies in Hz, float64."""
    # n_mels + 2 points equally spaced in mel; filter m rises from point m to its peak at
    # point m + 1 and falls to point m + 2 (linear in Hz between them).
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    return mel_to_hz(mels)


def mel_bin_centers_hz(n_mels: int, f_min: float = 0.0, f_max: float = 8000.0) -> Tensor:
    """Peak frequency of each mel filter, ``(n_mels,)`` float64 Hz."""
    return mel_points_hz(n_mels, float(f_min), float(f_max))[1:-1].clone()


def hz_to_mel_bin(f: float | Tensor, n_mels: int, f_min: float = 0.0, f_max: float = 8000.0):
    """Fractional mel-bin index of frequency ``f``: bin ``m`` has its peak at index ``m``.

    Linear in mel between filter peaks, so ``hz_to_mel_bin(mel_bin_centers_hz(...)[m]) == m``.
    Values outside ``[0, n_mels - 1]`` are frequencies below the first / above the last peak.
    """
    step = (hz_to_mel(float(f_max)) - hz_to_mel(float(f_min))) / (n_mels + 1)
    return (hz_to_mel(f) - hz_to_mel(float(f_min))) / step - 1.0


def tone_response(freqs_hz: Tensor, n_mels: int, f_min: float = 0.0, f_max: float = 8000.0) -> Tensor:
    """Weight of each mel filter for a pure tone at each frequency, ``(len(freqs), n_mels)``.

    A tone of power ``P`` at ``f`` lands in mel bin ``m`` with power ``P·w_m(f)``, where ``w_m``
    is the triangle (1 at the bin's peak). Window leakage is ignored: it spreads a tone over a few
    STFT bins, which the much wider mel triangles above ~500 Hz absorb.
    """
    pts = mel_points_hz(n_mels, float(f_min), float(f_max))
    f = freqs_hz.to(torch.float64).reshape(-1, 1)
    lo, mid, hi = pts[:-2], pts[1:-1], pts[2:]
    rising = (f - lo) / (mid - lo)
    falling = (hi - f) / (hi - mid)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


@lru_cache(maxsize=16)
def white_response(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> Tensor:
    """Mel power of a flat (white) spectrum of unit power per STFT bin, ``(n_mels,)`` float64.

    It is the column sum of the filterbank over the ``n_fft // 2 + 1`` STFT bins, i.e. how many
    STFT bins each filter effectively collects. For the paper's front end it grows from ~0.9 in
    the lowest bin to ~10.7 in the highest (an ~11 dB tilt): a broadband click or hiss is
    therefore louder in high mel bins, which the impulse perturbation reproduces.
    """
    stft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    return tone_response(stft_freqs, n_mels, f_min, f_max).sum(dim=0)


@lru_cache(maxsize=16)
def harmonic_maps(n_mels: int, f_min: float, f_max: float) -> tuple[Tensor, Tensor]:
    """Mel-bin weights of the 2nd and 3rd harmonics of each bin's peak frequency."""
    # H_h[p] = mel-bin weights of a tone at h times the peak frequency of bin p (h = 2, 3).
    centers = mel_bin_centers_hz(n_mels, f_min, f_max)
    return (
        tone_response(2.0 * centers, n_mels, f_min, f_max),
        tone_response(3.0 * centers, n_mels, f_min, f_max),
    )

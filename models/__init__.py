"""Tensors → tensors: tokenizer, selective-scan backends, bidirectional SSM (Audio-Mamba) encoder,
AST-style encoder, heads, the DCASE autoencoder baseline and checkpoint save/load.

Imports neither ``data`` nor ``bohb_search``. Names are imported on first use (PEP 562), so reading
``models.config`` (the command line's flags) does not load torch. One concept per module:

    config.py       EncoderConfig (typed, plain-dict round trip) and the tiny / small / base presets
    tokenizer.py    PixelUnshufflePatchEmbed: pixel-unshuffle → p×p patches → D (eq. 1-2), class token
    scan.py         selective_scan with "reference" | "torch" | "cpp" (compiled CPU) | "cuda" (mamba-ssm) backends
    scan_cpu.py     the "cpp" kernel (csrc/selective_scan_cpu.cpp): built on first use, cached, ctypes + autograd
    ssm.py          BiMambaMixer and SSMBlock: the bidirectional selective SSM block (section 2.2)
    ssd.py          ssd_scan (Mamba-2's chunked SSD; "torch" | "reference" | "cuda") and BiMamba2Mixer (mixer="mamba2")
    attention.py    AttentionBlock: the AST-style baseline block
    layers.py       norm choice, MLP sub-block, stochastic depth
    encoder.py      Encoder / build_encoder → EncoderOutput(pooled, layers, tokens)
    heads.py        ClassificationHead (eq. 7), AnomalyHead (eq. 4-6), PatchStatisticsMap (margin objective)
    margin.py       SubClusterAdaCos, ArcFace: angular-margin class heads (the margin objective)
    domain.py       grad_reverse / GradientReversal, DomainClassifier (eq. 10)
    autoencoder.py  the DCASE AE baseline, frame-context vectors, MSE and Mahalanobis scores
    checkpoint.py   atomic save, weights_only load, save_model / load_encoder
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it
_EXPORTS = {
    "AEConfig": "autoencoder",
    "AnomalyHead": "heads",
    "ArcFace": "margin",
    "SubClusterAdaCos": "margin",
    "CheckpointError": "checkpoint",
    "ClassificationHead": "heads",
    "DCASEAutoencoder": "autoencoder",
    "DomainClassifier": "domain",
    "Encoder": "encoder",
    "EncoderConfig": "config",
    "EncoderOutput": "encoder",
    "GradientReversal": "domain",
    "MahalanobisModel": "autoencoder",
    "MIXERS": "config",
    "PRESETS": "config",
    "PatchStatisticsMap": "heads",
    "PixelUnshufflePatchEmbed": "tokenizer",
    "SCAN_BACKENDS": "config",
    "build_encoder": "encoder",
    "cuda_scan_available": "scan",
    "cuda_ssd_available": "ssd",
    "cpu_scan_available": "scan_cpu",
    "encoder_preset": "config",
    "ResidualCovariance": "autoencoder",
    "frame_context_vectors": "autoencoder",
    "grad_reverse": "domain",
    "load_autoencoder": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_encoder": "checkpoint",
    "load_weights": "checkpoint",
    "mahalanobis_scores": "autoencoder",
    "mse_scores": "autoencoder",
    "reconstruction_errors": "autoencoder",
    "resolve_scan_backend": "scan",
    "save_checkpoint": "checkpoint",
    "save_model": "checkpoint",
    "selective_scan": "scan",
    "selective_scan_reference": "scan",
    "selective_scan_torch": "scan",
    "ssd_chunked": "ssd",
    "ssd_reference": "ssd",
    "ssd_scan": "ssd",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

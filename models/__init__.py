"""Tensors → tensors: tokenizer, selective-scan backends, bidirectional SSM (Audio-Mamba) encoder,
AST-style encoder, heads, the DCASE autoencoder baseline and checkpoint save/load.

Imports neither ``data`` nor ``bohb_search``. One concept per module:

    config.py       EncoderConfig (typed, plain-dict round trip) and the tiny / small / base presets
    tokenizer.py    PixelUnshufflePatchEmbed: pixel-unshuffle → p×p patches → D (eq. 1-2), class token
    scan.py         selective_scan with "reference" | "torch" (fast CPU) | "cuda" (mamba-ssm) backends
    ssm.py          BiMambaMixer and SSMBlock: the bidirectional selective SSM block (section 2.2)
    attention.py    AttentionBlock: the AST-style baseline block
    layers.py       norm choice, MLP sub-block, stochastic depth
    encoder.py      Encoder / build_encoder → EncoderOutput(pooled, layers, tokens)
    heads.py        ClassificationHead (eq. 7), AnomalyHead (eq. 4-6)
    domain.py       grad_reverse / GradientReversal, DomainClassifier (eq. 10)
    autoencoder.py  the DCASE AE baseline, frame-context vectors, MSE and Mahalanobis scores
    checkpoint.py   atomic save, weights_only load, save_model / load_encoder
"""

from .autoencoder import (
    AEConfig,
    DCASEAutoencoder,
    MahalanobisModel,
    fit_mahalanobis,
    frame_context_vectors,
    mahalanobis_scores,
    mse_scores,
    reconstruction_errors,
)
from .checkpoint import (
    CheckpointError,
    load_autoencoder,
    load_checkpoint,
    load_encoder,
    load_weights,
    save_checkpoint,
    save_model,
)
from .config import PRESETS, EncoderConfig, encoder_preset
from .domain import DomainClassifier, GradientReversal, grad_reverse
from .encoder import Encoder, EncoderOutput, build_encoder
from .heads import AnomalyHead, ClassificationHead
from .scan import (
    SCAN_BACKENDS,
    cuda_scan_available,
    resolve_scan_backend,
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,
)
from .tokenizer import PixelUnshufflePatchEmbed

__all__ = [
    "AEConfig",
    "AnomalyHead",
    "CheckpointError",
    "ClassificationHead",
    "DCASEAutoencoder",
    "DomainClassifier",
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "GradientReversal",
    "MahalanobisModel",
    "PRESETS",
    "PixelUnshufflePatchEmbed",
    "SCAN_BACKENDS",
    "build_encoder",
    "cuda_scan_available",
    "encoder_preset",
    "fit_mahalanobis",
    "frame_context_vectors",
    "grad_reverse",
    "load_autoencoder",
    "load_checkpoint",
    "load_encoder",
    "load_weights",
    "mahalanobis_scores",
    "mse_scores",
    "reconstruction_errors",
    "resolve_scan_backend",
    "save_checkpoint",
    "save_model",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_torch",
]

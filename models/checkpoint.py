"""Checkpoints: a dict of plain values and tensors, written atomically, read with ``weights_only=True``.

A model checkpoint made by :func:`save_model` looks like

    {"format": "bohb-search-asd/model-v1",
     "configs": {"encoder": EncoderConfig.to_dict(), ...},   # every config the model was built from
     "model": model.state_dict(),
     "extra": {...}}                                         # anything else plain: epoch, metrics, labels

so :func:`load_encoder` can rebuild the encoder from its recorded config with no code outside the file.
Configs are stored as dicts, never as pickled objects: ``torch.load(weights_only=True)`` refuses arbitrary
classes, which is what makes loading a checkpoint from elsewhere safe.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .autoencoder import AEConfig, DCASEAutoencoder
from .config import EncoderConfig
from .encoder import Encoder, build_encoder

MODEL_FORMAT = "bohb-search-asd/model-v1"
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, read, or does not match the model it should fill."""


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise CheckpointError(f"{where} has a key of type {type(key).__name__}; use str or numbers")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    hint = "; store its .to_dict()" if hasattr(obj, "to_dict") else ""
    raise CheckpointError(
        f"{where} is a {type(obj).__name__}, which torch.load(weights_only=True) cannot read back{hint}"
    )


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``."""
    if not isinstance(state, dict):
        raise CheckpointError(f"state must be a dict, got {type(state).__name__}")
    _check_plain(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never a partial write
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # PyTorch's advice to retry with weights_only=False is the wrong advice for a file that may be
        # malicious: say plainly what the file is and that nothing was loaded
        if "Unsupported global" in str(exc):
            raise CheckpointError(f"{path}: not a checkpoint of this tool (it holds Python objects other than "
                                  "tensors and plain values); it was not loaded") from None
        raise CheckpointError(f"{path}: not a checkpoint of this tool (not a PyTorch checkpoint file, or a damaged "
                              "one); it was not loaded") from None
    except Exception as exc:  # noqa: BLE001 - corrupt file, text file, truncated zip ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint of this tool")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text and text[0] else type(exc).__name__)[:200]


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], what: str = "weights") -> None:
    """``model.load_state_dict(weights)`` with one clear error listing every missing, extra or misshaped entry."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    misshaped = [
        f"{k}: {tuple(weights[k].shape)} in checkpoint vs {tuple(own[k].shape)} in model"
        for k in own
        if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", misshaped)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{what} do not match the model: " + "; ".join(parts))
    model.load_state_dict(weights)


def save_model(path: str | os.PathLike, model: nn.Module, config_dicts: Mapping[str, dict],
               extra: dict | None = None) -> None:
    """Save ``model``'s weights with the config dicts it was built from (e.g. ``{"encoder": cfg.to_dict()}``)."""
    state = {
        "format": MODEL_FORMAT,
        "configs": dict(config_dicts),
        "model": model.state_dict(),
        "extra": dict(extra or {}),
    }
    save_checkpoint(path, state)


def _recorded(state: dict, key: str, path) -> tuple[dict, dict]:
    """(config dict under state['configs'][key], weights dict) of a save_model checkpoint, or a CheckpointError."""
    configs = state.get("configs")
    cfg = configs.get(key) if isinstance(configs, dict) else None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"checkpoint {path} records no {key!r} config under state['configs']")
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {path} has no 'model' weights dict")
    return cfg, weights


def load_autoencoder(path: str | os.PathLike) -> DCASEAutoencoder:
    """Rebuild a DCASE AE baseline saved with ``save_model(path, ae, {"autoencoder": ae.config.to_dict()})``."""
    cfg_dict, weights = _recorded(load_checkpoint(path), "autoencoder", path)
    try:
        cfg = AEConfig.from_dict(cfg_dict)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid autoencoder config: {exc}") from exc
    model = DCASEAutoencoder(cfg)
    load_weights(model, weights, what=f"autoencoder weights in {path}")
    return model


def load_encoder(path: str | os.PathLike, prefix: str | None = None, scan_backend: str | None = None) -> Encoder:
    """Rebuild the encoder recorded in a :func:`save_model` checkpoint and load its weights.

    The weights may be the encoder's own or a wrapper's that holds it under an attribute; ``prefix``
    (e.g. ``"encoder."``) selects them, and by default is found from the keys. ``scan_backend`` overrides
    the recorded one (a checkpoint trained with the CUDA kernel loads on a CPU machine with "auto").
    """
    encoder_cfg, weights = _recorded(load_checkpoint(path), "encoder", path)
    try:
        cfg = EncoderConfig.from_dict(encoder_cfg)
        if scan_backend is not None:
            cfg.scan_backend = scan_backend
            cfg.validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid encoder config: {exc}") from exc
    encoder = build_encoder(cfg)
    if prefix is None:
        anchor = "embed.proj.weight"
        candidates = [k[: -len(anchor)] for k in weights if k.endswith(anchor)]
        if len(candidates) != 1:
            raise CheckpointError(
                f"cannot tell which weights in {path} are the encoder's (found {len(candidates)} tokenizers); "
                "pass prefix="
            )
        prefix = candidates[0]
    own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    load_weights(encoder, own, what=f"encoder weights (prefix {prefix!r}) in {path}")
    return encoder

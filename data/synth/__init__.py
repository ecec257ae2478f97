"""Synthetic DCASE-format machine sounds: the embedded default data set for the main job and the tests.

:func:`synthesize` writes the DCASE 2025 development layout for the seven dev machine types::

    <out>/<machine>/train/section_00_{source,target}_train_normal_NNNN_<attrs>.wav
    <out>/<machine>/test/section_00_{source,target}_test_{normal,anomaly}_NNNN_<attrs>.wav
    <out>/<machine>/attributes_00.csv        (file_name,d1p,d1v,d2p,d2v,... as DCASE ships it)
    <out>/synth_manifest.csv                 (one row per clip, incl. the anomaly kind)

Clips are 16 kHz, 16-bit PCM mono. Each machine type is a small physical model (harmonic stacks
that follow a fluctuating shaft speed, gear mesh with shaft sidebands, defect impulses exciting
structural resonances, solenoid clicks, stroke profiles, pass-by geometry, ...) mixed with factory
background noise. Attributes (speed, load, model, microphone, pattern) change the physics; the
target domain draws from other attribute values (mostly unseen in the source domain: other car
models, speeds, loads, microphone positions, valve patterns, a front panel) and records in another
factory (different noise colour, a neighbouring machine's drone, distant impacts, lower SNR), so
the shift is real. Anomalies are subtle (random severity), of four kinds per machine, and occur in both
domains.

Design targets, checked by ``tests/test_synth.py`` and reported by ``bench/synth.py``:

* not trivially separable: comparing a clip's time-averaged log-mel with the training mean stays
  well below 0.80 AUC on average (normal clips vary in speed, load, noise level, phase, gain);
* learnable: anomalies are localised in time (knocks, clicks, rattles) or frequency (sidebands,
  squeal, whine), so frame-level or spectral-peak detectors beat chance;
* deterministic: every clip is seeded from (seed, machine, split, domain, label, index) only, so
  the bytes on disk do not depend on generation order or on the number of worker processes.

Inside :func:`render_clip` three independent random streams are derived from the clip seed: one
for the attributes, one for the normal sound, one for the anomaly. Rendering the same seed as
``"normal"`` and as ``"anomaly"`` therefore gives the same machine, the same background and the
same phases, differing only by the fault — which is how the tests check that anomalies are audible.
"""

from __future__ import annotations

import importlib

# public name -> module; imported on first use (PEP 562), so SynthConfig is cheap to read
_EXPORTS = {
    "SynthConfig": "config", "DEV_MACHINES": "config", "TOY_MACHINES": "config", "DOMAINS": "config",
    "LABELS": "config", "SECTION": "config", "MANIFEST_NAME": "config", "SEVERITY_RANGE": "config",
    "MIN_SECONDS": "config",
    "ANOMALY_KINDS": "generate", "ATTRIBUTE_VALUES": "generate", "attributes_string": "generate",
    "clip_entropy": "generate", "draw_attributes": "generate", "render_clip": "generate", "synthesize": "generate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'data.synth' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

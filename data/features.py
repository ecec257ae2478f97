"""Log-mel front end (paper section 3.2) and its on-disk feature cache.

One typed :class:`FeatureConfig` fixes everything that changes the numbers. The cache stores one
float16 ``.npy`` per clip under ``<cache_root>/<config key>/``; the file name hashes the clip's
resolved path, size and mtime, so an edited clip or a changed config can never be served stale
features. Writes go to a temporary file in the same folder followed by ``os.replace`` (atomic on
POSIX), so two processes or Ray workers extracting the same clip at once both leave a valid file
and readers never see a partial one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torchaudio
from tqdm.auto import tqdm

from .atomic import atomic_save_npy, atomic_write_text
from .audio import BadAudioError, load_clip
from .config import FeatureConfig



class LogMelExtractor(torch.nn.Module):
    """Batched waveform → log-mel: (B, T) float32 → (B, n_mels, n_frames) in dB."""

    def __init__(self, cfg: FeatureConfig = FeatureConfig()):
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.audio.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            power=cfg.power,
            center=True,
            pad_mode=cfg.pad_mode,
            norm=cfg.mel_norm,
            mel_scale=cfg.mel_scale,
        )

    def forward(self, waves: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        if waves.dim() == 1:
            waves = waves.unsqueeze(0)
        spec = self.mel(waves)
        spec = 10.0 * torch.log10(spec.clamp_min(self.cfg.log_floor))
        target = self.cfg.n_frames if n_frames is None else n_frames
        if target <= 0:  # keep the natural length (scoring recordings of any length)
            return spec
        if spec.shape[-1] >= target:
            return spec[..., :target]
        # centre padding gives 1 + T // hop frames; pad the tail by repeating the last frame
        return torch.nn.functional.pad(spec, (0, target - spec.shape[-1]), mode="replicate")


def file_identity(path: str | Path) -> str:
    """Hash of resolved path, size and mtime: changes whenever the clip on disk changes."""
    p = Path(path).resolve()
    st = p.stat()
    return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def default_cache_root() -> Path:
    env = os.environ.get("BOHB_SEARCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bohb-search" / "features"


class FeatureCache:
    """Per-clip float16 feature files keyed by (file identity, feature config)."""

    def __init__(self, root: str | Path | None, cfg: FeatureConfig):
        self.cfg = cfg
        self.root = Path(root) if root is not None else default_cache_root()
        self.dir = self.root / cfg.key()
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "feature_config.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps(cfg.to_dict(), indent=2, sort_keys=True))

    def path_for(self, clip: str | Path) -> Path:
        ident = file_identity(clip)
        return self.dir / ident[:2] / f"{ident}.npy"

    def get(self, clip: str | Path) -> np.ndarray | None:
        p = self.path_for(clip)
        if not p.exists():
            return None
        try:
            arr = np.load(p, mmap_mode="r")
        except (ValueError, OSError):  # a foreign/corrupt file: recompute rather than crash
            return None
        if arr.shape != (self.cfg.n_mels, self.cfg.n_frames):
            return None
        return arr

    def put(self, clip: str | Path, feature: np.ndarray) -> None:
        atomic_save_npy(self.path_for(clip), np.asarray(feature, dtype=np.float16))


@dataclass
class FeatureResult:
    """Features for the clips that loaded; ``index`` maps rows back to the input list."""

    features: np.ndarray  # (N_ok, n_mels, n_frames) float16
    index: np.ndarray  # positions in the input path list of the rows of ``features``
    skipped: list[tuple[str, str]]  # (path, one-line reason) for files skipped as bad
    n_computed: int
    n_cached: int
    seconds: float

    @property
    def clips_per_second(self) -> float:
        return (self.n_computed + self.n_cached) / max(self.seconds, 1e-9)

    def summary(self) -> str:
        s = (
            f"{self.n_computed + self.n_cached} clips in {self.seconds:.1f} s "
            f"({self.clips_per_second:.1f} clips/s): {self.n_computed} computed, {self.n_cached} read from cache"
        )
        if self.skipped:
            s += f", {len(self.skipped)} bad file(s) skipped"
        return s


def extract_features(
    paths: Sequence[str | Path],
    cfg: FeatureConfig = FeatureConfig(),
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    on_bad_file: Literal["fail", "skip"] = "fail",
    progress: bool = True,
    io_threads: int = 4,
) -> FeatureResult:
    """Log-mels for ``paths``: read from the cache where present, else computed in batches and cached.

    ``on_bad_file='fail'`` raises the first :class:`BadAudioError`; ``'skip'`` drops the clip and
    reports it in ``FeatureResult.skipped``.
    """
    if on_bad_file not in ("fail", "skip"):
        raise ValueError(f"on_bad_file must be 'fail' or 'skip', got {on_bad_file!r}")
    t0 = time.perf_counter()
    paths = [Path(p) for p in paths]
    cache = FeatureCache(cache_dir, cfg) if use_cache else None
    extractor = LogMelExtractor(cfg)
    out = np.zeros((len(paths), cfg.n_mels, cfg.n_frames), dtype=np.float16)
    ok = np.zeros(len(paths), dtype=bool)
    skipped: list[tuple[str, str]] = []
    n_cached = 0
    todo: list[int] = []
    for i, p in enumerate(paths):
        hit = cache.get(p) if cache is not None and p.exists() else None
        if hit is not None:
            out[i] = hit
            ok[i] = True
            n_cached += 1
        else:
            todo.append(i)

    def _load(i: int):
        try:
            return i, load_clip(paths[i], cfg.audio), None
        except BadAudioError as err:
            return i, None, err
        except FileNotFoundError:
            return i, None, BadAudioError(paths[i], "file not found")

    n_computed = 0
    bar = tqdm(total=len(todo), desc="log-mel", unit="clip", disable=not progress or not todo)
    with ThreadPoolExecutor(max_workers=max(1, io_threads)) as pool:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            loaded = list(pool.map(_load, chunk))
            good = []
            for i, wave, err in loaded:
                if err is not None:
                    if on_bad_file == "fail":
                        bar.close()
                        raise err
                    skipped.append((str(paths[i]), err.reason))
                else:
                    good.append((i, wave))
            if good:
                with torch.inference_mode():
                    feats = extractor(torch.from_numpy(np.stack([w for _, w in good]))).numpy()
                for (i, _), f in zip(good, feats):
                    out[i] = f.astype(np.float16)
                    ok[i] = True
                    if cache is not None:
                        cache.put(paths[i], out[i])
                n_computed += len(good)
            bar.update(len(chunk))
    bar.close()
    index = np.flatnonzero(ok)
    return FeatureResult(
        features=out[index] if not ok.all() else out,
        index=index,
        skipped=skipped,
        n_computed=n_computed,
        n_cached=n_cached,
        seconds=time.perf_counter() - t0,
    )


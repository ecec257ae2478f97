"""Log-mel front end: the project's batched torchaudio extraction against librosa, and the feature cache.

Measured side by side in one run on the same clips, and written to the "features" section of BENCHMARKS.md:

(a) agreement: ``LogMelExtractor`` (float32) and the float16 output of ``extract_features`` against a librosa
    implementation of the same log-mel (16 kHz, n_fft 1024, hop 156, win 1024, periodic Hann, 128 HTK mels
    without normalisation, power 2, centred with reflect padding, 10*log10(max(S, 1e-10)), crop to the
    configured frame count) — maximum and 99.9th-percentile absolute difference in dB;
(b) throughput from files: ``extract_features(..., use_cache=False)`` (threaded WAV reading + batched
    torchaudio) against ``load_clip`` + librosa clip by clip;
(c) compute only, on waveforms already in memory: ``LogMelExtractor`` on one batch against librosa clip by clip
    and librosa on the stacked (batch, samples) array;
(d) cache: a second ``extract_features`` call with a cache directory (every clip read back, none computed)
    against extraction without the cache.

Candidates of one comparison run interleaved (A B C A B C ...), so a load spike from other jobs on this shared
machine hits all of them; tables report medians (and the best run) and ratios. The clips are synthesized
(``data.synth``, 10 s, 16 kHz) into a temporary folder that is removed afterwards.

    .venv/bin/python -m bench.features                 # about 1-2 minutes on 2 busy cores
    .venv/bin/python -m bench.features --clips 40 --reps 3 --no-write
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._report import interleaved, machine_line, update_section
from data.audio import load_clip
from data.features import FeatureConfig, LogMelExtractor, extract_features
from data.synth import SynthConfig, synthesize

MACHINES = ("fan", "valve", "gearbox", "bearing")


def librosa_logmel(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The same log-mel written with librosa: (..., samples) → (..., n_mels, n_frames) float32 dB."""
    import librosa

    spec = librosa.feature.melspectrogram(
        y=wave, sr=cfg.audio.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window="hann", center=True, pad_mode="reflect", power=cfg.power, n_mels=cfg.n_mels, fmin=cfg.f_min,
        fmax=cfg.f_max, htk=True, norm=None, dtype=np.float32,
    )
    db = 10.0 * np.log10(np.maximum(spec, cfg.log_floor))
    n = cfg.n_frames
    if db.shape[-1] >= n:
        return db[..., :n]
    pad = [(0, 0)] * (db.ndim - 1) + [(0, n - db.shape[-1])]
    return np.pad(db, pad, mode="edge")


def load_avg() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def make_clips(root: Path, n_clips: int, seconds: float) -> list[Path]:
    per_machine = max(1, -(-n_clips // len(MACHINES)))
    cfg = SynthConfig(machines=MACHINES, train_source=per_machine, train_target=0, test_per_cell=0, seconds=seconds)
    df = synthesize(root, cfg, workers=os.cpu_count() or 1, progress=False)
    return [Path(p) for p in sorted(df["path"])][:n_clips]


def run(n_clips: int, reps: int, threads: int, batch_size: int) -> str:
    torch.set_num_threads(threads)
    cfg = FeatureConfig()
    started = time.perf_counter()
    load_before = load_avg()
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = make_clips(tmp / "clips", n_clips, cfg.audio.seconds)
        synth_s = time.perf_counter() - t0
        n = len(paths)
        waves = np.stack([load_clip(p, cfg.audio) for p in paths])  # (n, 160000) float32
        extractor = LogMelExtractor(cfg)

        # ---- (a) agreement
        with torch.inference_mode():
            ta = torch.cat([extractor(torch.from_numpy(waves[i : i + batch_size])) for i in range(0, n, batch_size)]).numpy()
        lr = np.stack([librosa_logmel(w, cfg) for w in waves])
        lr_batched = librosa_logmel(waves, cfg)
        ef = extract_features(paths, cfg, use_cache=False, batch_size=batch_size, progress=False)
        assert ta.shape == lr.shape == (n, cfg.n_mels, cfg.n_frames), (ta.shape, lr.shape)
        d32 = np.abs(ta.astype(np.float64) - lr)
        d16 = np.abs(ef.features.astype(np.float64) - lr)
        dbat = np.abs(lr_batched.astype(np.float64) - lr)
        above = lr > -90.0  # bins well above the -100 dB floor, where float32 rounding is not amplified by log10
        agreement = [
            ("`LogMelExtractor` (float32) vs librosa", d32),
            ("`extract_features` (float16 cache dtype) vs librosa", d16),
            ("librosa batched vs librosa per clip", dbat),
        ]

        # ---- (b) + (c) throughput
        def from_files_torch():
            extract_features(paths, cfg, use_cache=False, batch_size=batch_size, progress=False)

        def from_files_librosa():
            for p in paths:
                librosa_logmel(load_clip(p, cfg.audio), cfg)

        def compute_torch():
            with torch.inference_mode():
                for i in range(0, n, batch_size):
                    extractor(torch.from_numpy(waves[i : i + batch_size]))

        def compute_torch_2t():
            torch.set_num_threads(2)
            try:
                compute_torch()
            finally:
                torch.set_num_threads(threads)

        def compute_librosa_loop():
            for w in waves:
                librosa_logmel(w, cfg)

        def compute_librosa_batched():
            for i in range(0, n, batch_size):
                librosa_logmel(waves[i : i + batch_size], cfg)

        # ---- (d) cache: fill it once, then every call reads all clips back
        cache_dir = tmp / "cache"
        first = extract_features(paths, cfg, cache_dir=cache_dir, batch_size=batch_size, progress=False)
        assert first.n_computed == n and first.n_cached == 0, first.summary()
        cache_counts: list[tuple[int, int]] = []

        def cache_read():
            res = extract_features(paths, cfg, cache_dir=cache_dir, batch_size=batch_size, progress=False)
            cache_counts.append((res.n_computed, res.n_cached))

        times = interleaved({
            "files_torch": from_files_torch, "files_librosa": from_files_librosa,
            "compute_torch": compute_torch, "compute_torch_2t": compute_torch_2t, "compute_librosa_loop": compute_librosa_loop,
            "compute_librosa_batched": compute_librosa_batched, "cache_read": cache_read,
        }, reps=reps)
        assert all(c == (0, n) for c in cache_counts), cache_counts
        cached = extract_features(paths, cfg, cache_dir=cache_dir, batch_size=batch_size, progress=False)
        cache_exact = bool(np.array_equal(cached.features, ef.features))
        cache_bytes = sum(f.stat().st_size for f in cache_dir.rglob("*.npy"))
        wav_bytes = sum(p.stat().st_size for p in paths)
    load_after = load_avg()
    total_min = (time.perf_counter() - started) / 60

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    cps = {k: n / v for k, v in med.items()}

    lines = [
        "## features — log-mel front end: torchaudio (project) vs librosa, and the feature cache (`bench/features.py`)",
        "",
        f"`.venv/bin/python -m bench.features` on {machine_line()}; whole run {total_min:.1f} min. "
        f"torch threads: {threads} (one row: 2); librosa/numpy single-threaded FFT; `extract_features` reads WAVs with 4 I/O "
        f"threads and computes in batches of {batch_size}. 1-min load average {load_before} before, {load_after} after: "
        "the 2 cores were shared with other jobs, so absolute times are context only — compare the ratios, "
        f"which come from {reps} interleaved repetitions (A B C … A B C …) after one warm-up round.",
        "",
        f"Data: {n} synthetic clips (`data.synth`: {', '.join(MACHINES)}; 10 s, 16 kHz, 16-bit PCM; "
        f"{wav_bytes / 1e6:.0f} MB of WAV, synthesized in {synth_s:.0f} s into a temporary folder), "
        f"features {cfg.n_mels} × {cfg.n_frames} per clip (hop {cfg.hop_length}). All files sat in the OS page cache, "
        "so the from-file rows measure decoding + compute, not disk reads.",
        "",
        "### (a) Same numbers?",
        "",
        "librosa: `melspectrogram(sr=16000, n_fft=1024, hop_length=156, win_length=1024, window='hann', center=True, "
        "pad_mode='reflect', power=2, n_mels=128, htk=True, norm=None)`, then `10*log10(max(S, 1e-10))`, cropped to "
        "1024 frames. Absolute differences in dB over all "
        f"{n} × {cfg.n_mels} × {cfg.n_frames} values (\"> −90 dB\": bins where librosa gives more than −90 dB, "
        f"{above.mean() * 100:.1f} % of them).",
        "",
        "| comparison | max | 99.9th pct | mean | max where > −90 dB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, d in agreement:
        lines.append(f"| {name} | {d.max():.2e} | {np.quantile(d, 0.999):.2e} | {d.mean():.2e} | {d[above].max():.2e} |")
    lines += [
        "",
        "The float16 row is the precision of what the cache stores and training reads (float16 has 11 significant "
        "bits: steps of 1/32 dB between 32 and 64 dB in magnitude, 1/16 dB up to 128).",
        "",
        "### (b)–(d) Throughput",
        "",
        "| what | candidate | median s | best s | clips/s (median) | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def row(what, key, label, ratio=""):
        return f"| {what} | {label} | {med[key]:.2f} | {best[key]:.2f} | {cps[key]:.1f} | {ratio} |"

    r_files = med["files_librosa"] / med["files_torch"]
    r_loop = med["compute_librosa_loop"] / med["compute_torch"]
    r_bat = med["compute_librosa_batched"] / med["compute_torch"]
    r_cache = med["files_torch"] / med["cache_read"]
    lines += [
        row("(b) from WAV files", "files_torch", "`extract_features(use_cache=False)`", f"**{r_files:.1f}×** vs librosa"),
        row("(b) from WAV files", "files_librosa", "`load_clip` + librosa, clip by clip", "1.0"),
        row("(c) in memory", "compute_torch", f"`LogMelExtractor`, batches of {batch_size}", f"**{r_loop:.1f}×** vs loop, {r_bat:.1f}× vs batched"),
        row("(c) in memory", "compute_torch_2t", f"`LogMelExtractor`, batches of {batch_size}, 2 torch threads",
            f"{med['compute_librosa_loop'] / med['compute_torch_2t']:.1f}× vs loop"),
        row("(c) in memory", "compute_librosa_loop", "librosa, clip by clip", "1.0"),
        row("(c) in memory", "compute_librosa_batched", f"librosa on (batch {batch_size}, samples) arrays", f"{med['compute_librosa_loop'] / med['compute_librosa_batched']:.2f}× vs loop"),
        row("(d) cache", "cache_read", "`extract_features`, 2nd call with cache dir", f"**{r_cache:.1f}×** vs extraction"),
        row("(d) cache", "files_torch", "`extract_features(use_cache=False)`", "1.0"),
        "",
        f"Every cache call returned n_computed = 0, n_cached = {n} ({reps + 1} calls checked); the cache holds "
        f"{cache_bytes / 1e6:.1f} MB of float16 `.npy` ({cache_bytes / max(wav_bytes, 1):.2f}× the WAV size) and gives "
        f"back {'exactly' if cache_exact else 'NOT exactly'} the array of the uncached call. The librosa rows compute "
        "float32 (`dtype=np.float32` STFT); the project's rows also convert to float16.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=100, help="number of 10 s clips (default 100)")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: same as librosa's FFT)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-write", action="store_true", help="print the section, do not touch BENCHMARKS.md")
    args = ap.parse_args(argv)
    md = run(args.clips, args.reps, args.threads, args.batch_size)
    print(md)
    if not args.no_write:
        update_section("features", md)


if __name__ == "__main__":
    main()

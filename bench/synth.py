"""Benchmark the synthetic DCASE generator: full 2025-size set, then how hard the data is.

Run as ``.venv/bin/python -m bench.synth`` (``--quick`` for a small smoke run). It

1. generates the DCASE 2025-size development set (7 machines x 1,200 clips of 10 s:
   990 source + 10 target train, 4 x 50 test) into a temporary folder with
   ``workers=os.cpu_count()`` and times it;
2. computes log-mels of every clip with the project's front end and scores two reference
   detectors per machine on that same set: the trivial one (distance of a clip's time-averaged
   log-mel to the training mean; must stay below 0.80 mean AUC) and a simple nearest-neighbour
   detector on per-bin frame statistics (shows the anomalies are learnable);
3. writes the "synth" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from bench._report import machine_line, update_section
from data.synth import DEV_MACHINES, SynthConfig, synthesize

# torch, torchaudio and sklearn are imported inside the functions that need them: the generator's
# 'spawn' workers re-import this main module, and each would otherwise pay seconds of import time.


def clip_statistics(paths: list[str], seconds: float, batch: int = 32) -> np.ndarray:
    """Per clip: per-mel-bin time mean, time std and mean |frame-to-frame change| (3 x 128)."""
    import torch

    from data.audio import AudioConfig
    from data.features import FeatureConfig, LogMelExtractor

    extractor = LogMelExtractor(FeatureConfig(audio=AudioConfig(seconds=seconds)))
    out = []
    for i in tqdm(range(0, len(paths), batch), desc="log-mel", unit="batch"):
        waves = np.stack([sf.read(p, dtype="float32")[0] for p in paths[i : i + batch]])
        with torch.inference_mode():
            mel = extractor(torch.from_numpy(waves)).numpy()
        out.append(np.concatenate([mel.mean(axis=2), mel.std(axis=2), np.abs(np.diff(mel, axis=2)).mean(axis=2)], axis=1))
    return np.concatenate(out)


def detector_aucs(df, stats: np.ndarray, n_mels: int = 128) -> dict[str, dict[str, float]]:
    """AUCs of the trivial mean-log-mel detector and a frame-statistics 2-NN detector per machine."""
    from sklearn.metrics import roc_auc_score

    result = {}
    for machine in DEV_MACHINES:
        d = df[df.machine == machine]
        if d.empty:
            continue
        train, test = d[d.split == "train"], d[d.split == "test"]
        labels = (test.label == "anomaly").to_numpy()
        src = (test.domain == "source").to_numpy()
        ftr, fte = stats[train.row.to_numpy()], stats[test.row.to_numpy()]
        trivial = np.linalg.norm(fte[:, :n_mels] - ftr[:, :n_mels].mean(axis=0), axis=1)
        mu, sd = ftr.mean(axis=0), ftr.std(axis=0) + 1e-3
        a, b = (ftr - mu) / sd, (fte - mu) / sd
        dist = (b**2).sum(axis=1)[:, None] + (a**2).sum(axis=1)[None, :] - 2.0 * b @ a.T
        knn = np.sort(dist, axis=1)[:, :2].mean(axis=1)
        result[machine] = {
            "trivial": roc_auc_score(labels, trivial),
            "trivial_source": roc_auc_score(labels[src], trivial[src]),
            "knn": roc_auc_score(labels, knn),
            "knn_source": roc_auc_score(labels[src], knn[src]),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small set (smoke test); does not touch BENCHMARKS.md")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--dir", default=None, help="parent folder for the temporary output (default: system temp)")
    args = ap.parse_args(argv)

    if args.quick:
        cfg = SynthConfig(train_source=40, train_target=3, test_per_cell=10, seconds=2.0)
    else:
        cfg = SynthConfig()  # DCASE 2025 size: 990 + 10 train, 4 x 50 test, 10 s, 7 machines
    n_clips = len(cfg.machines) * cfg.clips_per_machine
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_synth_") as tmp:
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        df = synthesize(Path(tmp) / "dev", cfg, workers=args.workers, progress=True)
        gen_s = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
        gbytes = sum(os.path.getsize(p) for p in df["path"]) / 1e9
        print(f"generated {n_clips} clips ({gbytes:.2f} GB) in {gen_s:.1f} s = {n_clips / gen_s:.1f} clips/s")
        df = df.assign(row=np.arange(len(df)))
        t1 = time.perf_counter()
        stats = clip_statistics(list(df["path"]), cfg.seconds)
        feat_s = time.perf_counter() - t1
    aucs = detector_aucs(df, stats)
    mean = {k: float(np.mean([v[k] for v in aucs.values()])) for k in ("trivial", "trivial_source", "knn", "knn_source")}
    for m, v in aucs.items():
        print(f"{m:9s} " + "  ".join(f"{k} {x:.3f}" for k, x in v.items()))
    print("mean      " + "  ".join(f"{k} {x:.3f}" for k, x in mean.items()))
    if args.quick:
        return

    rows = "\n".join(
        f"| {m} | {v['trivial']:.3f} | {v['trivial_source']:.3f} | {v['knn']:.3f} | {v['knn_source']:.3f} |" for m, v in aucs.items()
    )
    md = f"""## synth — synthetic DCASE 2025-size development set

`.venv/bin/python -m bench.synth` on {machine_line()}.

Generation of the full set — {len(cfg.machines)} machine types x {cfg.clips_per_machine:,} clips
({cfg.train_source} source + {cfg.train_target} target train, 4 x {cfg.test_per_cell} test) of
{cfg.seconds:g} s at {cfg.sample_rate} Hz, 16-bit PCM, `workers={args.workers}` (1-min load average
{load_before:.1f} before, {load_after:.1f} after: the cores were shared with other jobs):

| clips | total (s) | clips/s | written |
|---:|---:|---:|---:|
| {n_clips:,} | {gen_s:.1f} | {n_clips / gen_s:.1f} | {gbytes:.2f} GB |

How hard is it? AUC on that same set (200 test clips per machine, {cfg.train_source + cfg.train_target} training
clips; log-mels of all clips took {feat_s:.0f} s). *Trivial* = L2 distance of the clip's time-averaged
log-mel to the training mean (design target: mean below 0.80). *2-NN* = nearest-neighbour distance
on standardised per-bin time mean, std and mean frame-to-frame change — a simple learned statistic
that shows the anomalies are detectable. "all" pools both domains (equal to the mean of DCASE's
AUC(source) and AUC(target) here); "source" uses source-domain test clips only.

| machine | trivial, all | trivial, source | 2-NN, all | 2-NN, source |
|---|---:|---:|---:|---:|
{rows}
| **mean** | **{mean['trivial']:.3f}** | **{mean['trivial_source']:.3f}** | **{mean['knn']:.3f}** | **{mean['knn_source']:.3f}** |
"""
    update_section("synth", md)
    print("wrote the 'synth' section of BENCHMARKS.md")


if __name__ == "__main__":
    main()

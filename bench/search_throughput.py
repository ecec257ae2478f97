"""Search throughput: one real BOHB search with max_concurrent = 1 against the same search with 2.

Both searches run in this one process, one after the other on the same local Ray instance, on the same data,
pre-trained encoder, search space, seed and budget (``--trials`` trials, Hyperband max_t ``--max-epochs``,
η = ``--eta``, 1 CPU per trial) in the order A B B A (``--reps 2``, the default) so that a drift in the load of this
shared machine hits both. Figures come from each search's ``trials.csv`` and from a Tune callback that
stamps trial events in the driver, and are written to the "search-throughput" section of BENCHMARKS.md:

* trials per hour and epochs per hour (epochs = result rows of trials.csv, one per trained epoch) over the
  search's wall time (the ``run_search`` call: feature loading, Ray actors, MLflow, checkpoints, CSV);
* where the time goes: Σ ``train_seconds`` (the trainer's own time, measured inside ``step()``) against
  Σ per-trial ``time_total_s`` (Ray's measure: the time inside ``Trainable.train()``, i.e. around ``step()``
  only — checkpoint saves/restores, actor start and result handling are outside it) and against the slot time
  ``max_concurrent × wall`` that the search occupied.

Data: ``data.synth`` fan + valve, ``--train-source`` source + 2 target training clips and 6 test clips per
(domain × label) cell per machine, ``--seconds`` s clips; a small encoder (D = ``--dim``, depth 2) pre-trained for
one epoch; search on fan. The defaults make one epoch of a trial take several seconds of training (the issue's
"real epochs"): with sub-second epochs the per-trial overhead in the driver decides the ratio instead of the
training. Each trial sets its torch threads from the CPUs Ray gave it (1); trials.csv records it. Everything is
written to a temporary folder that is removed afterwards (``--keep`` keeps it).

    .venv/bin/python -m bench.search_throughput             # about 15 minutes on 2 busy cores
    .venv/bin/python -m bench.search_throughput --trials 3 --max-epochs 3 --seconds 2 --train-source 20 --no-write
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench._report import machine_line, update_section

RAY_START = {"s": float("nan")}


def _callback_class():
    from ray.tune import Callback

    class TrialClock(Callback):
        """Wall-clock stamps (driver side) of trial starts, restores, saves, results and ends."""

        def __init__(self):
            self.events: list[tuple[float, str, str]] = []

        def _add(self, kind, trial):
            self.events.append((time.time(), kind, str(trial.trial_id)))

        def on_trial_start(self, iteration, trials, trial, **info):
            self._add("start", trial)

        def on_trial_restore(self, iteration, trials, trial, **info):
            self._add("restore", trial)

        def on_trial_save(self, iteration, trials, trial, **info):
            self._add("save", trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._add("result", trial)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._add("complete", trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._add("error", trial)

    return TrialClock


def load_avg() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def prepare(root: Path, args) -> dict:
    from bohb_search.train.configs import PretrainConfig
    from bohb_search.train.runs import run_pretrain
    from data.audio import AudioConfig
    from data.config import RunOptions
    from data.features import FeatureConfig
    from data.synth import SynthConfig, synthesize
    from models import encoder_preset

    data = root / "data"
    t0 = time.perf_counter()
    df = synthesize(data, SynthConfig(machines=("fan", "valve"), train_source=args.train_source, train_target=2,
                                      test_per_cell=6, seconds=args.seconds), workers=os.cpu_count() or 1, progress=False)
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pre = run_pretrain(PretrainConfig(epochs=1, batch_size=16), [data], root / "pre",
                       encoder_preset("tiny", dim=args.dim, depth=2), FeatureConfig(audio=AudioConfig(seconds=args.seconds)),
                       RunOptions(cache_dir=root / "cache", device="cpu", quiet=True))
    return {"data": data, "pre": pre, "cache": root / "cache", "clips": len(df), "synth_s": synth_s,
            "pretrain_s": time.perf_counter() - t0}


def one_search(env: dict, root: Path, name: str, concurrent: int, args) -> dict:
    from bohb_search.tune.runner import default_space, run_search
    from bohb_search.tune.settings import SearchSettings

    settings = SearchSettings(
        name=name, data=[str(env["data"])], machines=["fan"], pretrained=str(env["pre"]), space=default_space(False),
        num_samples=args.trials, max_epochs=args.max_epochs, eta=args.eta, cpus_per_trial=1.0, gpus_per_trial=0.0,
        max_concurrent=concurrent, storage_path=str(root / "searches"),
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", cache_dir=str(env["cache"]), device="cpu",
        finetune={"batch_size": 16, "seed": 0})
    clock = _callback_class()()
    load_before = load_avg()
    t0, t0_epoch = time.perf_counter(), time.time()
    best = run_search(settings, verbose=0, extra_callbacks=[clock])
    wall = time.perf_counter() - t0
    t_end = t0_epoch + wall
    table = pd.read_csv(root / "searches" / name / "trials.csv")
    rows = table.dropna(subset=["epoch"]) if "epoch" in table else table.iloc[0:0]
    per_trial = rows.groupby("trial_id").agg(train=("train_seconds", "sum"), ray=("time_total_s", "max"),
                                            epochs=("epoch", "count"))
    starts = [t for t, kind, _ in clock.events if kind == "start"]
    last = max((t for t, _, _ in clock.events), default=float("nan"))
    before = (min(starts) - t0_epoch) if starts else float("nan")
    after = t_end - last
    kinds = [kind for _, kind, _ in clock.events]
    resumed = int(rows.loc[rows["restored_from_epoch"] > 0, "trial_id"].nunique()) if "restored_from_epoch" in rows else 0
    return {
        "name": name, "concurrent": concurrent, "wall": wall, "load_before": load_before, "load_after": load_avg(),
        "trials": int(table["trial_id"].nunique()), "epochs": int(per_trial["epochs"].sum()),
        "statuses": table.groupby("status")["trial_id"].nunique().to_dict(),
        "train": float(per_trial["train"].sum()), "ray": float(per_trial["ray"].sum()),
        "before": before, "after": after, "resumed": resumed, "saves": kinds.count("save"),
        "threads": sorted({int(t) for t in rows["torch_threads"].dropna()}) if "torch_threads" in rows else [],
        "best": float(best["metric"]["value"]),
    }


def report(env: dict, runs: list[dict], args, total_min: float) -> str:
    by = {c: [r for r in runs if r["concurrent"] == c] for c in (1, 2)}

    def m(c, f):
        return statistics.median(f(r) for r in by[c])

    def tph(r):
        return r["trials"] / r["wall"] * 3600

    def eph(r):
        return r["epochs"] / r["wall"] * 3600

    def eph_trial_phase(r):
        return r["epochs"] / (r["wall"] - r["before"]) * 3600

    lines = [
        "## search-throughput — BOHB search with 1 vs 2 concurrent trials (`bench/search_throughput.py`)",
        "",
        f"`{' '.join(['.venv/bin/python -m bench.search_throughput', *sys.argv[1:]])}` on {machine_line()}; whole run "
        f"{total_min:.1f} min. "
        "The 2 cores were shared with other jobs (1-min load average per search below), so absolute times are "
        "context only; compare the ratios.",
        "",
        f"Setup: `data.synth` fan + valve, {args.train_source} source + 2 target train and 6 test clips per cell per "
        f"machine ({env['clips']} clips of {args.seconds:g} s); SSM encoder (D = {args.dim}, depth 2) pre-trained 1 epoch "
        f"({env['pretrain_s']:.0f} s); `run_search` on fan with the default space, {args.trials} trials, "
        f"Hyperband max_t = {args.max_epochs} epochs, η = {args.eta}, batch 16, seed 0, `cpus_per_trial=1`, "
        f"CPU (torch threads per trial, from Ray's assignment, as recorded in trials.csv: "
        f"{sorted({t for r in runs for t in r['threads']})}), local Ray with {os.cpu_count()} CPUs (started once before the searches), MLflow in a temporary SQLite store, "
        f"checkpoint every epoch. Order of the searches: {' → '.join(r['name'] for r in runs)} (same process, same "
        "Ray instance), after one untimed warm-up search (2 trials, max_t 3) that creates the MLflow tables and "
        "warms the caches.",
        "",
        "| search | max_concurrent | wall s | of which before 1st trial | trials (status) | epochs | trials/h | epochs/h | "
        "epochs/h after 1st trial start | Σ train_seconds | Σ time_total_s | train / time_total | "
        "train / (slots × wall) | best_val_auc | load before → after |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        st = ", ".join(f"{n} {s}" for s, n in sorted(r["statuses"].items()))
        lines.append(
            f"| {r['name']} | {r['concurrent']} | {r['wall']:.1f} | {r['before']:.1f} | {r['trials']} ({st}) | "
            f"{r['epochs']} | {tph(r):.0f} | {eph(r):.0f} | {eph_trial_phase(r):.0f} | {r['train']:.1f} | {r['ray']:.1f} | {r['train'] / r['ray']:.3f} | "
            f"{r['train'] / (r['concurrent'] * r['wall']):.2f} | {r['best']:.3f} | {r['load_before']} → {r['load_after']} |")
    r_t = m(2, tph) / m(1, tph)
    r_e = m(2, eph) / m(1, eph)
    out1 = [1 - r["train"] / r["ray"] for r in by[1]]
    out_slot = {c: [1 - r["train"] / (c * r["wall"]) for r in by[c]] for c in (1, 2)}
    per_epoch = {c: m(c, lambda r: r["train"] / r["epochs"]) for c in (1, 2)}
    lines += [
        "",
        f"**max_concurrent = 2 vs 1: {r_t:.2f}× the trials per hour, {r_e:.2f}× the epochs per hour** "
        f"(median over {len(by[1])} search(es) each); counting only the time after each search's first trial "
        f"started: {m(2, eph_trial_phase) / m(1, eph_trial_phase):.2f}× the epochs per hour. An epoch took about "
        f"{statistics.median(r['train'] / r['epochs'] for r in runs):.1f} s of training (median over all searches; "
        "goal: ≥ 1.5× the trials per hour with 2 concurrent trials on 2 cores).",
        "",
        "Where a trial's time goes:",
        "",
        f"- Inside Ray's own measure (`time_total_s`, the time around `step()`), the trainer's `train_seconds` is "
        f"{100 * statistics.median(r['train'] / r['ray'] for r in runs):.1f} % of it (median over all searches), "
        "so this measure cannot show the overhead: it lies outside `Trainable.train()`.",
        f"- Over the whole search, training filled {100 * (1 - statistics.median(out_slot[1])):.0f} % of the single "
        f"slot's wall time at max_concurrent = 1 and {100 * (1 - statistics.median(out_slot[2])):.0f} % of the two "
        f"slots' (2 × wall) at max_concurrent = 2; the rest — **{100 * statistics.median(out_slot[1]):.0f} % and "
        f"{100 * statistics.median(out_slot[2]):.0f} %** — is outside training: loading the cached features and "
        "starting the trial actors, per-epoch checkpoint saves and restores of paused "
        "trials, MLflow logging in the driver, BOHB/Hyperband decisions and idle slots while a rung waits for its "
        "last trial.",
        f"- Of that, {m(1, lambda r: r['before']):.1f} s (1) and {m(2, lambda r: r['before']):.1f} s (2) passed "
        "before the first trial started (search-space and settings files, MLflow parent run, loading the cached "
        "features, putting them in Ray's object store, starting the trial actor: a fresh Python process that "
        f"imports torch — two of them at once at max_concurrent = 2), and {m(1, lambda r: r['after']):.1f} s (1) and {m(2, lambda r: r['after']):.1f} s (2) "
        "after the last trial event (trials.csv, best_config.json, MLflow artifacts) — medians; Ray itself was "
        f"started once before the first search ({RAY_START['s']:.1f} s, not counted in any search's wall time).",
        f"- Trainer time per epoch was {per_epoch[1]:.2f} s at max_concurrent = 1 and {per_epoch[2]:.2f} s at 2 "
        f"({per_epoch[2] / per_epoch[1]:.2f}× at 2; above 1 means that two trials on two cores other jobs also "
        "use slowed each other down).",
        "",
        "`time_total_s` is restored from the checkpoint when Hyperband resumes a paused trial, so the per-trial "
        "maximum is that trial's cumulative time across pauses. Trials resumed from a checkpoint after a Hyperband pause / checkpoint saves, per search: "
        + "; ".join(f"{r['name']} {r['resumed']} / {r['saves']}" for r in runs) + ".",
    ]
    if len(out1) and min(out1) < 0:
        lines.append("")
        lines.append("Note: Σ train_seconds exceeded Σ time_total_s for some search; see trials.csv.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=9)
    ap.add_argument("--max-epochs", type=int, default=9)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length of the synthetic data (s)")
    ap.add_argument("--train-source", type=int, default=40, help="source-domain training clips per cell per machine")
    ap.add_argument("--dim", type=int, default=64, help="encoder width")
    ap.add_argument("--reps", type=int, default=2, help="1: order 1, 2; 2: order 1, 2, 2, 1 (A B B A)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (searches, MLflow store)")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not touch BENCHMARKS.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        env = prepare(root, args)
        from bohb_search.tune.runner import ray_init

        t0 = time.perf_counter()
        ray_init(None)  # the same local Ray every search would start; started here so no search pays for it
        RAY_START["s"] = time.perf_counter() - t0
        # untimed warm-up: creates the MLflow tables, starts the first trial actor process, fills OS caches
        warm = argparse.Namespace(trials=2, max_epochs=3, eta=args.eta)
        one_search(env, root, "bench-warmup", 1, warm)
        order = [1, 2] + ([2, 1] if args.reps >= 2 else [])
        runs = []
        for i, c in enumerate(order):
            runs.append(one_search(env, root, f"bench-mc{c}-{i}", c, args))
            r = runs[-1]
            print(f"{r['name']}: {r['wall']:.0f} s, {r['trials']} trials, {r['epochs']} epochs, "
                  f"train {r['train']:.0f} s, time_total {r['ray']:.0f} s", flush=True)
        md = report(env, runs, args, (time.perf_counter() - started) / 60)
    finally:
        try:
            import ray

            ray.shutdown()
        except Exception:
            pass
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(md)
    if not args.no_write:
        update_section("search-throughput", md)


if __name__ == "__main__":
    main()

"""End-to-end time of the README's main job (`quickstart`), stage by stage, from an empty output folder.

    .venv/bin/python -m bench.quickstart

Runs ``python -m bohb_search quickstart --fresh --out <tmp>`` exactly as a user would (the environment
is already installed; ``./run`` adds the one-time install) and writes the "quickstart" section of
BENCHMARKS.md with the per-stage seconds the command prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._report import machine_line, update_section

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--note", default="", help="a sentence on the conditions of the run, printed under the time")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qs-bench-") as tmp:
        out = Path(tmp) / "quickstart"
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "bohb_search", "quickstart", "--fresh", "--quiet", "--out", str(out)],
                             cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"quickstart failed:\n{res.stderr[-3000:]}")
        stages = re.findall(r"^\[quickstart\] (.+?): ([0-9.]+) s$", res.stdout, flags=re.M)
        table = "\n".join(f"| {name} | {float(sec):.1f} |" for name, sec in stages)
        tables = res.stdout[res.stdout.find("| System | Metric"):res.stdout.find("[quickstart] done")].strip()
        md = f"""## Quickstart end to end (`bench/quickstart.py`)

`python -m bohb_search quickstart --fresh` (the README's main job, environment already installed) on {machine_line()}:
**{wall / 60:.1f} min** wall time (1-min load average before the run: {load_before:.1f}; target: under 10 min on 2 cores).{(" " + args.note) if args.note else ""}
Data: 7 synthetic machine types × (40 source + 4 target training clips, 40 test clips) of 10 s; encoder SSM
dim 64, depth 4, r = 4; BOHB searches: `fan` 9 trials up to 9 epochs and `generalized` 3 trials up to 3 epochs (η = 3);
final retrain at most 9 epochs, with the AE baseline.

| stage | seconds |
|---|---:|
{table}

Results printed by that run (tiny data and budgets: a smoke test of the pipeline, not a quality claim — see "detection"):

{tables}
"""
        update_section("quickstart", md)
        print(md)


if __name__ == "__main__":
    main()

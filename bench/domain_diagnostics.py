"""Does a detector's score follow the anomaly or the domain? Diagnostics for an `ablate` output folder.

    .venv/bin/python -m bench.domain_diagnostics results/bench/t1/ablation_big [--section ablation-diagnostics]

The official DCASE AUC of a domain ranks that domain's normal clips against the anomalies of *both*
domains, so a score that mostly encodes the domain moves AUC(source) and AUC(target) in opposite
directions while telling normal from anomalous no better than chance. For every fine-tuning run
(``runs/seed*/finetune_<recipe>/<machine>/evaluate/scores.csv``) this prints, per recipe, mean ± std
over seeds and machines of:

* ``AUC src n-vs-a`` / ``AUC tgt n-vs-a``: normal vs anomalous clips of the same domain only
  (pure detection, no domain shift in the comparison);
* ``domain AUC (normals)``: source normals vs target normals (0.5 = the score does not see the
  domain; 0 or 1 = it separates the domains perfectly) and ``|· − 0.5|``;
* the official AUC (source) / AUC (target) for reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

COLUMNS = ("auc_src_within", "auc_tgt_within", "domain_auc", "domain_gap", "auc_source", "auc_target")


def _auc(neg: np.ndarray, pos: np.ndarray) -> float:
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    return float(roc_auc_score(y, np.r_[neg, pos]))


def score_diagnostics(scores: pd.DataFrame) -> dict[str, float]:
    """The diagnostics of one scores table (columns domain, label, score; higher = more anomalous)."""
    missing = {"domain", "label", "score"} - set(scores.columns)
    if missing:
        raise ValueError(f"scores table lacks column(s) {', '.join(sorted(missing))}")

    def sel(domain: str | None, label: str) -> np.ndarray:
        m = scores["label"] == label
        if domain is not None:
            m &= scores["domain"] == domain
        return scores.loc[m, "score"].to_numpy(float)

    sn, tn = sel("source", "normal"), sel("target", "normal")
    anomalies = sel(None, "anomaly")
    domain_auc = _auc(sn, tn)
    return {
        "auc_src_within": _auc(sn, sel("source", "anomaly")),
        "auc_tgt_within": _auc(tn, sel("target", "anomaly")),
        "domain_auc": domain_auc,
        "domain_gap": abs(domain_auc - 0.5),
        "auc_source": _auc(sn, anomalies),
        "auc_target": _auc(tn, anomalies),
    }


def collect(root: str | Path) -> pd.DataFrame:
    """One row per fine-tuning run of an ``ablate`` folder: recipe, seed, machine and the diagnostics."""
    root = Path(root)
    rows = []
    for path in sorted(root.glob("runs/seed*/finetune_*/*/evaluate/scores.csv")):
        seed_dir, recipe_dir, machine_dir = path.parents[3], path.parents[2], path.parents[1]
        rows.append({"recipe": recipe_dir.name.removeprefix("finetune_"), "seed": seed_dir.name.removeprefix("seed"),
                     "machine": machine_dir.name, **score_diagnostics(pd.read_csv(path))})
    if not rows:
        raise ValueError(f"{root}: no runs/seed*/finetune_*/<machine>/evaluate/scores.csv (not an ablate output folder?)")
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation per recipe over its (seed, machine) runs, in first-seen order."""
    g = runs.groupby("recipe", sort=False)
    out = g[list(COLUMNS)].agg(["mean", "std"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out.insert(0, "n_runs", g.size())
    return out.reset_index()


def to_markdown(summary: pd.DataFrame) -> str:
    heads = {"auc_src_within": "AUC src n-vs-a", "auc_tgt_within": "AUC tgt n-vs-a",
             "domain_auc": "domain AUC (normals)", "domain_gap": "abs(domain AUC − 0.5)",
             "auc_source": "AUC (source)", "auc_target": "AUC (target)"}
    lines = ["| recipe | runs | " + " | ".join(heads.values()) + " |", "|:---|---:|" + "---:|" * len(heads)]
    for _, r in summary.iterrows():
        cells = [f"{r[f'{c}_mean']:.3f} ± {r[f'{c}_std']:.3f}" for c in heads]
        lines.append(f"| {r['recipe']} | {int(r['n_runs'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ablation_dir", type=Path, help="an `ablate --out` folder")
    p.add_argument("--section", default=None, help="also write the table into this BENCHMARKS.md section")
    args = p.parse_args(argv)
    runs = collect(args.ablation_dir)
    md = to_markdown(summarize(runs))
    print(md)
    if args.section:
        from bench._report import update_section

        update_section(args.section, f"`python -m bench.domain_diagnostics {args.ablation_dir}`\n\n{md}\n")


if __name__ == "__main__":
    main()

"""Does the GRL hide the domain when its classifier learns as fast as the feature extractor?

    .venv/bin/python -m bench.grl_domain_lr --ablation results/bench/t1/ablation_big --data results/bench/t1/data \
        [--machines fan valve slider gearbox] [--seed 0] [--domain-lr 1e-4 1e-3 1e-2] [--section grl-domain-lr]

Fine-tunes the full recipe (pOE + GRL) from the r = 4 SSM encoder that ``ablate`` pre-trained for ``--seed``,
with the ablation's fine-tuning settings, once per domain-classifier learning rate (the paper fixes 1e-4), and
reports the classifier's final training accuracy (0.5 = the domain is hidden from it), the domain diagnostics of
``bench.domain_diagnostics`` and the official AUCs (harmonic mean over machines). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from scipy.stats import hmean

from bench.domain_diagnostics import score_diagnostics
from bohb_search.evaluate.run import run_evaluate
from bohb_search.evaluate.tables import to_markdown
from bohb_search.train.configs import FinetuneConfig
from bohb_search.train.runs import run_finetune
from data.config import RunOptions


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ablation", type=Path, required=True, help="an `ablate --out` folder (its encoder and settings)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--machines", nargs="+", default=None, help="default: the ablation's machines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domain-lr", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="default: <ablation>/grl_domain_lr")
    p.add_argument("--section", default=None, help="also write the table into this BENCHMARKS.md section")
    args = p.parse_args(argv)

    settings_path = args.ablation / "ablation_settings.json"
    if not settings_path.exists():
        p.error(f"--ablation: {settings_path} not found (not an ablate output folder?)")
    settings = json.loads(settings_path.read_text())
    encoder = args.ablation / "runs" / f"seed{args.seed}" / "pretrain_ssm_r4" / "encoder.pt"
    if not encoder.exists():
        p.error(f"--seed {args.seed}: {encoder} not found")
    machines = args.machines or settings["machines"]
    out = args.out or args.ablation / "grl_domain_lr"
    rows = []
    for lr_d in args.domain_lr:
        per_machine = []
        for m in machines:
            run_dir = out / f"domain_lr_{lr_d:g}" / m
            if not (run_dir / "evaluate" / "metrics.json").exists():
                cfg = FinetuneConfig(**{**settings["finetune"], "seed": args.seed, "domain_lr": lr_d})
                opts = RunOptions(cache_dir=args.cache_dir, device="cpu", quiet=True)
                model = run_finetune(cfg, [args.data], run_dir, [m], pretrained=encoder, opts=opts)
                run_evaluate(model, [args.data], run_dir / "evaluate", system="full", opts=opts)
            hist = pd.read_csv(run_dir / "history.csv")
            diag = score_diagnostics(pd.read_csv(run_dir / "evaluate" / "scores.csv"))
            per_machine.append({"domain_acc": float(hist["domain_acc"].iloc[-1]), **diag})
        df = pd.DataFrame(per_machine)
        rows.append({"domain_lr": f"{lr_d:g}", "machines": len(df), "final domain acc": df["domain_acc"].mean(),
                     "abs(domain AUC − 0.5)": df["domain_gap"].mean(),
                     "AUC src n-vs-a": df["auc_src_within"].mean(), "AUC tgt n-vs-a": df["auc_tgt_within"].mean(),
                     "AUC (source) hmean": hmean(df["auc_source"]), "AUC (target) hmean": hmean(df["auc_target"])})
    table = pd.DataFrame(rows)
    md = to_markdown(table.set_index("domain_lr"), decimals=3)
    print(md)
    if args.section:
        from bench._report import update_section

        cmd = (f"python -m bench.grl_domain_lr --ablation {args.ablation} --data {args.data} --seed {args.seed} "
               f"--domain-lr {' '.join(f'{x:g}' for x in args.domain_lr)}")
        update_section(args.section, f"`{cmd}` (machines: {', '.join(machines)}; one seed)\n\n{md}\n")


if __name__ == "__main__":
    main()

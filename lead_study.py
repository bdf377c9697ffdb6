"""The paper's lead comparison: train and evaluate each single lead and all 12 with identical settings.

    python lead_study.py --data-dir data/CPSC --use-gpu                       # the paper's settings
    python lead_study.py --data-dir data/demo --preset demo                  # the demo\'s small runs

Trains and evaluates `all` and each of the 12 leads (runs data/<db>/runs/study_<arch>_<lead>_<seed>/),
then writes results/<db>/lead_study.csv and .md (per lead: test-fold mean F1 and AUC with bootstrap
95 % CIs, ranked by F1) and a bar chart.
It resumes: a lead whose checkpoint finished all epochs and whose metrics exist is not run again; a
run that was killed continues from its last epoch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from models.studies import results_dir_of, run_all, study_config, study_parser
from models.training import check_run_args, refuse_finetune_flags
from utils.errors import script_main
from utils.files import interval_errors, save_figure
from utils.labels import LEADS, parse_leads
from utils.results import EvaluationFolder, record_data
from utils.tables import Column, ci_columns, write_table
from utils.cli import flag_error
from utils.launch import launcher_from_args
from utils.presets import parse_with_preset


def parse_args(argv=None) -> argparse.Namespace:
    p = study_parser(__doc__)
    args = parse_with_preset(p, argv, "study")
    if args.init_from is not None:
        flag_error(p, "--init-from", "the lead study trains single leads; a finetuned run keeps its source's leads")
    refuse_finetune_flags(p, args, argv, "the lead study trains every lead from scratch")
    check_run_args(p, args, argv)
    args.launch = launcher_from_args(p, args, argv)
    return args


COLUMNS = [Column("rank", "rank"), Column("leads", "leads", align="left"),
           *ci_columns("f1", "mean F1 (95 % CI)", align="left"), *ci_columns("auc", "mean AUC (95 % CI)", align="left"),
           Column("precision"), Column("recall"), Column("accuracy"), Column("model")]


def lead_row(leads: str, results: Path) -> dict:
    """One row of the lead table: the test-fold mean metrics of one run."""
    mean = EvaluationFolder(results).summary().mean
    return {"leads": "all 12" if leads == "all" else leads, **{k: mean.get(k) for k in
            ("f1", "f1_lo", "f1_hi", "auc", "auc_lo", "auc_hi", "precision", "recall", "accuracy")},
            "model": results.name}


def plot_leads(table: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    y = np.arange(len(table))
    for ax, metric in zip(axes, ("f1", "auc")):
        err = interval_errors(table[metric], table[f"{metric}_lo"], table[f"{metric}_hi"])
        colours = ["#c0392b" if lead == "all 12" else "#5d6d7e" for lead in table["leads"]]
        ax.barh(y, table[metric], xerr=err, color=colours, capsize=2)
        ax.set_xlabel(f"test-fold mean {metric.upper()} (95 % CI)")
        ax.set_xlim(max(0.0, float(table[f"{metric}_lo"].min()) - 0.05), 1.0)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, table["leads"])
    axes[0].invert_yaxis()
    fig.suptitle("single leads versus all 12 (ranked by F1)")
    save_figure(fig, path)


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    names = ["all", *LEADS]
    done = run_all([study_config(args, parse_leads(leads)) for leads in names], args.results_dir, args.n_bootstrap,
                   args.launch)
    rows = [lead_row(leads, results) for leads, results in zip(names, done)]
    out = results_dir_of(args)
    table = pd.DataFrame(rows).sort_values("f1", ascending=False).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    plot_leads(table, out / "lead_study.png")  # first: a figure that fails leaves the old tables beside it
    md = write_table(table, COLUMNS, out / "lead_study")
    record_data(out / "lead_study.json", args.data_dir, [out / f"lead_study{s}" for s in (".csv", ".md", ".png")],
                done)
    print(md, end="")
    print(f"wrote {out}/lead_study.csv, .md and .png")
    return table


if __name__ == "__main__":
    main()

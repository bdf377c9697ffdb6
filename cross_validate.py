"""10-fold cross-validation of the deep model, the way the paper's supplement reports it.

    python cross_validate.py --data-dir data/CPSC --use-gpu                    # the paper's settings
    python cross_validate.py --data-dir data/demo --preset demo                  # the demo\'s small runs

Run k (k = 1..10) tests on fold k, validates (best epoch, thresholds) on fold k % 10 + 1 and trains on
the other eight, so every record is tested exactly once. Each run is a training + evaluation with
test fold k (runs data/<db>/runs/study_{arch}_{leads}_{seed}_fold{k}/); like lead_study.py it
resumes, and finished folds are not run again. Writes results/<db>/cv_{arch}_{leads}_{seed}.csv (one
row per fold: per-class and mean F1 and AUC), .md (per class mean ± sd over folds), and .png.
The other tables of this project (predict.py, lead_study.py, baselines.py) show the original code's
single seeded split instead.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from models.studies import finished_results, results_dir_of, run_all, study_config, study_parser
from models.training import check_finetune, check_run_args
from utils.errors import script_main
from utils.folds import N_FOLDS
from utils.files import save_figure, write_csv, write_text
from utils.labels import leads_argument
from utils.results import EvaluationFolder, record_data
from utils.tables import Column, format_mean_sd, markdown_table, table_frame
from utils.cli import BoundedList
from utils.launch import launcher_from_args
from utils.presets import parse_with_preset


def parse_args(argv=None) -> argparse.Namespace:
    p = study_parser(__doc__)
    p.add_argument("--leads", type=leads_argument, default="all",
                   help="all, one lead, or a comma list such as I,aVR,V5")
    p.add_argument("--folds", type=BoundedList(1, N_FOLDS, "fold"), default=",".join(map(str, range(1, N_FOLDS + 1))),
                   help="test folds to run, comma-separated, each %(type)s (default: all ten)")
    args = parse_with_preset(p, argv, "study")
    check_finetune(p, args, argv)  # --init-from: every fold's run finetunes the source
    check_run_args(p, args, argv)
    args.launch = launcher_from_args(p, args, argv)
    args.lead_names = args.leads
    args.fold_list = args.folds
    return args


def fold_columns(classes: list[str]) -> list[Column]:
    """fold, n_test, then F1 and AUC of each class and of the mean row (f1_<class>, f1_mean, auc_<class>, ...)."""
    names = [*classes, "mean"]
    return [Column("fold"), Column("n_test"), *[Column(f"f1_{c}") for c in names], *[Column(f"auc_{c}") for c in names]]


def fold_row(fold: int, results: Path) -> dict:
    """Per-class and mean test F1 / AUC of one fold's run."""
    s = EvaluationFolder(results).summary()
    value = lambda m, c: s.mean[m] if c == "mean" else float(s.per_class.loc[c, m])  # noqa: E731
    return {"fold": fold, "n_test": s.records, **{f"f1_{c}": value("f1", c) for c in [*s.classes, "mean"]},
            **{f"auc_{c}": value("auc", c) for c in [*s.classes, "mean"]}}


def class_names(folds: pd.DataFrame) -> list[str]:
    """The classes (and "mean") of a fold table, in column order."""
    return [c[len("f1_"):] for c in folds.columns if c.startswith("f1_")]


def summarise(folds: pd.DataFrame) -> pd.DataFrame:
    """Per class (and the mean row): F1 and AUC averaged over folds, with their standard deviation."""
    rows = {c: {"f1_mean": folds[f"f1_{c}"].mean(), "f1_sd": folds[f"f1_{c}"].std(),
                "auc_mean": folds[f"auc_{c}"].mean(), "auc_sd": folds[f"auc_{c}"].std()}
            for c in class_names(folds)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("class")


SUMMARY_COLUMNS = [Column("class", "class", align="left"),
                   Column(None, "F1", lambda r: format_mean_sd(r["f1_mean"], r["f1_sd"])),
                   Column(None, "AUC", lambda r: format_mean_sd(r["auc_mean"], r["auc_sd"]))]


def to_markdown(summary: pd.DataFrame, n_folds: int) -> str:
    return f"Mean ± sd over {n_folds} test fold(s).\n\n" + markdown_table(summary.reset_index(), SUMMARY_COLUMNS)


def plot_folds(folds: pd.DataFrame, path: Path) -> None:
    """Per class: each fold's F1 and AUC as dots, the fold mean as a bar."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = class_names(folds)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
    for ax, metric in zip(axes, ("f1", "auc")):
        table = folds[[f"{metric}_{c}" for c in names]].astype(float)
        values, x = table.to_numpy(), np.arange(len(names))
        ax.bar(x, table.mean().to_numpy(), color="#aab7c4", width=0.6)  # NaN (no positives) folds left out
        jitter = np.linspace(-0.15, 0.15, len(values))[:, None] if len(values) > 1 else np.zeros((1, 1))
        ax.scatter((x + jitter).ravel(), values.ravel(), s=8, color="#2c3e50", zorder=3)
        ax.set_xticks(x, names, rotation=45)
        ax.set_title(f"test {metric.upper()} per fold")
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def kept_folds(args: argparse.Namespace) -> dict[int, Path]:
    """The evaluations of the folds this command did not name whose runs (these settings) finished and
    are current: --folds 4,5 after --folds 1,2,3 tabulates all five, as one run of them would."""
    kept = {}
    for k in (k for k in range(1, N_FOLDS + 1) if k not in args.fold_list):
        cfg = dataclasses.replace(study_config(args, args.lead_names, k), force=False)
        results = finished_results(cfg, args.results_dir, args.n_bootstrap)
        if results is not None:  # a run of these epochs exactly: one trained longer is not finished for fewer
            kept[k] = results
    if kept:
        print(f"fold(s) {', '.join(map(str, kept))}: finished and current, kept in the table")
    return kept


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    cfgs = [study_config(args, args.lead_names, k) for k in args.fold_list]
    done = run_all(cfgs, args.results_dir, args.n_bootstrap, args.launch)
    evaluations = dict(sorted({**dict(zip(args.fold_list, done)), **kept_folds(args)}.items()))
    rows = [fold_row(k, results) for k, results in evaluations.items()]
    folds = table_frame(rows, fold_columns(EvaluationFolder(done[0]).summary().classes))
    out = results_dir_of(args) / f"cv_{study_config(args, args.lead_names).run_name()}"
    summary = summarise(folds)
    write_csv(folds, out.with_suffix(".csv"))
    md = to_markdown(summary, len(folds))
    write_text(md, out.with_suffix(".md"))
    plot_folds(folds, out.with_suffix(".png"))
    record_data(out.with_suffix(".json"), args.data_dir, [out.with_suffix(s) for s in (".csv", ".md", ".png")],
                list(evaluations.values()))
    print(md)
    print(f"wrote {out}.csv, .md and .png")
    return summary


if __name__ == "__main__":
    main()

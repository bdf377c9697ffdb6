"""When does pretraining pay? One source model, one target database, training sets from small to full.

    python transfer.py --source data/PTBXL/tasks/PTBXL_all/runs/xresnet1d101_all_42 --data-dir data/CPSC \\
        --fractions 1,0.5,0.25,0.125,0.0625,0.03125 --seeds 0,1,2 --preset finetune
    python transfer.py --source data/demo_ptbxl/tasks/demo_ptbxl_superdiagnostic/runs/fcn_wang_all_42 --data-dir data/demo \\
        --preset demo

For every seed and fraction, a stratified subset of the target's training records (nested: each smaller
subset inside the larger ones of its seed; models.training `train_fraction`) is trained twice: from
scratch, and finetuned from the source (main.py --init-from, with the frozen epochs and per-group rates
of the settings). Both arms train on exactly the same records, with the source's inputs (leads, rate,
window) and the same epochs and rate, and are evaluated on the target's whole test fold with thresholds
tuned on its whole validation fold: macro AUC with its 95 % bootstrap interval, and F1.

Writes results/<target>/transfer/: table.csv (fraction, records, seed, arm, auc, auc_lo, auc_hi, f1,
scores: the test scores each row recomputes from), summary.csv (per fraction and arm, the mean AUC over
seeds and its spread), table.md, and auc.png (AUC against training records, log scale, both arms, each
seed a dot); and says at how many training records the curves cross, if they do. Runs go to
data/<target>/runs/transfer/ (or --runs-dir), reused when finished.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from models.studies import results_dir_of, run_all, study_parser
from models.training import RunConfig, check_finetune, check_run_args
from models.transfer import source_argument, source_info
from utils.cli import flag_error, flag_given, seed_list
from utils.errors import PipelineError, script_main
from utils.files import save_figure, write_csv, write_text
from utils.launch import launcher_from_args
from utils.presets import parse_with_preset
from utils.results import EvaluationFolder, Summary, read_evaluation
from utils.tables import Column, markdown_table

OUT = "transfer"
ARMS = ("scratch", "finetuned")
COLUMNS = [Column("fraction", "fraction"), Column("records", "training records"), Column("seed", "seed"),
           Column("arm", "arm", align="left"), Column("auc", "macro AUC"), Column("auc_lo", "AUC 2.5 %"),
           Column("auc_hi", "AUC 97.5 %"), Column("f1", "macro F1"), Column("scores")]


def fraction_list(text: str) -> list[float]:
    """argparse type of --fractions: distinct numbers in (0, 1], largest first."""
    try:
        items = [v.strip() for v in text.split(",")]
        if not all(items):
            raise ValueError
        values = [float(v) for v in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers") from None
    if not values or not all(0 < v <= 1 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct fractions in (0, 1], such as 1,0.5,0.25")
    names = [f"{v:g}" for v in values]  # a run folder is named by the fraction's 6 significant digits
    twice = next((v for i, v in enumerate(values) if names[i] in names[:i]), None)
    if twice is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: {twice!r} names the same run folder as another fraction "
                                         f"(f{twice:g}); give fractions that differ in their first 6 digits")
    return sorted(values, reverse=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = study_parser(__doc__)
    p.add_argument("--source", type=source_argument, required=True,
                   help="the pretrained run (its folder or model.pth; an imported one too)")
    p.add_argument("--fractions", type=fraction_list, default=[1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125],
                   help="fractions of the target's training records (default 1,0.5,...,0.03125)")
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2],
                   help="seeds of the subsets and trainings (default 0,1,2), %(type)s")
    p.add_argument("--leads", default=None, help=argparse.SUPPRESS)  # the source's, always
    args = parse_with_preset(p, argv, "transfer")
    if args.init_from is not None:
        p.error("argument --init-from: transfer.py takes the source as --source")
    if flag_given(p, argv, "--leads"):
        flag_error(p, "--leads", "transfer.py trains on the source's leads; leave --leads out")
    for flag, instead in (("--seed", "--seeds"), ("--train-fraction", "--fractions")):  # else silently unread
        if flag_given(p, argv, flag):
            flag_error(p, flag, f"transfer.py trains each of {instead}; give {instead} instead")
    args.init_from = args.source
    args.leads = None
    check_finetune(p, args, argv)
    check_run_args(p, args, argv)
    args.lead_names = args.leads
    args.launch = launcher_from_args(p, args, argv)
    return args


def arm_configs(args: argparse.Namespace) -> list[tuple[float, int, str, RunConfig]]:
    """(fraction, seed, arm, configuration) of every run: the finetuned arm starts from the source, the
    scratch arm from a fresh network with the same inputs, epochs and rate, and no frozen phase."""
    finetuned = RunConfig.from_args(args)
    scratch = dataclasses.replace(finetuned, init_from=None, freeze_epochs=0, discriminative_lrs=False,
                                  restandardize=False, standardize=True)
    runs = args.runs_dir or Path(args.data_dir) / "runs" / OUT
    out = []
    for seed in args.seeds:
        for fraction in args.fractions:
            for arm, cfg in zip(ARMS, (scratch, finetuned)):
                name = f"{arm}_{cfg.arch}_f{fraction:g}_s{seed}"
                out.append((fraction, seed, arm, dataclasses.replace(cfg, seed=seed, train_fraction=fraction,
                                                                     run_dir=str(runs / name))))
    return out


def table_row(fraction: float, seed: int, arm: str, folder: Path) -> dict:
    summary = Summary.of(read_evaluation(folder))
    records = len(_train_ids(folder))
    return {"fraction": fraction, "records": records, "seed": seed, "arm": arm,
            **{k: summary.mean.get(k, np.nan) for k in ("auc", "auc_lo", "auc_hi", "f1")},
            "scores": os.path.abspath(EvaluationFolder(folder).test_scores)}  # read from any folder


def _train_ids(folder: Path) -> list[str]:
    """The training records of the run evaluated in `folder` (its checkpoint says which)."""
    import torch

    model = read_evaluation(folder)["info"]["model"]
    return torch.load(model, map_location="cpu", weights_only=True, mmap=True)["split"]["train"]


def crossing(summary: pd.DataFrame) -> str:
    """Where the finetuned arm's mean AUC stops being above the scratch arm's (or that it never does)."""
    # by training-set size; two fractions that draw as many records (tiny fractions of a small database)
    # are one point of the curve
    wide = summary.groupby(["records", "arm"])["auc"].mean().unstack("arm").reindex(columns=list(ARMS)).sort_index()
    gain = (wide["finetuned"] - wide["scratch"]).dropna()
    if gain.empty:
        return "no fraction has both arms"
    sign = np.sign(gain.to_numpy())
    for (n0, s0), (n1, s1) in zip(zip(gain.index[:-1], sign[:-1]), zip(gain.index[1:], sign[1:])):
        if s0 != s1 and s0 != 0 and s1 != 0:
            better = "finetuning" if s0 > 0 else "training from scratch"
            return (f"the curves cross between {n0} and {n1} training records: below, {better} has the higher "
                    f"mean AUC")
    who = "finetuning" if sign[0] > 0 else "training from scratch" if sign[0] < 0 else "neither arm"
    return (f"the curves do not cross: {who} has the higher mean AUC at every size "
            f"({gain.index[0]} to {gain.index[-1]} training records)")


def plot(table: pd.DataFrame, summary: pd.DataFrame, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, colour in zip(ARMS, ("tab:gray", "tab:blue")):
        rows = table[table["arm"] == arm]
        ax.scatter(rows["records"], rows["auc"], color=colour, alpha=0.45, s=16)
        mean = summary[summary["arm"] == arm].sort_values("records")
        ax.plot(mean["records"], mean["auc"], "-o", color=colour, label=arm)
        ax.fill_between(mean["records"], mean["auc_min"], mean["auc_max"], color=colour, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("training records (log scale)")
    ax.set_ylabel("macro AUC, target test fold")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


@script_main
def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    source_info(args.source)  # a missing or mismatched source: one line before any training
    plan = arm_configs(args)
    print(f"transfer: {len(args.seeds)} seed(s) x {len(args.fractions)} fraction(s) x 2 arms = {len(plan)} runs "
          f"({plan[0][3].arch} from {args.source})", flush=True)
    done = run_all([cfg for *_, cfg in plan], args.results_dir, args.n_bootstrap, args.launch)
    table = pd.DataFrame([table_row(f, s, arm, folder) for (f, s, arm, _), folder in zip(plan, done)])
    for seed in args.seeds:  # the same subsets for both arms, each inside the next larger
        ids = {(f, arm): set(_train_ids(folder)) for (f, s, arm, _), folder in zip(plan, done) if s == seed}
        for f in args.fractions:
            if ids[(f, "scratch")] != ids[(f, "finetuned")]:
                raise PipelineError(f"seed {seed}, fraction {f:g}: the two arms trained on different records")
    summary = (table.groupby(["fraction", "records", "arm"], as_index=False)
               .agg(auc=("auc", "mean"), auc_min=("auc", "min"), auc_max=("auc", "max"), f1=("f1", "mean"),
                    seeds=("seed", "count")))
    out = results_dir_of(args) / OUT
    md = markdown_table(table, COLUMNS) + f"\n{crossing(summary)}\n"
    # the figure first: should it fail, the tables and the figure of the last study stay together
    plot(table, summary, out / "auc.png", f"{Path(args.source).parent.name} -> {Path(args.data_dir).name}")
    write_csv(table, out / "table.csv")
    write_csv(summary, out / "summary.csv")
    write_text(md, out / "table.md")
    print(md, end="")
    print(f"wrote {out}/table.csv, summary.csv, table.md and auc.png")
    return table


if __name__ == "__main__":
    main()

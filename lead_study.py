"""The paper's lead comparison: train and evaluate each single lead and all 12 with identical settings.

    python lead_study.py --data-dir data/CPSC --use-gpu                       # the paper's settings
    python lead_study.py --data-dir data/demo --arch resnet18 --seconds 5 --sample-rate 100 --epochs 8 --lr 1e-3

Runs main.py then predict.py for `all` and each of the 12 leads, then writes results/lead_study.csv
and .md (per lead: test-fold mean F1 and AUC with bootstrap 95 % CIs, ranked by F1) and a bar chart.
It resumes: a lead whose checkpoint finished all epochs and whose metrics exist is not run again; a
run that was killed continues from its last epoch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import main as train
import predict
from models import default_model_path
from utils import LEADS, leads_tag, nonnegative_int, parse_leads, save_figure, write_csv, write_text


def training_parser(description: str) -> argparse.ArgumentParser:
    """main.py's training flags (same faithful defaults) plus where a study keeps its runs."""
    p = train.add_training_args(argparse.ArgumentParser(description=description,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--n-bootstrap", type=nonnegative_int, default=1000)
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = training_parser(__doc__)
    args = p.parse_args(argv)
    check_input_size(p, args)
    return args


check_input_size = train.check_input_size


def train_and_evaluate(args: argparse.Namespace, leads: str, test_fold: int | None = None) -> Path:
    """Train (or resume, or skip when finished) and evaluate one run; returns its metrics.json.

    A run is finished when its last checkpoint completed all epochs; it is evaluated again only
    when its metrics are missing or older than its checkpoint."""
    tag = leads_tag(parse_leads(leads))
    # "study_" keeps a study's runs apart from a main.py run of the same arch, data, leads and seed
    name = default_model_path(args.arch, args.data_dir, tag, args.seed, test_fold).name
    model_path = args.models_dir / f"study_{name}"
    metrics_path = args.results_dir / model_path.stem / "metrics.json"
    flags = ["--data-dir", str(args.data_dir), "--leads", leads, "--arch", args.arch, "--seed", str(args.seed),
             "--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
             "--seconds", str(args.seconds), "--sample-rate", str(args.sample_rate),
             "--num-workers", str(args.num_workers), "--model-path", str(model_path), "--log-dir", str(args.log_dir)]
    flags += ["--limit", str(args.limit)] if args.limit else []
    flags += ["--test-fold", str(test_fold)] if test_fold is not None else []
    flags += ["--use-gpu"] if args.use_gpu else []
    flags += ["--no-amp"] if args.no_amp else []
    flags += ["--deterministic"] if args.deterministic else []
    last = train.last_path(model_path)
    done = False
    if last.exists():  # finished only with this study's settings; with others, --resume below refuses
        saved = torch.load(last, map_location="cpu", weights_only=True)
        done = not train.changed_settings(saved["args"], train.parse_args(flags)) and saved["epoch"] >= args.epochs
    if not done:
        train.main(flags + (["--resume"] if last.exists() else ["--force"]))
    if not done or not metrics_path.exists() or metrics_path.stat().st_mtime < model_path.stat().st_mtime:
        predict.main(["--model-path", str(model_path), "--results-dir", str(args.results_dir),
                      "--n-bootstrap", str(args.n_bootstrap), "--num-workers", "0", "--no-figures"]
                     + (["--use-gpu"] if args.use_gpu else []))
    else:
        print(f"{model_path.stem}: finished earlier, reusing {metrics_path}")
    return metrics_path


def lead_row(leads: str, metrics_path: Path) -> dict:
    """One row of the lead table: the test-fold mean metrics of one run."""
    mean = json.loads(metrics_path.read_text())["metrics"]["mean"]
    return {"leads": "all 12" if leads == "all" else leads, **{k: mean.get(k) for k in
            ("f1", "f1_lo", "f1_hi", "auc", "auc_lo", "auc_hi", "precision", "recall", "accuracy")},
            "model": metrics_path.parent.name}


def plot_leads(table: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    y = np.arange(len(table))
    for ax, metric in zip(axes, ("f1", "auc")):
        err = np.vstack([table[metric] - table[f"{metric}_lo"], table[f"{metric}_hi"] - table[metric]])
        colours = ["#c0392b" if lead == "all 12" else "#5d6d7e" for lead in table["leads"]]
        ax.barh(y, table[metric], xerr=np.clip(err, 0, None), color=colours, capsize=2)
        ax.set_xlabel(f"test-fold mean {metric.upper()} (95 % CI)")
        ax.set_xlim(max(0.0, float(table[f"{metric}_lo"].min()) - 0.05), 1.0)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, table["leads"])
    axes[0].invert_yaxis()
    fig.suptitle("single leads versus all 12 (ranked by F1)")
    save_figure(fig, path)


def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    rows = [lead_row(leads, train_and_evaluate(args, leads)) for leads in ["all", *LEADS]]
    table = pd.DataFrame(rows).sort_values("f1", ascending=False).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    write_csv(table, args.results_dir / "lead_study.csv")
    md = ["| rank | leads | mean F1 (95 % CI) | mean AUC (95 % CI) |", "| ---: | --- | --- | --- |"]
    md += [f"| {r['rank']} | {r['leads']} | {r['f1']:.3f} [{r['f1_lo']:.3f}, {r['f1_hi']:.3f}] | "
           f"{r['auc']:.3f} [{r['auc_lo']:.3f}, {r['auc_hi']:.3f}] |" for r in table.to_dict("records")]
    write_text("\n".join(md) + "\n", args.results_dir / "lead_study.md")
    plot_leads(table, args.results_dir / "lead_study.png")
    print("\n".join(md))
    print(f"wrote {args.results_dir}/lead_study.csv, .md and .png")
    return table


if __name__ == "__main__":
    main()

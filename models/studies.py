"""What the multi-run studies (cross_validate.py, lead_study.py) share: their command line, and
"train this configuration, or reuse it when it already finished with exactly these settings, then
evaluate it".

A study's runs are named study_<arch>_<leads>_<seed>[_fold<k>] and live under data/<db>/runs/ (or
--runs-dir), apart from main.py's runs of the same settings; their tables go to results/<db>/.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from models.checkpoint import load_checkpoint
from models.evaluation import evaluate_run, evaluation_current, results_folder
from models.inputs import pick_device
from models.training import RunConfig, train
from utils import database_name, nonnegative_int


def study_parser(description: str) -> argparse.ArgumentParser:
    """main.py's run flags (same faithful defaults) plus where a study keeps its runs and results."""
    p = RunConfig.add_arguments(argparse.ArgumentParser(description=description,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--n-bootstrap", type=nonnegative_int, default=1000)
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="the folder holding the study's run folders (default data/<db>/runs)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    return p


def study_config(args: argparse.Namespace, leads: list[str], test_fold: int | None = None) -> RunConfig:
    """The configuration of one study run, its folder under --runs-dir or data/<db>/runs."""
    cfg = RunConfig.from_args(args, leads=leads)
    cfg = dataclasses.replace(cfg, test_fold=test_fold)
    runs = args.runs_dir or Path(args.data_dir) / "runs"
    return dataclasses.replace(cfg, run_dir=str(runs / cfg.run_name("study_")))


def results_dir_of(args: argparse.Namespace) -> Path:
    """results/<db>/: where a study's tables go."""
    return args.results_dir / database_name(args.data_dir)


def train_and_evaluate(cfg: RunConfig, results_dir: Path, n_bootstrap: int) -> Path:
    """Train one run (train() keeps a finished run, resumes a killed one) and evaluate it unless its
    evaluation is current for exactly this checkpoint and bootstrap size; returns its results folder."""
    train(cfg)
    run = cfg.run
    device = pick_device(cfg.use_gpu)
    model, ckpt = load_checkpoint(run.model, map_location=device)
    if not evaluation_current(run, ckpt, results_dir, n_bootstrap):
        evaluate_run(model.to(device), ckpt, run, results_dir, device, n_bootstrap=n_bootstrap,
                     num_workers=0, figures=False)
    else:
        print(f"{run.name}: evaluation current, reusing {results_folder(results_dir, ckpt, run)}")
    return results_folder(results_dir, ckpt, run)

"""What the multi-run studies (cross_validate.py, lead_study.py) share: their command line, and
"train this configuration, or reuse it when it already finished with exactly these settings, then
evaluate it".

A study's runs are named study_<arch>_<leads>_<seed>[_fold<k>] and live under data/<db>/runs/ (or
--models-dir), apart from main.py's runs of the same settings; their tables go to results/<db>/.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from dataset import pick_device
from evaluation import evaluate_run, evaluation_current
from models import last_path, load_checkpoint, run_name
from training import RunConfig, finished, train
from utils import database_name, nonnegative_int


def study_parser(description: str) -> argparse.ArgumentParser:
    """main.py's run flags (same faithful defaults) plus where a study keeps its runs and results."""
    p = RunConfig.add_arguments(argparse.ArgumentParser(description=description,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--n-bootstrap", type=nonnegative_int, default=1000)
    p.add_argument("--models-dir", type=Path, default=None, help="where the runs go (default data/<db>/runs)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    return p


def study_config(args: argparse.Namespace, leads: list[str], test_fold: int | None = None) -> RunConfig:
    """The configuration of one study run, its checkpoint under --models-dir or data/<db>/runs."""
    cfg = RunConfig.from_args(args, leads=leads)
    cfg = dataclasses.replace(cfg, test_fold=test_fold)
    runs = args.models_dir or Path(args.data_dir) / "runs"
    return dataclasses.replace(cfg, model_path=str(runs / cfg.run_name("study_") / "model.pth"))


def results_dir_of(args: argparse.Namespace) -> Path:
    """results/<db>/: where a study's tables go."""
    return args.results_dir / database_name(args.data_dir)


def train_and_evaluate(cfg: RunConfig, results_dir: Path, n_bootstrap: int) -> Path:
    """Train (or resume, or reuse when finished with these settings) and evaluate one run; returns its
    metrics.json. A run's evaluation is redone only when its outputs are not current for exactly this
    checkpoint and bootstrap size (utils' freshness rule); a finished run with other settings is never
    reused (resuming it is refused)."""
    model_path = cfg.checkpoint_path()
    done = finished(cfg)
    if not done:
        resume = last_path(model_path).exists()  # a killed run continues from its last epoch
        train(dataclasses.replace(cfg, resume=resume, force=not resume))
    device = pick_device(cfg.use_gpu)
    model, ckpt = load_checkpoint(model_path, map_location=device)
    metrics = results_dir / ckpt["data"]["name"] / run_name(model_path) / "metrics.json"
    if not evaluation_current(model_path, ckpt, results_dir, n_bootstrap):
        evaluate_run(model.to(device), ckpt, model_path, results_dir, device, n_bootstrap=n_bootstrap,
                     num_workers=0, figures=False)
    else:
        print(f"{run_name(model_path)}: finished earlier, reusing {metrics}")
    return metrics

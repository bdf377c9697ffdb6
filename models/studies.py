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
from utils import MAX_WORKERS, bounded_int, folder_path
from utils.results import results_home
from utils.defaults import DEFAULT_RESULTS_DIR


def study_parser(description: str) -> argparse.ArgumentParser:
    """main.py's run flags (same faithful defaults) plus where a study keeps its runs and results."""
    p = RunConfig.add_arguments(argparse.ArgumentParser(description=description,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--n-bootstrap", type=bounded_int(0, 100_000), default=1000,
                   help="bootstrap resamples for the 95 %% CIs, %(type)s")
    p.add_argument("--runs-dir", type=folder_path, default=None,
                   help="the folder holding the study's run folders (default data/<db>/runs)")
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--force", action="store_true", help="retrain and re-evaluate every run of the study")
    p.add_argument("--jobs", type=bounded_int(1, MAX_WORKERS), default=1,
                   help="runs trained at once: N processes sharing the GPU (or spread over the visible GPUs); "
                        "on CPU they split the cores; %(type)s")
    return p


def study_config(args: argparse.Namespace, leads: list[str], test_fold: int | None = None) -> RunConfig:
    """The configuration of one study run, its folder under --runs-dir or data/<db>/runs."""
    cfg = RunConfig.from_args(args, leads=leads)
    cfg = dataclasses.replace(cfg, test_fold=test_fold)
    runs = args.runs_dir or Path(args.data_dir) / "runs"
    return dataclasses.replace(cfg, run_dir=str(runs / cfg.run_name("study_")))


def results_dir_of(args: argparse.Namespace) -> Path:
    """results/<db>/: where a study's tables go."""
    return results_home(args.results_dir, args.data_dir)


def train_and_evaluate(cfg: RunConfig, results_dir: Path, n_bootstrap: int, calibrate: bool = False) -> Path:
    """Train one run (train() keeps a finished run, resumes a killed one) and evaluate it unless its
    evaluation is current for exactly this checkpoint and bootstrap size; returns its results folder."""
    train(cfg)
    run = cfg.run
    device = pick_device(cfg.use_gpu)
    model, ckpt = load_checkpoint(run.model, map_location=device)
    if cfg.force or not evaluation_current(run, ckpt, results_dir, n_bootstrap, calibrate):
        evaluate_run(model.to(device), ckpt, run, results_dir, device, n_bootstrap=n_bootstrap,
                     num_workers=0, figures=False, calibrate=calibrate)
    else:
        print(f"{run.name}: evaluation current, reusing {results_folder(results_dir, ckpt, run)}")
    return results_folder(results_dir, ckpt, run)


def _job_init(threads: int, gpus: int, counter) -> None:
    """A study worker: its share of the CPU cores, and a GPU of its own when several are visible."""
    import torch

    torch.set_num_threads(threads)
    if gpus > 1:
        with counter.get_lock():
            slot = counter.value
            counter.value += 1
        torch.cuda.set_device(slot % gpus)


def _job(task: tuple[RunConfig, Path, int, bool]) -> Path:
    return train_and_evaluate(*task)


def run_all(cfgs: list[RunConfig], results_dir: Path, n_bootstrap: int, jobs: int = 1,
            calibrate: bool = False) -> list[Path]:
    """train_and_evaluate every configuration, `jobs` at a time; results folders in `cfgs` order.

    Several small trainings leave one GPU half idle; running them side by side fills it. Each run is
    the same computation whether it runs alone or beside others (its own process, its own seeds), so
    under --deterministic a run's weights do not depend on --jobs."""
    tasks = [(cfg, Path(results_dir), n_bootstrap, calibrate) for cfg in cfgs]
    if jobs <= 1 or len(tasks) <= 1:
        return [_job(t) for t in tasks]
    import multiprocessing as mp
    import os

    import torch

    gpus = torch.cuda.device_count() if any(c.use_gpu for c in cfgs) else 0
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
    counter = ctx.Value("i", 0)
    with ctx.Pool(min(jobs, len(tasks)), initializer=_job_init, initargs=(threads, gpus, counter)) as pool:
        return pool.map(_job, tasks, chunksize=1)

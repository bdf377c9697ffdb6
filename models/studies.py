"""What the multi-run studies (cross_validate.py, lead_study.py) share: their command line, and
"train this configuration, or reuse it when it already finished with exactly these settings, then
evaluate it".

A study's runs are named study_<arch>_<leads>_<seed>[_fold<k>] and live under data/<db>/runs/ (or
--runs-dir), apart from main.py's runs of the same settings; their tables go to results/<db>/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path

from models.checkpoint import load_checkpoint, peek_checkpoint
from models.scoring import (EvalSettings, evaluate_run, evaluation_current, results_folder, score_training_records,
                            training_scores_current)
from models.inputs import pick_device
from models.run import Run
from models.training import RunConfig, equal_finished_run, resolve_identity, run_state, train
from utils.errors import PipelineError
from utils.cli import bounded_int, folder_path, usable_cpus
from utils.files import atomic_write, check_writable
from utils.locks import exclusive_lock
from utils.launch import Launcher, Task, add_launcher_arguments, launch
from utils.results import results_home
from utils.defaults import DEFAULT_RESULTS_DIR


def study_parser(description: str) -> argparse.ArgumentParser:
    """main.py's run flags (same faithful defaults) plus where a study keeps its runs and results."""
    p = RunConfig.add_arguments(argparse.ArgumentParser(allow_abbrev=False, description=description,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--n-bootstrap", type=bounded_int(0, 100_000), default=1000,
                   help="bootstrap resamples for the 95 %% CIs, %(type)s")
    p.add_argument("--runs-dir", type=folder_path, default=None,
                   help="the folder holding the study's run folders (default data/<db>/runs)")
    p.add_argument("--results-dir", type=folder_path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--force", action="store_true", help="retrain and re-evaluate every run of the study")
    return add_launcher_arguments(p)


def study_config(args: argparse.Namespace, leads: list[str], test_fold: int | None = None) -> RunConfig:
    """The configuration of one study run, its folder under --runs-dir or data/<db>/runs."""
    cfg = RunConfig.from_args(args, leads=leads)
    cfg = dataclasses.replace(cfg, test_fold=test_fold)
    runs = args.runs_dir or Path(args.data_dir) / "runs"
    return dataclasses.replace(cfg, run_dir=str(runs / cfg.run_name("study_")))


def results_dir_of(args: argparse.Namespace) -> Path:
    """results/<db>/: where a study's tables go."""
    return results_home(args.results_dir, args.data_dir)


def adopt_equal_run(cfg: RunConfig) -> bool:
    """When cfg's own run folder is empty and another run folder of its database (data/<db>/runs/*) holds
    a finished run that training cfg would repeat (same data by content, same settings and epochs: see
    `equal_finished_run`), link that run's checkpoints and log into cfg's folder instead of training it
    again, and say so in one line. Hard links (copies across file systems) keep each folder a run of its
    own: its thresholds and results are its own, and retraining either folder leaves the other intact.
    Returns whether a run was adopted."""
    cfg = resolve_identity(cfg)
    if cfg.force or run_state(cfg)[0] != "new":
        return False
    mine = cfg.run
    root = Path(cfg.data_dir) / "runs"
    if not root.is_dir():
        return False
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if os.path.realpath(folder) == os.path.realpath(mine.folder) or not equal_finished_run(cfg, folder):
            continue
        source = Run(folder)
        check_writable(mine.folder, "pass --runs-dir DIR with a writable DIR")
        with exclusive_lock(mine.lock, f"run {mine}"):
            for name in (Run.LOG, Run.MODEL, Run.LAST):  # last.pth last: run_state reads it first
                if (source.folder / name).exists():
                    _link(source.folder / name, mine.folder / name)
            if not equal_finished_run(cfg, mine.folder):  # the source was retrained meanwhile: train anew
                for name in (Run.LAST, Run.MODEL, Run.LOG):
                    (mine.folder / name).unlink(missing_ok=True)
                return False
        print(f"{mine}: the same data and settings as the finished run {source} ({cfg.epochs} epoch(s)): "
              f"reusing it, nothing to train")
        return True
    return False


def _link(source: Path, target: Path) -> None:
    """`target` becomes the same file as `source`: a hard link, or an atomic copy across file systems."""
    def link(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    atomic_write(target, link)


def train_and_evaluate(cfg: RunConfig, results_dir: Path, n_bootstrap: int, calibrate: bool = False,
                       train_scores: bool = False) -> Path:
    """Train one run (train() keeps a finished run, resumes a killed one; an equal finished run of the
    database is reused, see `adopt_equal_run`) and evaluate it unless its evaluation is current for
    exactly this checkpoint, data and bootstrap size; with `train_scores`, score its training records too
    (`score_training_records`); returns its results folder."""
    adopt_equal_run(cfg)
    train(cfg)
    run = cfg.run
    device = pick_device(cfg.use_gpu)
    model, ckpt = load_checkpoint(run.model, map_location=device)
    if cfg.force or not evaluation_current(run, ckpt, results_dir, n_bootstrap, calibrate):
        settings = EvalSettings(n_bootstrap=n_bootstrap, num_workers=0, figures=False, calibrate=calibrate)
        evaluate_run(model.to(device), ckpt, run, results_dir, device, settings=settings)
    else:
        print(f"{run.name}: evaluation current, reusing {results_folder(results_dir, ckpt, run)}")
    if train_scores:
        score_training_records(model.to(device), ckpt, run, results_dir, device)
    return results_folder(results_dir, ckpt, run)


def finished_results(cfg: RunConfig, results_dir: Path, n_bootstrap: int, calibrate: bool = False,
                     train_scores: bool = False) -> Path | None:
    """The results folder of a run that finished training and whose evaluation (and, with `train_scores`,
    its training records' scores) is current: what train_and_evaluate would only reuse; else None. Read
    from the files alone, nothing computed."""
    if cfg.force:
        return None
    try:
        cfg = resolve_identity(cfg)
        if run_state(cfg)[0] != "current" or not cfg.run.model.exists():
            return None
        ckpt = peek_checkpoint(cfg.run.model)
        if (evaluation_current(cfg.run, ckpt, results_dir, n_bootstrap, calibrate)
                and (not train_scores or training_scores_current(ckpt, cfg.run, results_dir))):
            return results_folder(results_dir, ckpt, cfg.run)
    except PipelineError:
        return None
    return None


def _job_init(slot: int, workers: int, gpus: int) -> None:
    """A study worker: its share of the CPU cores (among the workers started, which may be fewer than --jobs
    when fewer runs are left to do), and a GPU of its own when several are visible. Its
    progress bars lock with a thread lock: tqdm's default, a multiprocessing semaphore, would be reported
    as leaked at exit whenever a worker is killed."""
    import threading

    import torch
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(max(1, usable_cpus() // workers))
    if gpus > 1:
        torch.cuda.set_device(slot % gpus)


def _job(cfg: RunConfig, results_dir: Path, n_bootstrap: int, calibrate: bool,
         train_scores: bool = False) -> tuple[str, Path]:
    """A worker's (or a SLURM job's) task: the run folder it trained (which pins the result to its run)
    and its results."""
    return str(cfg.run), train_and_evaluate(cfg, results_dir, n_bootstrap, calibrate, train_scores)


def run_all(cfgs: list[RunConfig], results_dir: Path, n_bootstrap: int, launcher: Launcher | None = None,
            calibrate: bool = False, train_scores: bool = False) -> list[Path]:
    """train_and_evaluate every configuration through the launcher (local: `jobs` at a time; slurm: a
    job each, utils.launch); results folders in `cfgs` order.

    Several small trainings leave one GPU half idle; running them side by side fills it. Each run is
    the same computation wherever it runs (its own process, its own seeds), so under --deterministic a
    run's weights depend neither on --jobs nor on the launcher. A run that fails (an error, or its
    worker or job killed) is said in one line while the others go on; then the command stops with one
    error naming every failed run (the finished runs' files and results are kept: a rerun reuses them)."""
    launcher = launcher or Launcher()
    results_dir = Path(results_dir)
    slurm = launcher.kind == "slurm"  # a key only for a job's record (reading the data's manifest)
    data = {d: _data_fingerprint(d) for d in {cfg.data_dir for cfg in cfgs}} if slurm else {}
    here = [_as_its_job_runs(cfg, launcher) for cfg in cfgs]
    tasks = [Task(str(cfg.run), cfg.run.folder, _job, (cfg, results_dir, n_bootstrap, calibrate, train_scores),
                  current=_current(seen, results_dir, n_bootstrap, calibrate, train_scores),
                  key=(_key(cfg, data[cfg.data_dir], results_dir, n_bootstrap, calibrate, train_scores)
                       if slurm else None),
                  gather=_current(dataclasses.replace(seen, force=False), results_dir, n_bootstrap, calibrate,
                                  train_scores), fresh=cfg.force) for cfg, seen in zip(cfgs, here)]
    init = None, ()
    if launcher.kind == "local" and launcher.jobs > 1 and len(tasks) > 1:
        import torch

        gpus = torch.cuda.device_count() if any(c.use_gpu for c in cfgs) else 0
        init = _job_init, (gpus,)
    outcomes = launch(tasks, launcher, *init)
    for cfg, (run, _) in zip(cfgs, outcomes):
        if run != str(cfg.run):
            raise PipelineError(f"a worker handed back the results of {run} for {cfg.run}")
    return [results for _, results in outcomes]


def _as_its_job_runs(cfg: RunConfig, launcher: Launcher) -> RunConfig:
    """`cfg` as this command judges its run: under SLURM, in the precision its job trains in (bf16 when the
    job has a GPU, by --slurm-gpus-per-job or a GPU named in --slurm-extra, and amp is on), whatever GPU
    this login node has."""
    if launcher.kind != "slurm" or cfg.precision is not None:
        return cfg
    gpu = launcher.gpus_per_job > 0 or any("gpu" in f"{k}={v}".lower() for k, v in launcher.extra.items())
    return dataclasses.replace(cfg, precision="bf16" if cfg.amp and cfg.use_gpu and gpu else "fp32")


def _current(cfg: RunConfig, results_dir: Path, n_bootstrap: int, calibrate: bool, train_scores: bool = False):
    """Task.current of a run: what `_job` would hand back, when that is only reading files."""
    def current() -> tuple[str, Path] | None:
        results = finished_results(cfg, results_dir, n_bootstrap, calibrate, train_scores)
        return None if results is None else (str(cfg.run), results)
    return current


def _data_fingerprint(data_dir: str) -> str | None:
    from utils.cache import preprocess_manifest

    try:
        return preprocess_manifest(Path(data_dir)).get("fingerprint")
    except PipelineError:  # not preprocessed: the run says so itself
        return None


def _key(cfg: RunConfig, data: str | None, results_dir: Path, n_bootstrap: int, calibrate: bool,
         train_scores: bool) -> str:
    """Task.key of a run: every setting `_job` computes with, its folders as real paths (the same folders
    however they are spelt, from whichever working folder), and its data's fingerprint `data` (a folder
    preprocessed again holds other data). Not what changes nothing computed: the loader's processes, and
    --force and --resume (a forced job's result is what a rerun without --force gathers)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("num_workers", "force", "resume")}
    for k in ("data_dir", "run_dir", "init_from"):
        if settings.get(k):
            settings[k] = os.path.realpath(settings[k])
    return json.dumps([settings, data, os.path.realpath(results_dir), n_bootstrap, calibrate, train_scores],
                      sort_keys=True, default=str)

"""utils/launch.py, the local launcher: with --jobs N, runs whose results are current are gathered in
this process and no worker is started for them (the SLURM launcher: tests/test_slurm.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

import utils.launch as launch_module
from utils.errors import PipelineError
from utils.launch import Launcher, Task, launch


def no_worker(*args, **kwargs):
    raise AssertionError("a worker process was started")


def test_current_runs_start_no_worker(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(launch_module, "process_map", no_worker)
    tasks = [Task(f"run{i}", tmp_path / f"run{i}", int, ("not a number",), current=lambda i=i: f"result {i}")
             for i in range(3)]  # computing any of them would fail
    assert launch(tasks, Launcher(jobs=2)) == ["result 0", "result 1", "result 2"]
    assert "3 of 3 runs current: reused, nothing computed for them" in capsys.readouterr().out


def test_one_run_left_is_computed_here_and_a_failure_still_names_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(launch_module, "process_map", no_worker)
    tasks = [Task("done", tmp_path / "done", int, ("x",), current=lambda: "kept"),
             Task("todo", tmp_path / "todo", str.upper, ("computed",), current=lambda: None)]
    assert launch(tasks, Launcher(jobs=2)) == ["kept", "COMPUTED"]
    assert "1 of 2 runs current" in capsys.readouterr().out
    tasks[1] = Task("todo", tmp_path / "todo", int, ("x",))
    with pytest.raises(PipelineError, match="1 of 2 runs failed: todo"):
        launch(tasks, Launcher(jobs=2))


def test_runs_not_current_go_to_the_workers_in_order(tmp_path):
    tasks = [Task("a", Path("a"), str.upper, ("a",), current=lambda: None), Task("b", Path("b"), str.upper, ("b",)),
             Task("c", Path("c"), str.upper, ("c",), current=lambda: "C (kept)")]
    assert launch(tasks, Launcher(jobs=2)) == ["A", "B", "C (kept)"]


def test_a_run_whose_currency_cannot_be_told_runs_and_fails_on_its_own(monkeypatch, tmp_path):
    """current() raising (an unreadable file) is not the command's end: the run is computed, and its own
    failure, if any, is said while the others are kept."""
    monkeypatch.setattr(launch_module, "process_map", no_worker)

    def unreadable():
        raise OSError("Input/output error")

    tasks = [Task("done", tmp_path / "done", int, ("x",), current=lambda: "kept"),
             Task("unsure", tmp_path / "unsure", str.upper, ("computed",), current=unreadable)]
    assert launch(tasks, Launcher(jobs=2)) == ["kept", "COMPUTED"]


def test_workers_are_told_how_many_run_side_by_side(monkeypatch, tmp_path):
    """--jobs 8 with two runs left starts two workers, and each worker's initializer hears two (a study
    worker's share of the cores is theirs over the workers started, not over --jobs)."""
    started = {}

    def record(fn, tasks, workers, initializer=None, initargs=()):
        started.update(workers=workers, initargs=initargs)
        return [launch_module.TaskOutcome(True, fn(t)) for t in tasks]

    monkeypatch.setattr(launch_module, "process_map", record)
    tasks = [Task(name, Path(name), str.upper, (name,)) for name in ("a", "b")] + \
        [Task("c", Path("c"), str.upper, ("c",), current=lambda: "C (kept)")]
    assert launch(tasks, Launcher(jobs=8), print, ("gpus",)) == ["A", "B", "C (kept)"]
    assert started == {"workers": 2, "initargs": (2, "gpus")}


def test_a_study_run_s_key_holds_what_it_computes_with_and_nothing_else(tmp_path, monkeypatch):
    """The key a SLURM job is recorded with (utils.launch: a job of another key is not waited for): every
    setting, the data's fingerprint, the results folder and the evaluation's settings; not the loader's
    processes, --force or --resume, nor how the folders are spelt."""
    import dataclasses
    import os

    from models.studies import _key
    from models.training import RunConfig

    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    base, r = RunConfig(data_dir=str(tmp_path / "data"), run_dir=str(tmp_path / "run"), epochs=1), tmp_path / "r"
    key = _key(base, "fp", r, 10, False, False)
    monkeypatch.chdir(tmp_path)
    spelt = dataclasses.replace(base, data_dir="link/../data", run_dir="run")  # through a link, from tmp_path
    for same in (_key(dataclasses.replace(base, num_workers=0, force=True, resume=True), "fp", r, 10, False, False),
                 _key(spelt, "fp", "./r", 10, False, False)):
        assert same == key
    others = [_key(dataclasses.replace(base, epochs=3), "fp", r, 10, False, False),
              _key(dataclasses.replace(base, seed=1), "fp", r, 10, False, False),
              _key(base, "other data", r, 10, False, False), _key(base, "fp", tmp_path / "other", 10, False, False),
              _key(base, "fp", r, 11, False, False), _key(base, "fp", r, 10, True, False),
              _key(base, "fp", r, 10, False, True)]
    assert len({key, *others}) == len(others) + 1


def test_job_ids_are_listed_as_scancel_takes_them_in_numeric_order():
    from utils.launch import job_list

    assert job_list(["1000", "557_3", "999", "557_0", "557_1", "557_5", "557_2", "600_4"]) == \
        "557_[0-3,5] 600_4 999 1000"


def test_under_slurm_a_run_is_judged_in_the_precision_its_job_trains_in():
    """A login node without a GPU judges a GPU job's run as bf16 (amp on), as the job resolves it."""
    from models.studies import _as_its_job_runs
    from models.training import RunConfig

    gpu = RunConfig(use_gpu=True)
    assert _as_its_job_runs(gpu, Launcher(kind="slurm", gpus_per_job=1)).precision == "bf16"
    assert _as_its_job_runs(RunConfig(use_gpu=True, amp=False), Launcher(kind="slurm", gpus_per_job=1)).precision \
        == "fp32"
    assert _as_its_job_runs(gpu, Launcher(kind="slurm", extra={"gres": "gpu:1"})).precision == "bf16"
    assert _as_its_job_runs(gpu, Launcher(kind="slurm")).precision == "fp32"  # a job without a GPU
    assert _as_its_job_runs(gpu, Launcher()).precision is None  # here: resolved by this machine


def test_a_precision_given_is_kept_when_the_run_s_identity_is_resolved(prepared):
    """What `_as_its_job_runs` sets is what the run is judged by (not this machine's GPU)."""
    from models.training import RunConfig, resolve_identity

    assert resolve_identity(RunConfig(data_dir=str(prepared), precision="bf16")).precision == "bf16"
    assert resolve_identity(RunConfig(data_dir=str(prepared))).precision == "fp32"  # no GPU here

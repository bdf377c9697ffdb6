"""--launcher slurm on a real one-node SLURM (tests/slurm/start.sh): the same table as --launcher local, a
cancelled job said in one line and resubmitted alone, --no-wait then a rerun that gathers, a requeued
job resuming mid-training; and every launcher flag's bad value refused, naming the flag."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import benchmark
import cross_database
import cross_validate
import lead_study
from models.checkpoint import peek_checkpoint
from utils.errors import Pending, PipelineError
from utils.launch import Launcher, Task, launch

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "tests" / "slurm" / "start.sh"
BENCH = ["--preset", "demo", "--tasks", "superdiagnostic", "--models", "fcn_wang,resnet1d_wang", "--epochs", "1",
         "--deterministic"]


@pytest.fixture(scope="module")
def slurm():
    """A running one-node cluster (started by the project's script), SLURM_CONF set for the clients."""
    if os.environ.get("ECG_NO_SLURM"):
        pytest.skip("ECG_NO_SLURM is set")
    out = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        pytest.skip((out.stderr or out.stdout).strip().splitlines()[-1] if (out.stderr or out.stdout).strip()
                    else f"{START} failed")
    conf = out.stdout.strip().rsplit("SLURM_CONF=", 1)[-1]
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before


def command(script: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / script), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def job_of(run: Path, proc: subprocess.Popen | None = None, timeout: float = 300) -> str:
    """The job id the run folder records (waiting for the submission, `proc`, to write it)."""
    record = run / "slurm" / "job.json"
    end = time.time() + timeout
    while not record.exists():
        assert time.time() < end, f"{record} never written"
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{record} never written: the command ended ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    return json.loads(record.read_text())["job_id"]


def job_pids(job: str) -> list[int]:
    """The processes of a running job (its batch script and steps) on this node."""
    out = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()]


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def table(results: Path, database: str) -> pd.DataFrame:
    """The benchmark table without its score files' paths (each results folder has its own)."""
    t = pd.read_csv(results / database / "benchmark" / "table.csv")
    return t.drop(columns=["scores"])


def cancel_resubmit_and_gather(ptbxl: Path, tmp_path: Path, capsys) -> None:
    """--launcher slurm gives --launcher local's table; a cancelled job fails its run alone, in one line;
    --no-wait resubmits that run alone; a rerun gathers without submitting."""
    local = ["--data-dir", str(ptbxl), *BENCH, "--results-dir", str(tmp_path / "rl"), "--tasks-dir", str(tmp_path / "tl")]
    argv = ["--data-dir", str(ptbxl), *BENCH, "--results-dir", str(tmp_path / "rs"), "--tasks-dir", str(tmp_path / "ts"),
            "--launcher", "slurm"]
    runs = tmp_path / "ts" / f"{ptbxl.name}_superdiagnostic" / "runs"
    victim = runs / "resnet1d_wang_all_42"

    proc = command("benchmark.py", *argv)
    job = job_of(victim, proc)
    subprocess.run(["scancel", job], check=True)
    benchmark.main(local)  # the reference table, while SLURM trains the other run
    rc, out, err = finish(proc)
    assert rc == 1, err[-2000:]
    failed = [line for line in re.split(r"[\r\n]", err) if line.startswith("failed:")]
    assert len(failed) == 1 and str(victim) in failed[0] and f"{job}.err" in failed[0], err[-2000:]
    assert (victim / "slurm" / f"{job}.err").is_symlink()
    assert err.strip().splitlines()[-1].startswith("error: 1 of 2 runs failed") and str(victim) in err.splitlines()[-1]
    assert (runs / "fcn_wang_all_42" / "model.pth").exists()  # the other went on

    capsys.readouterr()
    benchmark.main([*argv, "--no-wait"])  # the later commands in this process: its imports are paid already
    out = capsys.readouterr().out
    submitted = [line for line in out.splitlines() if line.startswith("submitted")]
    assert submitted == [f"submitted 1 run(s) as SLURM job {job_of(victim).split('_')[0]}: {victim}"], out[-2000:]
    assert "1 of 2 runs current" in out and "rerun the same command to gather them" in out.splitlines()[-1]
    assert not (tmp_path / "rs" / ptbxl.name / "benchmark" / "table.csv").exists()

    benchmark.main(argv)  # gathers: waits for the queued one, submits nothing
    out = capsys.readouterr().out
    assert not [line for line in out.splitlines() if line.startswith("submitted")]
    assert "not submitted again" in out or "2 of 2 runs current" in out
    pd.testing.assert_frame_equal(table(tmp_path / "rs", ptbxl.name), table(tmp_path / "rl", ptbxl.name))


# the job is stopped (SIGSTOP) as soon as its first epoch is saved, so it cannot finish before the requeue;
# epochs take about 0.5 s each on a 2-core AVX-512 machine under the suite: 3 leave a margin of two
EPOCHS = 3


def requeue_after_first_epoch(ptbxl: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, str]:
    """A job stopped after its first epoch, requeued and killed at once (as a preemption that does not
    wait SLURM's KillWait). Returns the benchmark command (still waiting for the job), the run, the job."""
    argv = ["--data-dir", str(ptbxl), *BENCH, "--tasks", "superdiagnostic", "--models", "fcn_wang",
            "--epochs", str(EPOCHS), "--results-dir", str(tmp_path / "r"), "--tasks-dir", str(tmp_path / "t"),
            "--launcher", "slurm"]
    run = tmp_path / "t" / f"{ptbxl.name}_superdiagnostic" / "runs" / "fcn_wang_all_42"
    proc = command("benchmark.py", *argv)
    try:
        job = job_of(run, proc)
        end = time.time() + 600
        while not (run / "last.pth").exists():  # written atomically: once there, one epoch is done
            assert time.time() < end and proc.poll() is None, "no epoch finished"
            time.sleep(0.05)
        pids = job_pids(job)
        signal_all(pids, signal.SIGSTOP)  # no further epoch from here on
        try:
            epoch = peek_checkpoint(run / "last.pth")["epoch"]
            assert epoch < EPOCHS
            subprocess.run(["scontrol", "requeue", job], check=True)
        finally:  # now (the job would otherwise train on through KillWait, 5 s after SIGTERM), and never left stopped
            signal_all(pids, signal.SIGKILL)
    except BaseException:
        proc.kill()
        raise
    return proc, run, job


def resumed(proc: subprocess.Popen, run: Path, job: str) -> None:
    """The requeued job ran again and resumed from its last epoch: each epoch trained once, the run finished."""
    rc, out, err = finish(proc)
    assert rc == 0, err[-2000:]
    log = (run / "slurm" / f"{job}.out").read_text()
    assert "resuming" in log and "after epoch" in log, log[-2000:]
    assert peek_checkpoint(run / "last.pth")["epoch"] == EPOCHS
    assert len(pd.read_csv(run / "log.csv")) == EPOCHS  # each epoch once


@pytest.mark.slow
def test_a_cancelled_run_alone_is_resubmitted_and_a_requeued_job_resumes(slurm, synthetic_ptbxl, tmp_path, capsys):
    """The two scenarios overlap, each waiting on SLURM most of its time: the cancellation runs while the
    requeued job waits to start again (SLURM's credential delay, 6 s) and resumes. When the cancellation
    fails, the requeue's command is killed and that failure is the one reported."""
    proc, run, job = requeue_after_first_epoch(synthetic_ptbxl, tmp_path / "requeue")
    try:
        cancel_resubmit_and_gather(synthetic_ptbxl, tmp_path / "cancel", capsys)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    resumed(proc, run, job)


def test_a_finished_run_whose_job_is_still_in_the_queue_is_gathered(slurm, tmp_path, capsys):
    """A job stays in the queue for a moment after writing its result (COMPLETING): a rerun then gathers
    the run's current result and does not report it as queued or running."""
    run = tmp_path / "run"
    with pytest.raises(Pending):
        launch([Task("run", run, time.sleep, (120,))], Launcher(kind="slurm", wait=False))
    job = job_of(run)
    try:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
        assert state.strip() in ("PENDING", "CONFIGURING", "RUNNING"), state
        capsys.readouterr()
        finished = Task("run", run, time.sleep, (120,), current=lambda: "its result")
        assert launch([finished], Launcher(kind="slurm", wait=False)) == ["its result"]
        assert "1 of 1 runs current: gathered" in capsys.readouterr().out
    finally:
        subprocess.run(["scancel", job], check=True)


def test_a_queued_job_of_other_settings_is_neither_waited_for_nor_gathered(slurm, tmp_path, capsys):
    """A rerun with other settings (another key) while the run's job is queued stops, naming the job and
    nothing submitted; the same settings wait for it."""
    run = tmp_path / "run"
    with pytest.raises(Pending):
        launch([Task("run", run, time.sleep, (120,), key="epochs 1")], Launcher(kind="slurm", wait=False))
    job = job_of(run)
    try:
        record = (run / "slurm" / "job.json").read_text()
        with pytest.raises(PipelineError) as e:
            launch([Task("run", run, time.sleep, (120,), key="epochs 3")], Launcher(kind="slurm", wait=False))
        assert "other settings" in str(e.value) and f"scancel {job}" in str(e.value), e.value
        assert (run / "slurm" / "job.json").read_text() == record  # nothing submitted
        capsys.readouterr()
        with pytest.raises(Pending):
            launch([Task("run", run, time.sleep, (120,), key="epochs 1")], Launcher(kind="slurm", wait=False))
        assert f"job {job} is" in capsys.readouterr().out and (run / "slurm" / "job.json").read_text() == record
    finally:
        subprocess.run(["scancel", job], check=True)


@pytest.mark.parametrize("flag,value", [("--launcher", "pbs"), ("--slurm-array-parallelism", "0"),
                                        ("--slurm-partition", "a b"), ("--slurm-gpus-per-job", "-1"),
                                        ("--slurm-cpus-per-job", "0"), ("--slurm-mem", "lots"),
                                        ("--slurm-time", "soon"), ("--slurm-account", "x;y"),
                                        ("--slurm-extra", "qos"), ("--slurm-extra", "time=5")])
def test_every_launcher_flag_s_bad_value_exits_2_naming_it(flag, value, capsys, tmp_path):
    for main, base in ((benchmark.main, ["--data-dir", str(tmp_path)]),
                       (cross_validate.main, ["--data-dir", str(tmp_path)]),
                       (lead_study.main, ["--data-dir", str(tmp_path)]),
                       (cross_database.main, ["--data-dirs", str(tmp_path / "a"), str(tmp_path / "b")])):
        extra = [] if flag == "--launcher" else ["--launcher", "slurm"]
        with pytest.raises(SystemExit) as e:
            main([*base, *extra, flag, value])
        assert e.value.code == 2
        assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--no-wait"], ["--slurm-mem", "4G"], ["--launcher", "slurm", "--jobs", "2"],
                                  ["--launcher", "slurm", "--slurm-extra", "qos=a", "--slurm-extra", "qos=b"]])
def test_a_flag_of_the_other_launcher_exits_2_naming_it(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--data-dir", str(tmp_path), *argv])
    assert e.value.code == 2
    named = {"--no-wait": "--no-wait", "--slurm-mem": "--slurm-mem", "--launcher": "--jobs"}[argv[0]]
    if "--slurm-extra" in argv:
        named = "--slurm-extra"
    assert f"argument {named}" in capsys.readouterr().err

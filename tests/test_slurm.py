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
import threading
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


def test_a_missing_slurm_tool_or_sbatch_s_refusal_is_one_line_before_anything_waits(slurm, tmp_path, monkeypatch):
    """Without srun on PATH (a job's task runs through it) nothing is submitted; sbatch refusing an option
    is said by its own reason, not by its pointer to --help."""
    import shutil

    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sbatch", "squeue", "scancel"):
        (tools / tool).symlink_to(shutil.which(tool))
    with monkeypatch.context() as m:
        m.setenv("PATH", f"{tools}:{Path(sys.executable).parent}")
        with pytest.raises(PipelineError) as e:
            launch([Task("run", tmp_path / "run", time.sleep, (1,))], Launcher(kind="slurm", wait=False))
    assert str(e.value).startswith("--launcher slurm: srun not on PATH"), e.value
    assert not (tmp_path / "run" / "slurm" / "job.json").exists()
    with pytest.raises(PipelineError) as e:
        launch([Task("run", tmp_path / "run", time.sleep, (1,))],
               Launcher(kind="slurm", wait=False, extra={"setup": "x"}))
    message = str(e.value)
    assert "sbatch refused the jobs" in message and "setup" in message and "--help" not in message, message


LATER = Launcher(kind="slurm", wait=False, extra={"begin": "now+3600"})  # a job that stays pending, using no CPU


def pending_job(run: Path, key: str | None = None) -> str:
    """A job submitted for `run` that waits an hour to start (it is cancelled before then)."""
    with pytest.raises(Pending):
        launch([Task(run.name, run, time.sleep, (1,), key=key)], LATER)
    return job_of(run)


def queue_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True).stdout.strip()


def test_a_finished_run_whose_job_is_still_in_the_queue_is_gathered(slurm, tmp_path, capsys):
    """A job stays in the queue for a moment after writing its result (COMPLETING): a rerun then gathers
    the run's current result and does not report it as queued or running."""
    run = tmp_path / "run"
    job = pending_job(run)
    try:
        assert queue_state(job).startswith("PENDING"), queue_state(job)
        capsys.readouterr()
        finished = Task("run", run, time.sleep, (1,), current=lambda: "its result")
        assert launch([finished], Launcher(kind="slurm", wait=False)) == ["its result"]
        assert "1 of 1 runs current: gathered" in capsys.readouterr().out
    finally:
        subprocess.run(["scancel", job], check=True)


def test_a_queued_job_of_other_settings_is_neither_waited_for_nor_gathered(slurm, tmp_path, capsys, monkeypatch):
    """A rerun with other settings (another key) while the run's job is queued stops, naming the job and
    nothing submitted; the same settings wait for it."""
    import utils.launch as launch_module

    run = tmp_path / "run"
    job = pending_job(run, key="epochs 1")
    try:
        record = (run / "slurm" / "job.json").read_text()
        with pytest.raises(PipelineError) as e:
            launch([Task("run", run, time.sleep, (1,), key="epochs 3")], LATER)
        assert "other settings" in str(e.value) and f"scancel {job}" in str(e.value), e.value
        assert (run / "slurm" / "job.json").read_text() == record  # nothing submitted
        capsys.readouterr()

        def no_lock(*args, **kwargs):
            raise AssertionError("a lock taken to wait for a job (a read-only run folder could not)")

        monkeypatch.setattr(launch_module, "exclusive_lock", no_lock)
        with pytest.raises(Pending):
            launch([Task("run", run, time.sleep, (1,), key="epochs 1")], LATER)
        assert f"job {job} is" in capsys.readouterr().out and (run / "slurm" / "job.json").read_text() == record
        # a job recorded by a version that kept no settings: waited for, as that version did, and said
        old = json.loads(record)
        del old["key"]
        (run / "slurm" / "job.json").write_text(json.dumps(old))
        with pytest.raises(Pending):
            launch([Task("run", run, time.sleep, (1,), key="epochs 3")], LATER)
        assert f"job {job} (its settings not recorded" in capsys.readouterr().out
    finally:
        subprocess.run(["scancel", job], check=True)


def test_two_commands_at_once_on_a_new_run_submit_one_job(slurm, tmp_path):
    """Deciding whether to submit a run, and submitting it, is one command's at a time: started together
    (held at the run's lock until both are ready), one submits and the other waits for its job."""
    from utils.launch import JOB_DIR, SUBMIT_LOCK
    from utils.locks import exclusive_lock

    run = tmp_path / "run"
    code = ("import time\nfrom pathlib import Path\nfrom utils.errors import Pending\n"
            "from utils.launch import Launcher, Task, launch\n"
            f"try:\n    launch([Task('run', Path({str(run)!r}), time.sleep, (1,))], Launcher(kind='slurm', "
            f"wait=False, extra={{'begin': 'now+3600'}}))\nexcept Pending as e:\n    print(e)\n")
    with exclusive_lock(run / JOB_DIR / SUBMIT_LOCK, "the test"):
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(1.5)  # both started and at the lock
    outs = [finish(proc, timeout=120) for proc in procs]
    try:
        assert all(rc == 0 for rc, _, _ in outs), outs
        printed = "".join(out for _, out, _ in outs)
        assert printed.count("submitted 1 run(s)") == 1 and printed.count("not submitted again") == 1, printed
    finally:
        subprocess.run(["scancel", job_of(run)])


def test_a_finished_job_s_run_is_read_from_the_files_as_this_command_names_them(slurm, tmp_path, capsys):
    """Once a job ends, its run is gathered as this command reads it (Task.gather), not from the job's
    own result (its paths spelt by the command that submitted it); a run not there for this command's
    settings fails in one line. A task without a key is not said to be of an older version."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert launch([Task("a", a, str.upper, ("from the job",), key=None, gather=lambda: "read here")],
                  Launcher(kind="slurm")) == ["read here"]
    with pytest.raises(PipelineError) as e:
        launch([Task("b", b, str.upper, ("from the job",), gather=lambda: None)], Launcher(kind="slurm"))
    assert "is not current for this command's settings" in str(e.value) and "rerun the command" in str(e.value)
    assert launch([Task("c", tmp_path / "c", str.upper, ("from the job",))], Launcher(kind="slurm")) == \
        ["FROM THE JOB"]  # no gather: the job's own result
    job = pending_job(tmp_path / "d")  # a task without a key, its job waited for again
    try:
        capsys.readouterr()
        with pytest.raises(Pending):
            launch([Task("d", tmp_path / "d", time.sleep, (1,))], LATER)
        out = capsys.readouterr().out
        assert f"job {job} is pending, not submitted again" in out and "not recorded" not in out, out
    finally:
        subprocess.run(["scancel", job], check=True)


def test_a_rerun_waits_for_a_forced_job_not_yet_done_instead_of_reading_the_old_files(slurm, tmp_path, capsys):
    """--force: the run's current files are the old run's until its queued job is done, so a rerun (without
    --force) waits for the job, and the advice to rerun says to leave --force off."""
    run = tmp_path / "run"
    with pytest.raises(Pending) as e:
        launch([Task("run", run, time.sleep, (1,), key="k", fresh=True)], LATER)
    assert "rerun the same command without --force to gather them" in str(e.value), e.value
    job = job_of(run)
    try:
        capsys.readouterr()
        with pytest.raises(Pending):
            launch([Task("run", run, time.sleep, (1,), key="k", current=lambda: "the old run")], LATER)
        assert f"job {job} is pending, not submitted again" in capsys.readouterr().out
    finally:
        subprocess.run(["scancel", job], check=True)


def test_squeue_failing_for_a_moment_is_asked_again_and_failing_on_is_one_error(slurm, tmp_path, monkeypatch, capsys):
    """A controller's hiccup (squeue failing once) does not end the command; squeue failing every time
    does, in one error line."""
    import utils.launch as launch_module

    run = tmp_path / "run"
    job = pending_job(run)
    real = subprocess.run(["bash", "-c", "command -v squeue"], capture_output=True, text=True).stdout.strip()
    tools, count = tmp_path / "bin", tmp_path / "calls"
    tools.mkdir()
    (tools / "squeue").write_text(f"#!/bin/bash\necho x >> {count}\nif [ $(wc -l < {count}) -le $FAILS ]; then\n"
                                  f"  echo 'squeue: error: slurm_load_jobs error: Socket timed out' >&2; exit 1\nfi\n"
                                  f"exec {real} \"$@\"\n")
    (tools / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.setattr(launch_module, "SQUEUE_RETRIES_S", (0.1, 0.1))
    try:
        monkeypatch.setenv("FAILS", "1")
        with pytest.raises(Pending):
            launch([Task("run", run, time.sleep, (1,))], LATER)
        assert "Socket timed out); asking again in 0.1 s" in capsys.readouterr().err
        count.unlink()
        monkeypatch.setenv("FAILS", "9")
        with pytest.raises(PipelineError) as e:
            launch([Task("run", run, time.sleep, (1,))], LATER)
        assert str(e.value).startswith("squeue failed, 3 times") and "Socket timed out" in str(e.value)
        assert count.read_text().count("x") == 3
        count.unlink()  # its configuration: asking again would not help
        (tmp_path / "bad.conf").write_text("not a SLURM configuration\n")
        with monkeypatch.context() as m:
            m.setenv("SLURM_CONF", str(tmp_path / "bad.conf"))
            m.setenv("FAILS", "0")
            with pytest.raises(PipelineError) as e:
                launch([Task("run", run, time.sleep, (1,))], LATER)
        assert "fatal" in str(e.value) and count.read_text().count("x") == 1, e.value
    finally:
        subprocess.run(["scancel", job], check=True)


def test_a_job_slurm_can_never_start_fails_its_run_and_is_cancelled(slurm, tmp_path):
    """More CPUs per job than the node has: pending for ever (PartitionConfig). Its run fails in one
    line naming the reason, the job is cancelled, and the command does not wait on."""
    run = tmp_path / "run"

    def waited_too_long(*_):
        raise TimeoutError("still waiting for a job SLURM never starts")

    before = signal.signal(signal.SIGALRM, waited_too_long)
    signal.alarm(60)
    try:
        with pytest.raises(PipelineError) as e:
            launch([Task("run", run, time.sleep, (1,))], Launcher(kind="slurm", cpus_per_job=64))
    except BaseException:
        if (run / "slurm" / "job.json").exists():
            subprocess.run(["scancel", job_of(run)])
        raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert "SLURM will never start job" in str(e.value) and "change the --slurm-* flags" in str(e.value), e.value
    job = job_of(run)
    try:
        end = time.time() + 30
        while queue_state(job).startswith("PENDING"):  # cancelled by the command
            assert time.time() < end, queue_state(job)
            time.sleep(0.2)
    finally:
        subprocess.run(["scancel", job])


def test_ctrl_c_while_waiting_names_the_jobs_left_queued_and_a_held_job_is_said(slurm, tmp_path):
    """A held job is said once (it starts when released); Ctrl-C then ends the command in one line that
    names the jobs it leaves in the queue, exit 130."""
    run = tmp_path / "run"
    job = pending_job(run)
    try:
        subprocess.run(["scontrol", "hold", job], check=True)
        code = ("import time\nfrom pathlib import Path\nfrom utils.errors import script_main\n"
                "from utils.launch import Launcher, Task, launch\n\n@script_main\ndef main():\n"
                f"    launch([Task('run', Path({str(run)!r}), time.sleep, (1,))], Launcher(kind='slurm'))\n\nmain()\n")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        timer = threading.Timer(60, proc.kill)  # never left waiting on a job that is not said to be held
        timer.daemon = True
        timer.start()
        lines = []
        for line in proc.stderr:  # the held job said
            lines.append(line)
            if "is held" in line:
                break
        assert f"job {job} is held" in lines[-1] and f"scontrol release {job}" in lines[-1], lines
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
        last = [line for line in err.replace("\r", "\n").splitlines() if line.strip()][-1]
        assert last.startswith("interrupted (Ctrl-C): SLURM job(s) " + job) and f"scancel {job}" in last, err
        assert "Traceback" not in err
        assert queue_state(job).startswith("PENDING")  # left queued, as said
        timer.cancel()
    finally:
        subprocess.run(["scancel", job], check=True)


@pytest.mark.parametrize("flag,value", [("--launcher", "pbs"), ("--slurm-array-parallelism", "0"),
                                        ("--slurm-partition", "a b"), ("--slurm-gpus-per-job", "-1"),
                                        ("--slurm-cpus-per-job", "0"), ("--slurm-mem", "lots"),
                                        ("--slurm-time", "soon"), ("--slurm-account", "x;y"),
                                        ("--slurm-extra", "qos"), ("--slurm-extra", "time=5"),
                                        ("--slurm-time", "1:75"), ("--slurm-time", "2-24"),
                                        ("--slurm-time", "99999999999999999999"), ("--slurm-extra", "wrap=hostname"),
                                        ("--slurm-extra", "ntasks-per-node=2"), ("--slurm-extra", "signal=USR1@60"),
                                        ("--slurm-extra", "arr=0-3"), ("--slurm-extra", "sig=USR1@60"),
                                        ("--slurm-extra", "part=gpu"), ("--slurm-extra", "chdir=/tmp")])
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

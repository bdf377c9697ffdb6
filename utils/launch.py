"""Where a command's runs execute: side by side on this machine (`--launcher local`, `--jobs N`), or as
SLURM jobs (`--launcher slurm`), one job array through submitit. Every multi-run command (benchmark.py,
cross_validate.py, lead_study.py, cross_database.py) hands its runs here as `Task`s and gets their
results back in order; what a run is stays the command's business.

Under SLURM each run's folder records its job (`slurm/job.json`) and holds its job logs (`slurm/`), so
a rerun of the same command knows what it launched: a run whose result is current is gathered, one
whose job is still queued or running is waited for (or, with `--no-wait`, left to run), and only the
others are submitted. A job pre-empted or timed out is requeued by submitit and calls its task again,
which resumes the run from its `last.pth`. A failed run is one line naming it and its log; the others
go on, and the command then stops with one error naming every failed run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from utils.errors import Pending, PipelineError
from utils.cli import MAX_WORKERS, bounded_int, flag_error, flag_given
from utils.files import write_json
from utils.locks import exclusive_lock
from utils.parallel import TaskOutcome, describe_failure, process_map

__all__ = ["Task", "Launcher", "add_launcher_arguments", "launcher_from_args", "launch", "JOB_DIR", "JOB_JSON"]

LAUNCHERS = ("local", "slurm")
JOB_DIR = "slurm"          # a run folder's job logs and submitit's files
JOB_JSON = "job.json"      # in JOB_DIR: the job id of the run's latest submission
SUBMIT_LOCK = ".submit.lock"  # in JOB_DIR: held while a command decides whether to submit the run, and does
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED", "SPECIAL_EXIT",
          "RESV_DEL_HOLD"}  # still the queue's
POLL_S = 3.0         # squeue at most this often, and the longest wait between two looks at the results
SQUEUE_RETRIES_S = (2, 4, 8, 16, 30)  # a failed squeue is asked again after these pauses (a controller's hiccup)
# why a job is pending when SLURM will never start it as submitted (a limit of its partition, account or QOS)
# (not PartitionNodeLimit or BadConstraints: they also mean that the nodes that would do are down or drained)
NEVER_STARTS = re.compile(r"PartitionConfig|PartitionTimeLimit|InvalidAccount|InvalidQOS|DependencyNeverSatisfied|"
                          r"(QOS|Assoc)Max\w*PerJob\w*")
HELD = re.compile(r"held", re.IGNORECASE)  # JobHeldUser, JobHeldAdmin, "job requeued in held state"
SLURM_TOOLS = ("sbatch", "squeue", "scancel", "srun")  # submit, watch, cancel; srun runs a job's task
SUBMIT_WAIT_S = 120  # another command deciding on the same runs: wait this long for it (sbatch takes seconds)
FIRST_POLL_S = 0.25  # the first look after the submission or a finished job: short jobs are gathered promptly
PROJECT = Path(__file__).resolve().parents[1]  # on the jobs' PYTHONPATH, so that they import the library
# the dedicated flags' keys: --slurm-extra must not set them a second time
DEDICATED = {"partition", "gpus_per_node", "gpus-per-node", "cpus_per_task", "cpus-per-task", "mem", "time",
             "account", "array", "array_parallelism", "output", "error", "job_name", "job-name",
             # what submitit's script sets itself: one task on one node, its signal, its command
             "nodes", "ntasks", "ntasks_per_node", "ntasks-per-node", "signal", "wrap", "open_mode", "open-mode",
             "chdir"}  # the jobs read their folders as the command spelt them, from its working folder
MAX_MINUTES = 366 * 24 * 60  # --slurm-time: a year (a larger number is a typo, not a time limit)


@dataclass(frozen=True)
class Task:
    """One run to launch: `fn(*args)` (module-level, picklable) computes it; `folder` is its run folder
    (its job record and logs go there); `current()`, when given, returns its result without computing
    anything if the result is already current (None otherwise), so that SLURM is not asked for it. `key`
    says what the task computes (its settings, as text): a job recorded for the run with another key was
    submitted for other settings, and is neither waited for nor gathered as this task's. `gather()`, when
    given, reads the result from the files once the task's SLURM job has ended (None: not there), instead
    of the job's own result, whose paths are spelt as the submitting command spelt them. `fresh`: the task
    computes again even a current result (--force), so while its job is queued or running the current files
    are not its result, and a rerun waits for the job."""
    name: str
    folder: Path
    fn: Callable
    args: tuple = ()
    current: Callable[[], Any] | None = None
    key: str | None = None
    gather: Callable[[], Any] | None = None
    fresh: bool = False  # computed again even when current (--force): while its job is queued, the files are old


@dataclass(frozen=True)
class Launcher:
    """The launch flags of a command."""
    kind: str = "local"
    jobs: int = 1
    wait: bool = True
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    mem: str | None = None
    time_min: int | None = None
    account: str | None = None
    array_parallelism: int | None = None
    extra: dict = field(default_factory=dict)

    def executor_parameters(self) -> dict:
        """submitit's SlurmExecutor parameters of these flags."""
        params = {"cpus_per_task": self.cpus_per_job, "ntasks_per_node": 1, "nodes": 1,
                  "setup": [f"export PYTHONPATH={PROJECT}${{PYTHONPATH:+:$PYTHONPATH}}",
                            "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]}
        if self.time_min is not None:
            params["time"] = self.time_min
        for key, value in (("partition", self.partition), ("mem", self.mem), ("account", self.account),
                           ("array_parallelism", self.array_parallelism)):
            if value is not None:
                params[key] = value
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params


def _name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+(,[A-Za-z0-9_.\-]+)*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SLURM name (letters, digits, _ . -; commas between)")
    return text


_name.__name__ = "a SLURM name"


def _memory(text: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*[KMGT]?", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size such as 16G, 4000M or 4000 (MB)")
    return text.strip()


_memory.__name__ = "a memory size (16G, 4000M)"


def _minutes(text: str) -> int:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as whole minutes, at least 1."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SLURM time (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    # the parts after the first are minutes and seconds (or hours after days): within their range
    if any(v is not None and v >= 60 for v in (b, c)) or (days is not None and a >= 24):
        raise argparse.ArgumentTypeError(f"{text!r} has a part out of its range (hours under 24 after days, "
                                         f"minutes and seconds under 60 after the first part)")
    if days is not None:
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:
        seconds = a * 3600 + b * 60 + c
    elif b is not None:
        seconds = a * 60 + b
    else:
        seconds = a * 60
    if seconds < 60:
        raise argparse.ArgumentTypeError(f"{text!r} is under a minute")
    if seconds > MAX_MINUTES * 60:
        raise argparse.ArgumentTypeError(f"{text!r} is over a year")
    return -(-seconds // 60)


_minutes.__name__ = "a SLURM time (minutes, HH:MM:SS, D-HH:MM:SS)"


def _extra(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9_\-]*", key) or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with an sbatch option as KEY (qos=high)")
    # sbatch takes any unambiguous start of an option's name: arr= is --array
    denied = [d for d in sorted(DEDICATED) if d.replace("_", "-").startswith(key.replace("_", "-"))]
    if denied:
        raise argparse.ArgumentTypeError(f"{key} is (or starts) {denied[0].replace('_', '-')}, which has a flag of "
                                         f"its own or is the launcher's")
    return key.replace("-", "_"), value.strip()


_extra.__name__ = "KEY=VALUE (an sbatch option)"


def add_launcher_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--launcher and --jobs, --no-wait and the --slurm-* flags."""
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: the runs on this machine (--jobs at once); slurm: each run not current as "
                        "a SLURM job (one job array, docs/cluster.md)")
    p.add_argument("--jobs", type=bounded_int(1, MAX_WORKERS), default=1,
                   help="local: runs trained at once, N processes sharing the GPU (or spread over the visible "
                        "GPUs); on CPU they split the cores; %(type)s")
    p.add_argument("--no-wait", action="store_true",
                   help="slurm: submit and return; rerunning the command gathers what finished")
    p.add_argument("--slurm-partition", type=_name, help="slurm: the partition, %(type)s")
    p.add_argument("--slurm-account", type=_name, help="slurm: the account charged, %(type)s")
    p.add_argument("--slurm-gpus-per-job", type=bounded_int(0, 64), default=0, help="slurm: GPUs per run, %(type)s")
    p.add_argument("--slurm-cpus-per-job", type=bounded_int(1, 1024), default=1, help="slurm: CPU cores per run, %(type)s")
    p.add_argument("--slurm-mem", type=_memory, help="slurm: memory per run, %(type)s")
    p.add_argument("--slurm-time", type=_minutes, help="slurm: time limit per run, %(type)s; a run killed at "
                                                       "its limit is requeued and resumes from its last epoch")
    p.add_argument("--slurm-array-parallelism", type=bounded_int(1, 100_000),
                   help="slurm: at most N of the runs' jobs at once, %(type)s")
    p.add_argument("--slurm-extra", type=_extra, action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: any other sbatch option (--slurm-extra qos=high --slurm-extra constraint=a100), "
                        "repeatable")
    return p


SLURM_FLAGS = ("--no-wait", "--slurm-partition", "--slurm-account", "--slurm-gpus-per-job", "--slurm-cpus-per-job",
               "--slurm-mem", "--slurm-time", "--slurm-array-parallelism", "--slurm-extra")


def launcher_from_args(p: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None) -> Launcher:
    """The Launcher of the parsed flags; a flag of the other launcher is an argument error (exit 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.launcher == "local":
        for flag in SLURM_FLAGS:
            if flag_given(p, argv, flag):
                flag_error(p, flag, "only with --launcher slurm")
    elif flag_given(p, argv, "--jobs"):
        flag_error(p, "--jobs", "runs at once on this machine; under --launcher slurm each run is a job "
                                "(--slurm-array-parallelism limits how many run at once)")
    keys = [k for k, _ in args.slurm_extra]
    twice = [k for i, k in enumerate(keys) if k in keys[:i]]
    if twice:
        flag_error(p, "--slurm-extra", f"{twice[0]} is given twice")
    return Launcher(kind=args.launcher, jobs=args.jobs, wait=not args.no_wait, partition=args.slurm_partition,
                    gpus_per_job=args.slurm_gpus_per_job, cpus_per_job=args.slurm_cpus_per_job, mem=args.slurm_mem,
                    time_min=args.slurm_time, account=args.slurm_account,
                    array_parallelism=args.slurm_array_parallelism, extra=dict(args.slurm_extra))


def launch(tasks: Sequence[Task], launcher: Launcher, initializer: Callable | None = None,
           initargs: tuple = ()) -> list:
    """Every task's result, in order. local: `launcher.jobs` processes at a time (`initializer(slot, workers,
    *initargs)` in each, `workers` the number started); slurm: a job per task not current. A failed task is
    said in one line while the others go on; then one PipelineError names every failed task (finished ones
    are kept). With `wait=False`, unfinished jobs raise `Pending` once submitted."""
    if launcher.kind == "slurm":
        return _slurm(list(tasks), launcher)
    if launcher.jobs <= 1 or len(tasks) <= 1:
        outcomes = [_in_process(t) for t in tasks]
        if len(tasks) == 1 and not outcomes[0].ok:
            raise PipelineError(outcomes[0].value)
    else:
        outcomes = _side_by_side(list(tasks), launcher.jobs, initializer, initargs)
    failed = []
    for t, outcome in zip(tasks, outcomes):
        if not outcome.ok:
            failed.append(_failed(t, str(outcome.value)))
    _raise_failed(failed, len(tasks))
    return [o.value for o in outcomes]


def _side_by_side(tasks: list[Task], jobs: int, initializer: Callable | None, initargs: tuple) -> list[TaskOutcome]:
    """--jobs N: the tasks whose result is current are gathered here and no worker is started for them
    (a worker's imports alone take seconds: a rerun of a finished study would start them for nothing);
    the others run in up to N processes, or in this one when one is left."""
    outcomes: list[TaskOutcome | None] = [None] * len(tasks)
    for i, t in enumerate(tasks):
        value = _current_result(t)
        if value is not None:
            outcomes[i] = TaskOutcome(True, value)
    todo = [i for i, o in enumerate(outcomes) if o is None]
    if len(todo) < len(tasks):
        print(f"{len(tasks) - len(todo)} of {len(tasks)} runs current: reused, nothing computed for them", flush=True)
    if len(todo) == 1:
        outcomes[todo[0]] = _in_process(tasks[todo[0]])
    elif todo:
        workers = min(jobs, len(todo))
        ran = process_map(_call, [(tasks[i].fn, tasks[i].args) for i in todo], workers, initializer=initializer,
                          initargs=(workers, *initargs))
        for i, outcome in zip(todo, ran):
            outcomes[i] = outcome
    return outcomes


def _current_result(task: Task) -> Any:
    """The task's result if it is current; None when it is not, or when that cannot be told (an unreadable
    file): the task then runs, and fails on its own, naming what is wrong, while the others go on."""
    if task.current is None:
        return None
    try:
        return task.current()
    except Exception:  # noqa: BLE001 -- the run itself reports it
        return None


def _in_process(task: Task) -> TaskOutcome:
    """A task run in this process, its failure an outcome as a worker of process_map would hand it back (so
    --jobs 1 goes on past a failed run as --jobs 2 does)."""
    try:
        return TaskOutcome(True, task.fn(*task.args))
    except Exception as e:  # noqa: BLE001 -- said in the run's failed: line, like a worker's
        return TaskOutcome(False, describe_failure(e))


def _call(task: tuple[Callable, tuple]) -> Any:
    return task[0](*task[1])


def _failed(task: Task, why: str) -> str:
    """Say a failed run in one line of its own (above a progress bar, if one is drawn)."""
    from tqdm import tqdm

    tqdm.write(f"failed: {task.name}: {why}", file=sys.stderr)
    return f"{task.name} ({why})"


def _raise_failed(failed: list[str], total: int) -> None:
    if failed:
        raise PipelineError(f"{len(failed)} of {total} runs failed: {'; '.join(failed)}; the other runs are "
                            f"kept, and rerunning the command runs only what is missing")


# --- SLURM -----------------------------------------------------------------------------------------------

class _Job:
    """What a SLURM job runs: the task's function, and, when the job is pre-empted or reaches its time
    limit, the same call again once requeued (the run resumes from its last checkpoint)."""

    def __init__(self, name: str, fn: Callable):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)

    def checkpoint(self, *args):
        from submitit.core.utils import DelayedSubmission

        print(f"{self.name}: pre-empted or out of time; requeued, it resumes from its last.pth", flush=True)
        return DelayedSubmission(self, *args)


def _job_dir(task: Task) -> Path:
    return Path(task.folder) / JOB_DIR


NOT_RECORDED = "<not recorded>"  # the key of a job.json written by a version that recorded none


class RecordedJob(NamedTuple):
    """A run's latest submission, as its job.json records it."""
    job_id: str
    folder: Path        # submitit's files of the job
    key: str | None     # the task's key then (NOT_RECORDED: written by a version that kept none)
    fresh: bool         # the task computed again even a current result (--force)


def _recorded_job(task: Task) -> RecordedJob | None:
    try:
        saved = json.loads((_job_dir(task) / JOB_JSON).read_text())
        return RecordedJob(str(saved["job_id"]), Path(saved["folder"]), saved.get("key", NOT_RECORDED),
                           bool(saved.get("fresh")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _queue(job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(state, reason) of each of `job_ids` the queue still holds (array elements one by one). A failing
    squeue is asked again for about a minute (SQUEUE_RETRIES_S) before the command gives up: a wait of
    hours should not end at one of the controller's timeouts."""
    if not job_ids:
        return {}
    for pause in (*SQUEUE_RETRIES_S, None):
        try:
            out = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r"], capture_output=True,
                                 text=True, timeout=120)
        except OSError as e:  # no squeue here: asking again will not help
            raise PipelineError(f"squeue failed ({e}); is SLURM reachable from here?") from None
        except subprocess.TimeoutExpired:
            why = "no answer in 120 s"
        else:
            if out.returncode == 0:
                break
            why = " ".join((out.stderr or out.stdout).strip().splitlines()[-1:])
            if "fatal:" in (out.stderr or out.stdout):  # its configuration, not a passing timeout
                raise PipelineError(f"squeue failed: {why}")
        if pause is None:
            raise PipelineError(f"squeue failed, {len(SQUEUE_RETRIES_S) + 1} times in "
                                f"{sum(SQUEUE_RETRIES_S)} s: {why}")
        print(f"squeue failed ({why}); asking again in {pause} s", file=sys.stderr, flush=True)
        time.sleep(pause)
    wanted, states = set(job_ids), {}
    for line in out.stdout.splitlines():
        jid, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if jid in wanted:
            states[jid] = (state.split()[0] if state.strip() else "", reason.strip())
    return states


def _state(queue: dict[str, tuple[str, str]], job_id: str) -> str | None:
    return queue[job_id][0] if job_id in queue else None


def _submitit_job(job_id: str, folder: Path):
    import submitit

    return submitit.SlurmJob(folder=folder, job_id=job_id)


def _log(task: Task, job_id: str) -> Path:
    """The job's error log as the run folder shows it."""
    return _job_dir(task) / f"{job_id}.err"


def _result(task: Task, job_id: str, folder: Path) -> tuple[str, Any] | None:
    """("success", value) or ("error", why) when the job wrote its result, else None."""
    from submitit.core.utils import pickle_load

    path = _submitit_job(job_id, folder).paths.result_pickle
    if not path.exists():
        return None
    try:
        outcome, value = pickle_load(path)
    except Exception as e:  # noqa: BLE001 - a result written in part is a failed job, said as such
        return "error", f"its result {path} is unreadable ({type(e).__name__}); log {_log(task, job_id)}"
    if outcome != "success":
        lines = [line for line in str(value).strip().splitlines() if line.strip()]
        return "error", (lines[-1] if lines else "an error") + f"; log {_log(task, job_id)}"
    return "success", value


def _record(task: Task, job_id: str, folder: Path) -> None:
    """The run folder's record of its job: job.json and links to the job's logs (slurm/<id>.out, .err)."""
    paths = _submitit_job(job_id, folder).paths
    for link, target in ((_job_dir(task) / f"{job_id}.out", paths.stdout), (_log(task, job_id), paths.stderr)):
        link.unlink(missing_ok=True)
        link.symlink_to(target.absolute())
    write_json({"job_id": job_id, "folder": str(folder.absolute()), "run": task.name, "key": task.key,
                "fresh": task.fresh,
                "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}, _job_dir(task) / JOB_JSON)


def _submit(tasks: list[Task], launcher: Launcher) -> list[tuple[str, Path]]:
    """One job array of `tasks` (a single job for one); returns each one's (job id, submitit folder).
    submitit keeps one array's files in one folder, `<the runs' common folder>/.slurm/<submission>/` (beside
    the first run when they share no folder but the root); each run folder links to its job's logs."""
    import submitit

    common = Path(os.path.commonpath([str(Path(t.folder).absolute()) for t in tasks]))
    home = common if len(tasks) > 1 else common.parent
    if home == Path(home.anchor):  # runs in unrelated trees: beside the first run, not at the root
        home = Path(tasks[0].folder).absolute().parent
    folder = home / ".slurm" / (time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    try:
        folder.mkdir(parents=True)
        for t in tasks:
            _job_dir(t).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PipelineError(f"cannot create {e.filename or folder} for the SLURM jobs ({e.strerror or e})") from None
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=100)
    executor.update_parameters(job_name="ecg", **launcher.executor_parameters())
    try:
        with executor.batch():
            jobs = [executor.submit(_Job(t.name, t.fn), *t.args) for t in tasks]
    except Exception as e:  # noqa: BLE001 - sbatch's refusal, said in one line
        lines = [line for line in str(e).strip().splitlines()  # sbatch's own reason, not its pointer to --help
                 if line.strip() and not re.match(r"\s*Try .*--help", line)]
        raise PipelineError(f"sbatch refused the jobs: {lines[-1] if lines else type(e).__name__}") from None
    for t, j in zip(tasks, jobs):
        _record(t, j.job_id, folder)
    return [(j.job_id, folder) for j in jobs]


def _slurm(tasks: list[Task], launcher: Launcher) -> list:
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        raise PipelineError(f"--launcher slurm: {', '.join(missing)} not on PATH (run on a SLURM login node, or "
                            f"tests/slurm/start.sh for a one-node cluster here)")
    results: list = [None] * len(tasks)
    waiting: dict[int, tuple[str, Path]] = {}   # task index -> (job id, submitit folder)
    submit = _decide(tasks, range(len(tasks)), results, waiting)
    if submit:  # two commands at once on one run: the second, once it has the lock, sees the first's job
        with ExitStack() as held:
            for i in sorted(submit, key=lambda i: os.path.realpath(_job_dir(tasks[i]))):
                held.enter_context(exclusive_lock(_job_dir(tasks[i]) / SUBMIT_LOCK, f"{tasks[i].name} (its "
                                                  f"SLURM submission)", wait_s=SUBMIT_WAIT_S))
            submit = _decide(tasks, submit, results, waiting)
            if submit:
                jobs = _submit([tasks[i] for i in submit], launcher)
                waiting.update(zip(submit, jobs))
    gathered = sum(r is not None for r in results)
    if gathered:
        print(f"{gathered} of {len(tasks)} runs current: gathered, nothing submitted for them", flush=True)
    if submit:
        print(f"submitted {len(submit)} run(s) as SLURM job {waiting[submit[0]][0].split('_')[0]}"
              f"{' (array)' if len(submit) > 1 else ''}: {', '.join(tasks[i].name for i in submit)}", flush=True)
    if not waiting:
        return results
    if not launcher.wait:
        raise Pending(f"{len(waiting)} of {len(tasks)} runs queued or running as SLURM jobs "
                      f"({job_list(j for j, _ in waiting.values())}); rerun {_rerun(tasks, waiting)} to gather them")
    _raise_failed(_wait(tasks, waiting, results), len(tasks))
    return results


def _decide(tasks: list[Task], indices, results: list, waiting: dict[int, tuple[str, Path]]) -> list[int]:
    """Of the runs `indices`: gather those current, or whose job of these settings wrote its result, into
    `results`; put those whose job of these settings is queued or running into `waiting`; return the
    others, to submit. A queued job of other settings stops the command (nothing submitted)."""
    recorded = {i: _recorded_job(tasks[i]) for i in indices if i not in waiting}
    queued = _queue([r.job_id for r in recorded.values() if r])
    submit, others = [], []  # others: runs whose queued job computes other settings, (run, job, state)
    for i, rec in recorded.items():
        t = tasks[i]
        # a job submitted for exactly these settings, or by a version that did not record them (waited for, as
        # that version did; once it ends, its run is gathered only if it is current for these settings)
        ours = rec is not None and rec.key in (NOT_RECORDED, t.key)
        state = _state(queued, rec.job_id) if rec else None
        written = _result(t, rec.job_id, rec.folder) if ours else None  # the job's own result, once written
        fresh_job = ours and rec.fresh and state in ACTIVE and written is None  # --force, not done yet
        # a finished run first: its job may still be in the queue for a moment after writing its result
        value = None if fresh_job else _current_result(t)
        if value is not None:
            results[i] = value
            continue
        done = written if t.current is None else None
        if done is not None and done[0] == "success":
            results[i] = done[1]
            continue
        if state in ACTIVE:
            if not ours:
                others.append((t.name, rec.job_id, state.lower()))
                continue
            unknown = " (its settings not recorded: submitted by an older version)" if rec.key == NOT_RECORDED else ""
            print(f"{t.name}: job {rec.job_id}{unknown} is {state.lower()}, not submitted again", flush=True)
            waiting[i] = (rec.job_id, rec.folder)
            continue
        submit.append(i)
    if others:
        named = "; ".join(f"{name} (job {job}, {state})" for name, job, state in others)
        raise PipelineError(f"{len(others)} run(s) have a SLURM job queued or running that was submitted with other "
                            f"settings or data: {named}; wait for it to end, or `scancel "
                            f"{job_list(job for _, job, _ in others)}`, then rerun (nothing was submitted)")
    return submit


def _rerun(tasks: list[Task], waiting: dict[int, tuple[str, Path]]) -> str:
    """The command that gathers the `waiting` runs: without --force, which would compute them again."""
    return "the same command without --force" if any(tasks[i].fresh for i in waiting) else "the same command"


def job_list(job_ids) -> str:
    """Job ids as scancel takes them, in order: 558 and the elements 557_0-3 and 557_5 of an array as
    `557_[0-3,5] 558`."""
    plain, arrays = set(), {}
    for jid in job_ids:
        base, _, element = str(jid).partition("_")
        if element.isdigit():
            arrays.setdefault(int(base), set()).add(int(element))
        else:
            plain.add(int(base) if base.isdigit() else base)
    parts = []
    for base in sorted(set(arrays) | {b for b in plain if isinstance(b, int)}):
        if base in plain:
            parts.append(str(base))
        if base in arrays:
            runs, elements = [], sorted(arrays[base])
            for e in elements:
                if runs and e == runs[-1][1] + 1:
                    runs[-1][1] = e
                else:
                    runs.append([e, e])
            ranges = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
            parts.append(f"{base}_{ranges}" if len(elements) == 1 else f"{base}_[{ranges}]")
    parts += sorted(str(b) for b in plain if not isinstance(b, int))
    return " ".join(parts)


def _wait(tasks: list[Task], waiting: dict[int, tuple[str, Path]], results: list) -> list[str]:
    """Gather the `waiting` jobs' results into `results` as they finish; returns the failed runs. A job
    SLURM will never start as submitted (NEVER_STARTS) is cancelled and fails its run; a held one is said
    once. Ctrl-C leaves the jobs queued and says so."""
    from tqdm import tqdm

    failed, said = [], set()
    try:
        with tqdm(total=len(waiting), desc="SLURM jobs", unit="run", dynamic_ncols=True) as bar:
            delay, asked = FIRST_POLL_S, -POLL_S
            while waiting:
                if time.monotonic() - asked >= POLL_S:
                    queue, asked = _queue([j for j, _ in waiting.values()]), time.monotonic()
                before = len(waiting)
                for i, (jid, folder) in list(waiting.items()):
                    done = _result(tasks[i], jid, folder)
                    state, reason = queue.get(jid, (None, ""))
                    if done is None and state == "PENDING" and NEVER_STARTS.search(reason):
                        subprocess.run(["scancel", jid], capture_output=True, timeout=60)
                        done = ("error", f"SLURM will never start job {jid} as submitted (pending: {reason}); it "
                                         f"was cancelled: change the --slurm-* flags and rerun")
                    elif done is None and state in ACTIVE:
                        if state == "PENDING" and HELD.search(reason) and jid not in said:
                            said.add(jid)
                            tqdm.write(f"{tasks[i].name}: job {jid} is held ({reason}); it starts once released "
                                       f"(scontrol release {jid})", file=sys.stderr)
                        continue
                    if done is None:  # gone from the queue without a result: cancelled, killed, node failure
                        time.sleep(1)  # a result written as the job left the queue
                        how = (state or "cancelled or killed").lower()
                        done = _result(tasks[i], jid, folder) or (
                            "error", f"SLURM job {jid} ended without a result ({how}); log {_log(tasks[i], jid)}")
                    del waiting[i]
                    bar.update()
                    if done[0] == "success" and tasks[i].gather is not None:
                        done = _gathered(tasks[i], jid)
                    if done[0] == "success":
                        results[i] = done[1]
                    else:
                        failed.append(_failed(tasks[i], done[1]))
                if waiting:  # result files are looked at often while jobs finish, then less and less
                    delay = FIRST_POLL_S if len(waiting) < before else min(POLL_S, delay * 1.5)
                    time.sleep(delay)
    except KeyboardInterrupt:
        jobs = job_list(j for j, _ in waiting.values())
        raise KeyboardInterrupt(f"interrupted (Ctrl-C): SLURM job(s) {jobs} still queued or running; rerun "
                                f"{_rerun(tasks, waiting)} to gather them, or, if no other command waits for them, "
                                f"`scancel {jobs}`") from None
    return failed


def _gathered(task: Task, job_id: str) -> tuple[str, Any]:
    """A finished job's run as this command reads it (`task.gather()`), not as the job's own result
    names it: the job's paths are spelt as the submitting command spelt them, and a job whose settings
    were not recorded may have computed other ones."""
    try:
        value = task.gather()
    except Exception:  # noqa: BLE001 -- said as the run's failure below
        value = None
    if value is None:
        return "error", (f"SLURM job {job_id} finished, but the run is not current for this command's settings "
                         f"(the job was submitted with others, or its files changed since); rerun the command to "
                         f"submit it; log {_log(task, job_id)}")
    return "success", value

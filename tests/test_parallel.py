"""utils/parallel.py: outcomes stay with their tasks, a killed worker fails its own task (never a hang),
killing the parent stops its workers, and two workers' printed lines never run together."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils.errors import PipelineError
from utils.parallel import WholeLines, parallel_map, process_map


def test_outcomes_stay_with_their_tasks_and_a_killed_worker_fails_its_task_alone():
    """The first job finishes last, the second one's worker is killed with -9: the others' outcomes are
    kept, each at its own job's place, and the call returns."""
    tasks = [["sh", "-c", "sleep 0.8; echo slow"], ["sh", "-c", "kill -9 $PPID"], ["sh", "-c", "echo fast"],
             ["sh", "-c", "exit 3"]]
    outcomes = process_map(subprocess.check_output, tasks, 2)
    assert outcomes[0] == (True, b"slow\n") and outcomes[2] == (True, b"fast\n")
    assert outcomes[1] == (False, "its worker process died (killed by signal 9)")
    assert not outcomes[3].ok and "exit status 3" in outcomes[3].value


def test_killing_the_parent_stops_its_workers(tmp_path):
    code = ("import time; from utils.parallel import process_map; "
            "process_map(time.sleep, [60, 60], 2)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    try:
        workers: list[int] = []
        deadline = time.time() + 30
        while len(workers) < 2 and time.time() < deadline:
            time.sleep(0.2)
            workers = spawned_children(parent.pid)
        assert len(workers) == 2
        started(workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(pid) for pid in workers):
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers)
    finally:
        parent.kill()


def started(workers: list[int], timeout: float = 30) -> None:
    """Wait until each worker is past its start-up: it runs its thread that watches the parent."""
    deadline = time.time() + timeout
    while not all(threads(pid) >= 2 for pid in workers):
        assert time.time() < deadline, "the workers never started"
        time.sleep(0.05)


def threads(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0])
    except (OSError, IndexError):
        return 0


def spawned_children(pid: int) -> list[int]:
    """The multiprocessing workers a process has spawned (not its resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = children.read_text().split() if children.exists() else []
    return [int(c) for c in pids if "spawn_main" in cmdline(int(c))]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by init has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_worker_of_a_parallel_stage_is_an_error_not_a_hang():
    """What preprocess.py, baselines.py and shap_values.py run their records through."""
    tasks = [["true"]] * 3 + [["sh", "-c", "kill -9 $PPID"]] + [["true"]] * 3
    with pytest.raises(PipelineError, match="decode: a worker process died"):
        parallel_map(subprocess.check_output, tasks, 2, "decode", chunksize=1, serial_up_to=0)
    assert parallel_map(subprocess.check_output, [["echo", str(i)] for i in range(5)], 2, "echo", chunksize=2,
                        serial_up_to=0) == [f"{i}\n".encode() for i in range(5)]


def test_two_workers_printing_at_once_never_run_their_lines_together(tmp_path):
    """Unbuffered, as reproduce.sh runs the commands, print writes a line's text and its newline apart:
    two workers printing at once into one file glued lines together (thousands in 0.4 s)."""
    ready = str(tmp_path / "ready")  # each worker says it is up, then waits for the other: they print at once
    spam = ("import os, time\nopen({ready!r} + '{k}', 'w').close()\n"
            "while not (os.path.exists({ready!r} + '0') and os.path.exists({ready!r} + '1')):\n    time.sleep(0.001)\n"
            "start, n = time.time(), 0\n"
            "while time.time() < start + 0.4 or n < 500:\n    print('worker {k} ' + 'x' * 40)\n"
            "    print('worker {k} ' + 'x' * 40 + '\\nworker {k} ' + 'x' * 40)\n    n += 1")  # and two at once
    code = ("from utils.parallel import process_map; "
            f"process_map(exec, [{spam!r}.format(ready={ready!r}, k=k) for k in (0, 1)], 2)")
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, cwd=Path(__file__).resolve().parents[1], timeout=60,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=True)
    lines = out.read_text().splitlines()
    assert set(lines) == {"worker 0 " + "x" * 40, "worker 1 " + "x" * 40}, [ln for ln in lines if len(ln) != 49][:3]


def test_a_worker_s_output_goes_out_in_whole_lines():
    """What reaches the stream in each write: the lines a write completes, never a line's unfinished end
    (kept until its newline, or a flush, which a progress bar does)."""
    class Stream:
        def __init__(self):
            self.writes, self.flushes = [], 0

        def write(self, text):
            self.writes.append(text)

        def flush(self):
            self.flushes += 1

    stream = Stream()
    out = WholeLines(stream)
    assert out.write("a") == 1 and stream.writes == []
    out.write("b\nc\nd")
    assert stream.writes == ["ab\nc\n"]
    print("e", file=out)
    assert stream.writes == ["ab\nc\n", "de\n"]
    out.write("\r 50%")
    out.flush()
    assert stream.writes[-1] == "\r 50%" and stream.flushes == 3


@pytest.mark.parametrize("interrupt_at_start, torch_imported", [(1, False), (2, False), (2, True), (None, False)])
def test_ctrl_c_as_workers_start_or_work_ends_a_command_in_one_line(tmp_path, interrupt_at_start, torch_imported,
                                                                   terminal_sigint):
    """Ctrl-C (SIGINT to the process) right as process_map's k-th spawned worker has started (in a process
    that has torch's threads, or not), or while the workers work (SIGINT to the whole process group, as a
    terminal sends it), in a command wrapped by script_main: one `interrupted` line, no traceback from the
    parent or a worker, every worker stopped (no hang at exit), the command killed by SIGINT (a shell script
    running it stops as well)."""
    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "command.py"
    script.write_text(
        f"import os, signal, sys, time\nsys.path.insert(0, {str(root)!r})\n"
        + ("import torch\n" if torch_imported else "")
        + "import multiprocessing.context as context\n"
        "from utils.errors import script_main\nfrom utils.parallel import process_map\n\n"
        f"AT, started, real = {interrupt_at_start!r}, [0], context.SpawnProcess.start\n\n"
        "def start(self):\n    real(self)\n    started[0] += 1\n"
        "    if started[0] == AT:\n        os.kill(os.getpid(), signal.SIGINT)\n\n"
        "context.SpawnProcess.start = start\n\n"
        "@script_main\ndef main():\n    print('starting', flush=True)\n"
        "    process_map(time.sleep, [30, 30, 30], 3)\n\n"
        "if __name__ == '__main__':\n    main()\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=terminal_sigint)
    try:
        assert proc.stdout.readline() == "starting\n"
        if interrupt_at_start is None:  # once the three workers are up and at their tasks
            deadline = time.time() + 30
            while len(spawned_children(proc.pid)) < 3:
                assert time.time() < deadline, "the workers never started"
                time.sleep(0.05)
            started(spawned_children(proc.pid))
            time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == -signal.SIGINT, (proc.returncode, err)
    assert "Traceback" not in err and err.count("interrupted (Ctrl-C)") == 1, err

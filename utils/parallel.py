"""Process pools that stop cleanly on Ctrl-C and when a worker dies: `parallel_map`/`parallel_imap` for
many small tasks, `process_map` for a few long ones (one process each, a dead one is a failed task)."""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterator, Sequence

from utils.errors import PipelineError


def _ignore_sigint(initializer: Callable | None, initargs: tuple, parent: int) -> None:
    """Pool workers leave Ctrl-C to the parent, which stops them. They are forked with SIGINT blocked
    (see `parallel_imap`), so none can be hit before this line; and they end with their parent."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _exit_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def parallel_imap(fn: Callable, tasks: Sequence, workers: int, desc: str, chunksize: int = 8,
                  initializer: Callable | None = None, initargs: tuple = (), serial_up_to: int = 50) -> Iterator:
    """`fn(t)` for each task, yielded in order as they finish, with a progress bar, over `workers`
    processes when it pays (more than `serial_up_to` tasks: starting a pool costs about a second).

    A worker that dies (kill -9, out of memory) is an error naming the stage, not a wait forever (what
    multiprocessing.Pool.imap does for the lost task). Ctrl-C stops promptly: the workers ignore SIGINT,
    the parent stops them and re-raises KeyboardInterrupt (temporary files are removed by the writers
    on the way out); a killed parent's workers end too."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    bar = dict(total=len(tasks), desc=desc, unit="rec", file=sys.stdout, mininterval=1.0)
    if workers <= 1 or len(tasks) <= serial_up_to:
        if initializer is not None:
            initializer(*initargs)
        yield from (fn(t) for t in tqdm(tasks, **bar))
        return
    import signal

    pool, finished = None, False
    try:
        # SIGINT is blocked while the workers are forked (at the first task): a Ctrl-C in that window once
        # killed a worker before it could ignore the signal while the parent missed it. Blocked, the
        # signal waits and is raised here, in the parent, as soon as the workers exist.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_ignore_sigint,
                                       initargs=(initializer, initargs, os.getpid()))
            results = pool.map(fn, tasks, chunksize=chunksize)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        yield from tqdm(results, **bar)
        finished = True
    except BrokenProcessPool:
        raise PipelineError(f"{desc}: a worker process died (killed, or out of memory?); nothing of this stage "
                            f"was kept: run the command again (fewer --num-workers use less memory)") from None
    finally:
        if pool is not None:
            if not finished:  # interrupted: stop the workers now rather than after their queued tasks
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)


def parallel_map(fn: Callable, tasks: Sequence, workers: int, desc: str, chunksize: int = 8,
                 initializer: Callable | None = None, initargs: tuple = (), serial_up_to: int = 50) -> list:
    """`[fn(t) for t in tasks]` through `parallel_imap`."""
    return list(parallel_imap(fn, tasks, workers, desc, chunksize, initializer, initargs, serial_up_to))


def _exit_with_parent(parent: int) -> None:
    """In a worker: a daemon thread that ends the process once its parent is gone (killed with -9 or by
    SIGTERM, which run no clean-up), so a killed study leaves no worker training on for hours."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def describe_failure(e: BaseException) -> str:
    """A failed task in one line: a PipelineError's message, any other error with its type."""
    return str(e) if isinstance(e, PipelineError) else f"{type(e).__name__}: {e}"


class WholeLines:
    """A worker's standard output: text goes out in whole lines, those a write completes in one write, so
    that two workers' lines never run into each other. (Unbuffered, as reproduce.sh runs the commands,
    print writes a line's text and its newline apart; line buffering alone would send out the unfinished
    end of a multi-line text.) An unfinished line waits for its newline or a flush (progress bars flush);
    stderr is left as it is, so that a dying worker's last words are never held back."""

    def __init__(self, stream):
        self._stream, self._pending = stream, ""

    def write(self, text: str) -> int:
        whole = self._pending + text
        cut = whole.rfind("\n") + 1
        if cut:
            self._stream.write(whole[:cut])
            self._stream.flush()
        self._pending = whole[cut:]
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _process_worker(conn, parent: int, slot: int, initializer: Callable | None, initargs: tuple) -> None:
    """One worker of `process_map`: tasks in, (ok, result or error) out, one at a time, until told to stop."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    _exit_with_parent(parent)
    if sys.stdout is not None:
        sys.stdout = WholeLines(sys.stdout)
    if initializer is not None:
        initializer(slot, *initargs)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, fn, task = message
        try:
            outcome = (index, True, fn(task))
        except BaseException as e:  # noqa: BLE001 -- reported to the parent, which decides
            outcome = (index, False, describe_failure(e))
        conn.send(outcome)


class TaskOutcome(tuple):
    """(ok, value): the result of a task of `process_map`, or why it failed (a message)."""

    def __new__(cls, ok: bool, value):
        return super().__new__(cls, (ok, value))

    @property
    def ok(self) -> bool:
        return self[0]

    @property
    def value(self):
        return self[1]


def process_map(fn: Callable, tasks: Sequence, workers: int, initializer: Callable | None = None,
                initargs: tuple = (), start_method: str = "spawn") -> list[TaskOutcome]:
    """`fn(task)` for each task in `workers` processes, one task per process at a time; outcomes in task
    order, each a TaskOutcome: (True, result) or (False, why it failed).

    Unlike multiprocessing.Pool, whose map() waits forever for a task whose worker died, each worker
    holds one known task: a worker that dies (kill -9, out of memory) fails that task alone, said as
    such, a new worker takes its place and the other tasks go on. An exception in a task fails that
    task only. The workers end with the parent, however it ends: Ctrl-C (they ignore SIGINT; the
    parent terminates them) or a kill (each watches its parent). `initializer(slot, *initargs)` runs in
    each worker once, `slot` numbering the workers (e.g. one GPU each)."""
    import multiprocessing as mp
    import signal
    import threading
    from multiprocessing.connection import wait

    ctx = mp.get_context(start_method)
    main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
    if start_method != "fork":  # started now, not by the first worker's start(), which unblocks SIGINT for it
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()
    outcomes: list[TaskOutcome | None] = [None] * len(tasks)
    pending = list(range(len(tasks)))
    slots = min(workers, len(tasks))
    busy: dict = {}  # process -> (its connection, the index of the task it holds)
    idle: list = []  # (process, connection) waiting for a task
    everyone: list = []

    def start() -> tuple:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_process_worker, args=(theirs, os.getpid(), len(everyone), initializer, initargs),
                           name=f"worker-{len(everyone)}")
        # SIGINT blocked while it starts (the mask outlives exec): a Ctrl-C then waits for the parent instead
        # of killing a worker mid-import with a traceback of its own; the worker then ignores it. The mask
        # holds for this thread only (torch's threads may take the signal), so a Ctrl-C meanwhile is only
        # noted, and raised once the worker is started and recorded (a worker started but not recorded
        # would never be stopped: the command would hang at exit).
        noted: list = []
        previous = signal.signal(signal.SIGINT, lambda *_: noted.append(True)) if main_thread else None
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc.start()
            everyone.append((proc, mine))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if main_thread:
                signal.signal(signal.SIGINT, previous)
        theirs.close()
        if noted and callable(previous):
            previous(signal.SIGINT, None)
        return proc, mine

    try:
        while True:
            while pending and len(busy) < slots:
                proc, conn = idle.pop() if idle else start()
                index = pending.pop(0)
                try:
                    conn.send((index, fn, tasks[index]))
                    busy[proc] = (conn, index)
                except (BrokenPipeError, OSError) as e:  # it died before taking the task: the task fails
                    outcomes[index] = TaskOutcome(False, f"its worker process could not take it ({e})")
            if not busy:
                break
            ready = set(wait([conn for conn, _ in busy.values()] + [proc.sentinel for proc in busy]))
            for proc, (conn, index) in list(busy.items()):
                done, result = _reply(proc, conn, ready)
                if not done:
                    continue
                del busy[proc]
                if result is not None:
                    outcomes[index] = result
                    idle.append((proc, conn))
                else:  # the worker died holding the job it had: that job fails, a new worker goes on
                    outcomes[index] = _death(proc)
    finally:
        _stop_workers(everyone, interrupted=bool(busy))
    return list(outcomes)


def _reply(proc, conn, ready: set) -> tuple[bool, TaskOutcome | None]:
    """(whether a busy worker is done with its task, the task's outcome: None when the worker died
    holding it)."""
    if conn not in ready and proc.sentinel not in ready:
        return False, None
    result = None
    try:
        if conn.poll():
            _, ok, value = conn.recv()
            result = TaskOutcome(ok, value)
    except (EOFError, OSError):
        pass
    return result is not None or proc.sentinel in ready, result


def _death(proc) -> TaskOutcome:
    """The outcome of a task whose worker died holding it, saying how it died."""
    proc.join()
    code = proc.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return TaskOutcome(False, f"its worker process died ({how})")


def _stop_workers(everyone: list, interrupted: bool) -> None:
    """Tell idle workers to end and wait for them; when `interrupted` (Ctrl-C, an error in the parent,
    tasks still running) stop every worker now."""
    for proc, conn in everyone:
        if proc.is_alive() and not interrupted:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
    for proc, conn in everyone:
        proc.join(timeout=0 if interrupted else 5)
        if proc.is_alive():  # interrupted, or a worker that did not end: stop it now
            proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        conn.close()

"""Files and processes: atomic writes, CSV/JSON/NPY/PNG outputs, fingerprints, the one freshness rule
("are these outputs current for their inputs and settings?"), an advisory lock for folders one process
writes at a time, command-line value types and a Ctrl-C-safe process pool."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, NoReturn, Sequence

import numpy as np
import pandas as pd

from utils.errors import PipelineError

__all__ = ["Bounded", "bounded_int", "bounded_float", "BoundedList", "MAX_WORKERS", "folder_path",
           "flag_error", "flag_given", "describe_flag", "check_order", "refuse_together",
           "positive_int", "nonnegative_int", "positive_float", "SEED_LIMIT", "seed_int", "atomic_write",
           "check_writable", "current_umask", "write_csv", "write_text", "write_json", "write_npy", "save_figure",
           "fingerprint", "file_fingerprint", "exclusive_lock", "parallel_imap", "parallel_map", "TaskOutcome",
           "process_map", "output_names",
           "SAMPLE_BLOCKS", "SAMPLE_BLOCK_BYTES", "file_sha", "sampled_sha", "describe_file", "file_mismatch",
           "write_manifest", "read_manifest", "manifest_mismatch", "outputs_current", "remove_stale_temporaries"]


# ---------------------------------------------------------------------------------------------
# Command-line value types: a bad count or size is an argparse error (exit 2, one line naming the
# flag), not a traceback, and every number has bounds a user would never need to exceed
# ---------------------------------------------------------------------------------------------
class Bounded:
    """argparse type: a finite int or float within `lo..hi` (`lo` itself excluded when `above`).

    Its `__name__` is the range, so a help text's `%(type)s` prints it; the error names the value and
    the range ("-1 is outside 0..4294967295"), argparse adds the flag."""

    def __init__(self, kind: type, lo: float, hi: float, above: bool = False):
        if kind not in (int, float) or not lo < hi:
            raise ValueError(f"Bounded({kind.__name__}, {lo}, {hi}): need int or float and lo < hi")
        self.kind, self.lo, self.hi, self.above = kind, lo, hi, above
        self.__name__ = self.bounds

    @property
    def bounds(self) -> str:
        """`1..10000`, or `(0, 10]` when `lo` is excluded."""
        lo, hi = (f"{v:g}" if isinstance(v, float) else str(v) for v in (self.lo, self.hi))
        return f"({lo}, {hi}]" if self.above else f"{lo}..{hi}"

    def __contains__(self, value: float) -> bool:
        return (self.lo < value if self.above else self.lo <= value) and value <= self.hi

    def __call__(self, text: str):
        import argparse

        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if self.kind is int else 'a number'}") from None
        if self.kind is float and not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value not in self:
            raise argparse.ArgumentTypeError(f"{text} is outside {self.bounds}")
        return value

    def __repr__(self) -> str:
        return f"Bounded({self.kind.__name__}, {self.bounds})"


def bounded_int(lo: int, hi: int) -> Bounded:
    """argparse type: an integer from `lo` to `hi`, both included."""
    return Bounded(int, lo, hi)


def bounded_float(lo: float, hi: float, above: bool = False) -> Bounded:
    """argparse type: a finite number from `lo` (excluded with `above`) to `hi`."""
    return Bounded(float, float(lo), float(hi), above)


class BoundedList:
    """argparse type: a comma list of distinct integers within `lo..hi`, returned sorted (`--folds 3,7`);
    an item given twice is an error, not silently one run."""

    def __init__(self, lo: int, hi: int, item: str):
        self.item_type, self.item = bounded_int(lo, hi), item
        self.__name__ = f"a comma list of {item}s {self.item_type.bounds}"

    def __call__(self, text: str) -> list[int]:
        import argparse

        items = [s.strip() for s in str(text).split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of {self.item}s")
        try:
            values = [self.item_type(s) for s in items]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{self.item} {e}") from None
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise argparse.ArgumentTypeError(f"{self.item} {twice[0]} is given twice in {text!r}")
        return sorted(values)


# processes or threads a command may start: more than the cores only queue, and 10**12 is a typo
MAX_WORKERS = max(256, 2 * (os.cpu_count() or 1))
SEED_LIMIT = 2 ** 32  # numpy's RandomState takes seeds 0 <= seed < 2**32
seed_int = bounded_int(0, SEED_LIMIT - 1)


def folder_path(text: str) -> Path:
    """argparse type of a folder flag (`--data-dir`, `--out`, `--results-dir`): the folder need not exist
    yet, but a file there, or a file where one of its parents should be, is an error naming it (rather
    than a "does not exist" or a FileExistsError later)."""
    import argparse

    path = Path(text)
    for at in (path, *path.parents):
        try:
            if not at.exists():
                continue
            if not at.is_dir():
                raise argparse.ArgumentTypeError(f"{text} is not a folder" if at == path else
                                                 f"{text} cannot be a folder: {at} is a file")
        except OSError as e:  # e.g. a parent without search permission
            raise argparse.ArgumentTypeError(f"{text}: cannot look at {at} ({e.strerror or e})") from None
        break
    return path


def _checked(kind: type, test: Callable, wanted: str) -> Callable[[str], float]:
    def parse(text: str):
        import argparse

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if not ((kind is int or np.isfinite(value)) and test(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    parse.__name__ = wanted  # argparse names the type in its message
    return parse


positive_int = _checked(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _checked(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _checked(float, lambda v: v > 0, "a positive number")


# ---------------------------------------------------------------------------------------------
# Flags that contradict each other: one argparse error (exit 2) naming both
# ---------------------------------------------------------------------------------------------
def _action(p, flag: str):
    for action in p._actions:
        if flag in action.option_strings:
            return action
    raise KeyError(f"the parser has no flag {flag}")


def flag_error(p, flag: str, message: str) -> NoReturn:
    """Exit 2 the way argparse does for a bad value: `error: argument --flag: message`."""
    p.error(f"argument {flag}: {message}")


def flag_given(p, argv: Sequence[str] | None, flag: str) -> bool:
    """Whether `flag` (or an alias of it) is on the command line, rather than a default or a preset's."""
    names = _action(p, flag).option_strings
    argv = sys.argv[1:] if argv is None else argv
    return any(a in names or a.split("=", 1)[0] in names for a in argv)


def describe_flag(p, args, argv: Sequence[str] | None, flag: str) -> str:
    """`--seconds 5`, `--seconds 5 (from --preset demo)` or `--seconds 5 (the default)`."""
    value = getattr(args, _action(p, flag).dest)
    if isinstance(value, float):
        value = f"{value:g}"
    if flag_given(p, argv, flag):
        return f"{flag} {value}"
    preset = getattr(args, "preset", None)
    return f"{flag} {value} ({f'from --preset {preset}' if preset else 'the default'})"


def check_order(p, args, argv: Sequence[str] | None, low: str, high: str) -> None:
    """Refuse `low` above `high` (`--min-seconds 10 --max-seconds 5`, or one flag crossing the other's
    default or preset value), naming the flag the user gave."""
    lo, hi = (getattr(args, _action(p, f).dest) for f in (low, high))
    if lo is not None and hi is not None and lo > hi:
        blamed, other = (low, high) if flag_given(p, argv, low) else (high, low)
        flag_error(p, blamed, f"{describe_flag(p, args, argv, low)} is above {describe_flag(p, args, argv, high)}")


def refuse_together(p, args, flag: str, others: Sequence[str]) -> None:
    """Refuse `flag` with any of `others` (each given: not None, not False), in argparse's wording."""
    if getattr(args, _action(p, flag).dest) in (None, False):
        return
    for other in others:
        if getattr(args, _action(p, other).dest) not in (None, False):
            flag_error(p, flag, f"not allowed with argument {other}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    A crash leaves either the old file or the new one, never half of either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give outputs the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_writable(folder: Path, hint: str = "") -> None:
    """Fail before any work when outputs could not be written to `folder` (read-only mount, no
    permission): creating and removing a probe file is the only test that also holds for root."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PipelineError(f"cannot write to {folder} ({e.strerror or e}); the folder is read-only"
                         f"{f'; {hint}' if hint else ''}") from None


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(df: pd.DataFrame, path: Path, **kwargs) -> Path:
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, **kwargs))


def write_text(text: str, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(obj, path: Path) -> Path:
    return write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_npy(arr: np.ndarray, path: Path) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, arr)

    return atomic_write(path, write)


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def fingerprint(parts: Iterable) -> str:
    """Stable short hash of anything JSON-serialisable, for 'are these outputs still current?'."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=_json_default).encode())
    return h.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """Path, size and mtime_ns of an input file; a missing one (a dangling link, a header's signal file
    not there yet) has its own value, so its appearing later changes the fingerprint too."""
    try:
        st = Path(path).stat()
    except OSError:
        return fingerprint([str(path), None])
    return fingerprint([str(path), st.st_size, st.st_mtime_ns])


# ---------------------------------------------------------------------------------------------
# One writer at a time: an advisory lock on a file beside what is written
# ---------------------------------------------------------------------------------------------
@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[Path]:
    """Hold an exclusive advisory lock (flock) on the lock file `path` (e.g. `<folder>/.lock`, created
    if needed) for the `with` block, or raise PipelineError at once when another process holds it:
    "`what` is being written by another process (pid N); …". Two writers of one folder would otherwise
    delete or overwrite each other's temporary files and leave a mix of both runs' outputs.

    The lock file holds the holder's pid (for that message) and is removed when the block ends, Ctrl-C
    included. The kernel releases the lock when the holder dies (kill -9 included), so a lock file a
    killed run leaves behind never blocks anyone. A lock taken on a file that was removed meanwhile is
    retried on the new one, so removing it is safe. Processes forked inside the block (a worker pool)
    share the lock. Readers do not lock."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise PipelineError(f"cannot create the lock file {path} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "pid unknown"
            raise PipelineError(f"{what} is being written by another process ({who}); wait for it to finish "
                                f"or stop it, then run again (lock file {path})") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed this file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # while still holding the lock (see the retry above)
        finally:
            os.close(fd)


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


def _process_worker(conn, parent: int, slot: int, initializer: Callable | None, initargs: tuple) -> None:
    """One worker of `process_map`: tasks in, (ok, result or error) out, one at a time, until told to stop."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    _exit_with_parent(parent)
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
            outcome = (index, False, str(e) if isinstance(e, PipelineError) else f"{type(e).__name__}: {e}")
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
    from multiprocessing.connection import wait

    ctx = mp.get_context(start_method)
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
        proc.start()
        theirs.close()
        everyone.append((proc, mine))
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
                if conn not in ready and proc.sentinel not in ready:
                    continue
                result = None
                try:
                    if conn.poll():
                        _, ok, value = conn.recv()
                        result = TaskOutcome(ok, value)
                except (EOFError, OSError):
                    pass
                if result is None and proc.sentinel not in ready:
                    continue
                del busy[proc]
                if result is not None:
                    outcomes[index] = result
                    idle.append((proc, conn))
                    continue
                proc.join()  # the worker died holding the job it had: that job fails, a new worker goes on
                code = proc.exitcode
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                outcomes[index] = TaskOutcome(False, f"its worker process died ({how})")
    finally:
        for proc, conn in everyone:
            if proc.is_alive() and not busy:
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for proc, conn in everyone:
            proc.join(timeout=0 if busy else 5)
            if proc.is_alive():  # interrupted (Ctrl-C, an error in the parent): stop it now
                proc.terminate()
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            conn.close()
    return list(outcomes)


def output_names(paths: Sequence[Path]) -> list[str]:
    """A distinct file-name stem per user-given record: its own stem, or, where stems of different files
    collide (d1/A0001, d2/A0001), the stem prefixed with as many parent folders as it takes; the same
    file given twice gets _1, _2. No figure overwrites another."""
    resolved = [Path(p).resolve() for p in paths]
    names = []
    for path in resolved:
        others = {q for q in resolved if q.stem == path.stem and q != path}
        depth = 0
        while others and depth < len(path.parent.parts):
            depth += 1
            mine = path.parent.parts[-depth:]
            others = {q for q in others if q.parent.parts[-depth:] == mine}
        names.append("_".join([*path.parent.parts[len(path.parent.parts) - depth:], path.stem]).lstrip("/_"))
    return [n if names.count(n) == 1 else f"{n}_{names[:i].count(n) + 1}" for i, n in enumerate(names)]



# ---------------------------------------------------------------------------------------------
# The one freshness rule: a manifest, written last, holds a fingerprint of the inputs and settings and
# a description of each output file; outputs are current only when both still match.
# ---------------------------------------------------------------------------------------------
_HASHED_UP_TO = 64 << 20  # outputs up to this size are hashed in full at every check (< 40 ms)
SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 64, 64 << 10  # larger ones: 4 MiB read at every check (see describe_file)
_FULL_SHA: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> sha256: a process hashes a big file once


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def sampled_sha(path: Path, size: int) -> str:
    """sha256 of SAMPLE_BLOCKS blocks at fixed offsets spread evenly over the file, the first and the last
    included: what a changed file of the same size (another cache, a zeroed region) is caught by for the
    price of reading 4 MiB, whatever the file's size."""
    h = hashlib.sha256()
    step = max(size - SAMPLE_BLOCK_BYTES, 0) / max(SAMPLE_BLOCKS - 1, 1)
    with open(path, "rb") as f:
        for offset in dict.fromkeys(int(i * step) for i in range(SAMPLE_BLOCKS)):
            h.update(os.pread(f.fileno(), SAMPLE_BLOCK_BYTES, offset))
    return h.hexdigest()[:16]


def _full_sha(path: Path, st: os.stat_result) -> str:
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _FULL_SHA:
        _FULL_SHA[key] = file_sha(path)
    return _FULL_SHA[key]


def describe_file(path: Path) -> dict:
    """What a manifest records of an output: its size and sha256; for files over 64 MiB (the signal
    cache: 1.3 GB for CPSC2018, 96 GB for MIMIC-IV-ECG) also its mtime_ns and a sampled hash, so that
    checking it (`file_mismatch`, at every stage's start) does not read the whole file again."""
    st = Path(path).stat()
    if st.st_size <= _HASHED_UP_TO:
        return {"size": st.st_size, "sha256": file_sha(path)}
    return {"size": st.st_size, "sha256": _full_sha(path, st), "mtime_ns": st.st_mtime_ns,
            "sampled_sha256": sampled_sha(path, st.st_size)}


def file_mismatch(path: Path, described: dict, name: str | None = None, manifest: str = "the manifest"
                  ) -> str | None:
    """Why the file at `path` is not the one `describe_file` described (None when it is).

    Small files are hashed in full. A large one must have the same size and sampled hash; when its
    mtime_ns is not the recorded one (written to since, or copied without keeping times) it is also
    hashed in full, once per process (memoised by inode, size and mtime). So any change made through a
    write is caught, and an untouched cache costs a 4 MiB read per check. Measured on a 1 GiB file (2-core
    Xeon, SHA-NI): 3 ms per check (19 ms with the file out of the page cache); the full hash 0.9 s (1.1 s
    cold), paid at write time and, after a touch or a copy without times, once per process."""
    name = name or Path(path).name
    try:
        st = Path(path).stat()
    except OSError:
        return f"{name} is missing"
    if st.st_size != described.get("size"):
        return (f"{name} was changed after {manifest} was written (size {st.st_size}, recorded "
                f"{described.get('size')})")
    if "sha256" not in described or (st.st_size > _HASHED_UP_TO and "sampled_sha256" not in described):
        return f"{name} has no sha256 in {manifest} (size only)"
    if st.st_size <= _HASHED_UP_TO:
        same = file_sha(path) == described["sha256"]
    else:
        same = sampled_sha(path, st.st_size) == described["sampled_sha256"] and (
            st.st_mtime_ns == described.get("mtime_ns") or _full_sha(path, st) == described["sha256"])
    return None if same else f"{name} was changed after {manifest} was written"


def write_manifest(path: Path, key: str, outputs: Iterable[Path], **info) -> Path:
    """Mark `outputs` as current for `key`; call it after every output is written (and remove the
    old manifest with `path.unlink()` before replacing any output). Outputs are recorded by their path
    relative to the manifest's folder."""
    files = {os.path.relpath(o, Path(path).parent): describe_file(o) for o in outputs}  # relative: a copied
    return write_json({"fingerprint": key, "files": files, **info}, path)                 # folder stays valid


def read_manifest(path: Path) -> dict | None:
    """The manifest as a dict, or None when it is missing or unreadable."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_mismatch(path: Path) -> str | None:
    """Why the outputs beside a manifest are not the ones it describes (None when they are)."""
    manifest = read_manifest(path)
    if manifest is None:
        return f"{Path(path).name} is missing or unreadable"
    for name, described in manifest.get("files", {}).items():
        why = file_mismatch(Path(path).parent / name, described if isinstance(described, dict) else {}, name,
                            Path(path).name)
        if why is not None:
            return why
    return None


def outputs_current(path: Path, key: str) -> bool:
    """True when the manifest at `path` was written for `key` and its outputs are unchanged."""
    manifest = read_manifest(path)
    return manifest is not None and manifest.get("fingerprint") == key and manifest_mismatch(path) is None


def remove_stale_temporaries(folder: Path, names: Iterable[str]) -> None:
    """Delete the `.{name}.*.tmp` files a killed `atomic_write` of these outputs left behind."""
    for name in names:
        for stale in Path(folder).glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)

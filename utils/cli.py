"""Command-line value types and flag checks: a bad count, size or folder is an argparse error (exit 2,
one line naming the flag), never a traceback, and every number has bounds a user would never need
to exceed."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import numpy as np



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


def usable_cpus() -> int:
    """The CPUs this process may run on (taskset, a cgroup, SLURM's --cpus-per-task), not the host's: what
    torch's DataLoader weighs its workers against, and what worker defaults are sized to."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


# processes or threads a command may start: more than the cores only queue, and 10**12 is a typo
MAX_WORKERS = max(256, 2 * (os.cpu_count() or 1))
SEED_LIMIT = 2 ** 32  # numpy's RandomState takes seeds 0 <= seed < 2**32
seed_int = bounded_int(0, SEED_LIMIT - 1)
seed_list = BoundedList(0, SEED_LIMIT - 1, "seed")  # --seeds: distinct seeds, each as --seed takes it


def folder_path(text: str) -> Path:
    """argparse type of a folder flag (`--data-dir`, `--out`, `--results-dir`): the folder need not exist
    yet, but a file there, or a file where one of its parents should be, is an error naming it (rather
    than a "does not exist" or a FileExistsError later)."""
    import argparse

    if not text.strip():  # Path("") is the working folder: outputs would land among the user's files
        raise argparse.ArgumentTypeError("an empty path is no folder (give . for the working folder)")
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


def file_path(text: str) -> Path:
    """argparse type of an output file flag (`--out FILE`): a file where one of its folders should be is an
    error naming it (rather than "cannot write" or a NotADirectoryError later)."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is no file")
    try:
        folder_path(str(Path(text).parent))
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{text}: {e}") from None
    return Path(text)


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

"""The exceptions the library raises. Library code never exits: a script's `main()` is wrapped by
`script_main`, which turns a `PipelineError` into the one-line `error: …` exit a user reads."""
from __future__ import annotations

import functools
import sys
from typing import Callable

__all__ = ["PipelineError", "MissingInputError", "RecordError", "Pending", "script_main"]


class PipelineError(Exception):
    """An input, file or setting a stage cannot work with; the message says what is wrong and the fix."""


class MissingInputError(PipelineError):
    """An input a stage needs does not exist yet; the message names the stage that writes it."""


class RecordError(PipelineError, ValueError):
    """A record that cannot be used; the message names the file and what is wrong."""


class Pending(Exception):
    """Work handed to a scheduler that has not finished (`--no-wait`): the message says how to gather it.
    Not an error: the command ends there with exit 0."""


def script_main(main: Callable) -> Callable:
    """Decorator for a script's `main()`: a PipelineError becomes `SystemExit("error: …")` (exit 1); Pending
    ends the command with its message (exit 0). Ctrl-C in a command run as a script ends it with one line
    instead of a traceback, killed by SIGINT as a shell expects (status 130: a script running it stops
    too); called in-process (a test, another command) it raises KeyboardInterrupt to the caller."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as e:
            raise SystemExit(f"error: {e}") from None
        except Pending as e:
            print(e, flush=True)
            return None
        except KeyboardInterrupt as e:
            if main.__module__ == "__main__":
                _say_interrupted(str(e) if e.args else None)
            raise

    return run


def _say_interrupted(line: str | None = None) -> None:
    """One line instead of the traceback (`line`: what the interrupted code had to say instead, such as
    the jobs it leaves queued). The KeyboardInterrupt still ends the process: Python finishes as usual
    (atexit, finalizers) and then dies of SIGINT, as a shell expects."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    print(line or "interrupted (Ctrl-C): no output is left half written; run the same command again to finish",
          file=sys.stderr, flush=True)
    previous = sys.excepthook

    def quiet(kind, value, traceback):
        if not issubclass(kind, KeyboardInterrupt):
            previous(kind, value, traceback)

    sys.excepthook = quiet

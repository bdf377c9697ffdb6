"""The exceptions the library raises. Library code never exits: a script's `main()` is wrapped by
`script_main`, which turns a `PipelineError` into the one-line `error: …` exit a user reads."""
from __future__ import annotations

import functools
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
    ends the command with its message (exit 0)."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as e:
            raise SystemExit(f"error: {e}") from None
        except Pending as e:
            print(e, flush=True)
            return None

    return run

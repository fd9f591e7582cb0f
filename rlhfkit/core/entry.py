"""The one error path of every entry point: the ``rlhfkit`` command, the recipes, ``accelerate launch recipes/...``.

An error a user can fix (:class:`~rlhfkit.core.errors.RlhfkitError`) prints one ``error: <problem>`` line per problem
on stderr and exits with code 2, without a traceback; ``--debug`` shows the traceback instead. An argparse error (a bad
choice, a missing argument) is one ``error:`` line naming the valid choices, also exit 2. Any other exception is a
bug and keeps its traceback. Under ``torchrun`` / ``accelerate launch`` only the main process prints the lines (every
process finds the same problems).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from rlhfkit.core.errors import ConfigError, RlhfkitError

USER_ERROR = 2  # the exit code of an error a user can fix


def is_main_process() -> bool:
    """Whether this is the main process of a ``torchrun`` / ``accelerate launch`` run (or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def _stderr():
    """A rich console on stderr that never wraps a line (an ``error:`` line stays one line, whatever its length)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def print_error(error: RlhfkitError) -> None:
    """``error: <problem>`` on stderr, one line per problem (on the main process only)."""
    if is_main_process():
        for problem in error.problems:
            _stderr().print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)


def run_guarded(fn: Callable[[], Any], debug: bool = False) -> int:
    """Call ``fn`` and return its exit code (an ``int`` it returns; anything else: 0); a user error prints its lines
    and returns 2 (``debug``: re-raised with its traceback); Ctrl-C returns 130."""
    try:
        result = fn()
        return result if isinstance(result, int) and not isinstance(result, bool) else 0
    except RlhfkitError as e:
        if debug:
            raise
        print_error(e)
        return USER_ERROR
    except KeyboardInterrupt:
        _stderr().print("interrupted", markup=False, highlight=False)
        return 130


def pop_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether it was there (the recipes' flag for the traceback)."""
    return [a for a in argv if a != "--debug"], "--debug" in argv


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (a :class:`ConfigError`, exit 2 through :func:`run_guarded`)
    instead of the usage text; its subparsers are of the same class."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}; see {self.prog} --help")

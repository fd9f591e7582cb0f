"""User-facing errors.

Every failure a user can cause (a bad config field, a malformed data row, a missing column, an
out-of-range hyperparameter) raises a subclass of :class:`RlhfkitError` whose message is one line
that names the field or row, the bad value, and the fix. Validation collects every problem it finds
and raises one error carrying them all (``problems``, one line each). The CLI and the recipes print
``error: <problem>`` per line and exit with code 2, without a traceback (``--debug`` shows it).
"""

from __future__ import annotations


class RlhfkitError(Exception):
    """Base class of the errors a user can fix.

    Args:
        *problems: one actionable line per problem (``str(error)`` joins them with newlines).
    """

    def __init__(self, *problems: str):
        lines = [line for p in problems for line in str(p).splitlines() if line.strip()]
        super().__init__("\n".join(lines))
        self.problems: list[str] = lines or [self.__class__.__name__]

    def prefixed(self, prefix: str) -> RlhfkitError:
        """The same error with ``prefix`` (e.g. ``"sft: "``) in front of every problem."""
        return self.__class__(*(f"{prefix}{p}" for p in self.problems))


class ConfigError(RlhfkitError, ValueError):
    """A config field, preset name, hyperparameter, model folder or output path is invalid."""


class DataError(RlhfkitError, ValueError):
    """A data file, column or row is invalid."""


def raise_problems(problems: list[str], error: type[RlhfkitError] = ConfigError) -> None:
    """Raise one ``error`` listing ``problems`` (one line each); do nothing when there are none."""
    if problems:
        raise error(*problems)

"""User-facing errors.

Every failure a user can cause (a bad config field, a malformed data row, a missing column, an
out-of-range hyperparameter) raises a subclass of :class:`RlhfkitError` whose message is one line
that names the field or row, the bad value, and the fix. The CLI prints that line and exits with
code 2, without a traceback (``--debug`` shows it).
"""


class RlhfkitError(Exception):
    """Base class of the errors a user can fix; the message is one actionable line."""


class ConfigError(RlhfkitError, ValueError):
    """A config field, preset name or hyperparameter is invalid."""


class DataError(RlhfkitError, ValueError):
    """A data file, column or row is invalid."""

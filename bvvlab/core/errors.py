"""The error type of bvvlab (imports nothing from bvvlab).

A `BVVError` is a user's mistake or an ordinary fault (bad input, a damaged file, a full disk):
the `bvvlab` command prints it as one line naming the problem and the fix, with exit code 2,
and never a traceback. It subclasses ValueError so that library callers who catch ValueError
(as bad-input errors always were) keep working.
"""

from __future__ import annotations


class BVVError(ValueError):
    """A user error with a one-line message that names the problem and the fix."""


CLIError = BVVError  # the name the command line used before the error moved here


class OutputError(BVVError, OSError):
    """An output could not be written (disk full, read-only folder, not a folder): nothing was left
    half-written. Also an OSError, so code that treats a failed cache write as optional still does."""


class Interrupted(BVVError):
    """A run stopped on SIGINT/SIGTERM after saving; `exit_code` is 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class CorpusError(BVVError):
    """Bad corpus input (unknown name, corrupt or non-UTF-8 file, empty source): one line with the fix."""

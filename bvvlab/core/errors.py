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


def check_text(value: object, what: str) -> str:
    """`value` if it is text a tokenizer can take, else one BVVError line naming `what`: not a
    string, or a string with a lone surrogate (U+D800..U+DFFF: JSON's "\\ud800" escapes, a widget's
    paste), which is not Unicode text and which the tokenizers library refuses with a TypeError."""
    if not isinstance(value, str):
        raise BVVError(f"{what}={value!r}: expected text (a string)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BVVError(f"{what} holds a lone surrogate U+{ord(value[exc.start]):04X} at character {exc.start}, which is "
                       "not a Unicode character: remove it (or write the character it was meant to be)") from None
    return value

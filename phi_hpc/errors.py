"""The one error type users see.

Anything a person can fix (a bad option, a malformed input line, a missing file) is raised as
:class:`PhiError` with *where* and *how to fix it*; the CLI prints it as a single line and exits with
``exit_code``. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

USAGE = 2  # bad option, bad config, bad input under --strict
FAILURE = 1  # the work itself failed


class PhiError(Exception):
    """A user-facing failure: ``message`` says what and where, ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = FAILURE):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(PhiError):
    """Bad options, config keys or inputs: exit code 2, like click's own usage errors."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, exit_code=USAGE)

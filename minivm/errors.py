"""The one error type the user sees: the CLI prints it as a single line and exits non-zero."""

from __future__ import annotations


class MinivmError(Exception):
    """A failure the user can act on.

    ``what`` says what went wrong and where; ``hint`` says what to do about it.
    The CLI prints ``error: WHAT (HINT)`` on one line, with no traceback.
    """

    def __init__(self, what: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(what)
        self.what = what
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        text = " ".join(self.what.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


def one_line(e: BaseException) -> tuple[str, int]:
    """The message and exit code the CLI shows an error with (MinivmError, OSError, Ctrl-C)."""
    if isinstance(e, MinivmError):
        return str(e), e.exit_code
    if isinstance(e, OSError):  # a file we could not read or write: say which, and why
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}", 1
    return "interrupted; nothing was left half-written", 130

"""What every command shares: --quiet/--json options, one-line errors, JSON output."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, Literal, TypeVar

import typer

from minivm.errors import MinivmError, one_line
from minivm.ui import Reporter

# Help texts are Markdown: a docstring's paragraphs are rewrapped to the terminal (its own line
# breaks do not survive) and brackets are text, not rich markup.
HELP_MARKUP: Literal["markdown"] = "markdown"
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
AllowUnsafeOptions = Annotated[bool, typer.Option(
    "--allow-unsafe-options",
    help="Pass the appliance's QEMU options even when they are off minivm's allow-list "
         "(they could then read or write host files): only for an appliance you trust.")]
PlatformOption = Annotated[str | None, typer.Option(
    "--platform", help="Docker's platform: linux/amd64 or linux/arm64, or both "
                       "comma-separated. Default: the host's.", show_default=False)]

F = TypeVar("F", bound=Callable[..., Any])


def debugging() -> bool:
    """Whether --debug (or MINIVM_DEBUG=1) asked for every command line and full tracebacks."""
    return os.environ.get("MINIVM_DEBUG", "") not in ("", "0")


def enable_debug() -> None:
    """--debug: log every program minivm starts (its argv) and keep tracebacks on errors."""
    os.environ["MINIVM_DEBUG"] = "1"  # also for the minivm processes this one starts
    log = logging.getLogger("minivm")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("debug: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)


def reporter(*, quiet: bool, json_output: bool = False) -> Reporter:
    """The reporter for a command (--json keeps stdout clean; progress stays on stderr)."""
    return Reporter(quiet=quiet)


def emit_json(data: dict[str, Any]) -> None:
    """Print one JSON object on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


def user_errors(func: F) -> F:
    """Turn MinivmError, Ctrl-C and SIGTERM into one line on stderr and a non-zero exit."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        if debugging():
            enable_debug()
        try:
            return func(*args, **kwargs)
        except (MinivmError, OSError, KeyboardInterrupt) as e:
            if debugging():
                traceback.print_exc()
            raise fail(*one_line(e)) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]

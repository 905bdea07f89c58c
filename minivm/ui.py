"""Progress and messages: an outline of timed stages on stderr, silent with ``--quiet``.

Standard output is kept for machine-readable results (``--json``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


class Reporter:
    """Tells the user what minivm is doing and keeps the seconds spent per stage."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.seconds: dict[str, float] = {}

    @cached_property
    def console(self) -> Console:
        """rich's console on stderr, made on first use (importing rich costs start-up time).

        Lines are never wrapped by minivm (soft wrap): a path stays whole when stderr is a
        file or a pipe, and a terminal wraps long lines itself.
        """
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        """A line for the user (not shown with --quiet)."""
        if not self.quiet:
            self.console.print(message)

    def warn(self, message: str) -> None:
        """A warning: shown even with --quiet."""
        self.console.print(f"[yellow]warning:[/] {message}")

    def log_line(self, line: str) -> None:
        """One line of a streamed log (a docker build step, say)."""
        if not self.quiet and line.strip():
            self.console.print(f"  [dim]{line.rstrip()}[/]", markup=True, soft_wrap=True)

    @contextmanager
    def stage(self, key: str, title: str) -> Iterator[None]:
        """Time a stage; its seconds are kept under ``key`` for --json."""
        start = time.monotonic()
        if not self.quiet:
            self.console.print(f"[bold]→ {title}[/]")
        try:
            yield
        finally:
            self.seconds[key] = round(self.seconds.get(key, 0.0) + time.monotonic() - start, 3)
        if not self.quiet:
            self.console.print(f"  [green]done[/] in {self.seconds[key]:.1f} s")

    @contextmanager
    def bytes(self, title: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """A byte counter (bar when the total is known); yields ``advance(nbytes)``."""
        if self.quiet:
            yield lambda n: None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        columns = [TextColumn(f"  {title}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeElapsedColumn()]
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(title, total=total)
            yield lambda n: progress.advance(task, n)
            done = progress.tasks[0].completed
        self.console.print(f"  {title}: {done / 1e6:.1f} MB")


QUIET = Reporter(quiet=True)

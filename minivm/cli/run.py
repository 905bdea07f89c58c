"""``minivm run``: boot one MiniVM with its console attached (owned by the run/lab work)."""

from __future__ import annotations

from minivm.cli.common import fail, user_errors


@user_errors
def run(name: str) -> None:
    """Boot one MiniVM locally, console attached."""
    raise fail("minivm run is not implemented yet")

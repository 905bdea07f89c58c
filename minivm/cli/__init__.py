"""The ``minivm`` command: a thin typer layer over the library modules.

:func:`main` first offers the command line to :mod:`minivm.cli.fast` (``lab exec`` without
loading typer or the lab reader); everything else goes to the typer app.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    """Console-script entry point."""
    from minivm.cli import fast

    code = fast.main(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from minivm.cli.main import main as full

    full()


def __getattr__(name: str) -> Any:
    if name == "app":  # the typer app, loaded when asked for
        from minivm.cli.main import app

        return app
    raise AttributeError(name)


__all__ = ["app", "main"]

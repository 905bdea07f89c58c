"""The ``minivm`` command: a thin typer layer over the library modules."""

from minivm.cli.main import app, main

__all__ = ["app", "main"]

"""``minivm lab``: several MiniVMs linked by UDP tunnels (owned by the run/lab work)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Boot and control a lab of linked MiniVMs.", no_args_is_help=True)

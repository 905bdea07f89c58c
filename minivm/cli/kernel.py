"""``minivm kernel build``: the shared kernel kit (owned by the kernel-kit work)."""

from __future__ import annotations

import typer

from minivm.cli.common import Json, Quiet, fail, user_errors

app = typer.Typer(help="Build the shared kernel kit (kernel, initramfs, module disk).",
                  no_args_is_help=True)


@app.command("build")
@user_errors
def build(quiet: Quiet = False, json_output: Json = False) -> None:
    """Build the kernel kit once; every appliance shares it."""
    raise fail("minivm kernel build is not implemented yet")

"""Wires the command modules into one typer app."""

from __future__ import annotations

from typing import Annotated

import typer
import typer.main
from typer._click import Command, Context
from typer.core import TyperOption

from minivm.cli import appliance, build, common, gns3, kernel, lab, run

app = typer.Typer(
    name="minivm",
    help="Turn a Docker image into a MiniVM: a small QEMU VM and a GNS3 appliance.",
    no_args_is_help=True,
    rich_markup_mode=common.HELP_MARKUP,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(debug: Annotated[bool, typer.Option(
        "--debug", help="Print every program minivm runs (its command line) and, on an "
                        "error, the full traceback.")] = False) -> None:
    """Turn a Docker image into a MiniVM: a small QEMU VM and a GNS3 appliance."""
    if debug:
        common.enable_debug()


app.add_typer(kernel.app, name="kernel")
app.command("build")(build.build)
app.command("appliance")(appliance.appliance)
app.command("run")(run.run)
app.add_typer(lab.app, name="lab")
app.add_typer(gns3.app, name="gns3")


def _no_metavar_on_flags(command: Command) -> None:
    """A flag takes no value: show none (typer would show ``<bool>``), --help included."""
    for param in [*command.params, command.get_help_option(Context(command))]:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _no_metavar_on_flags(sub)


def main() -> None:
    """Console-script entry point."""
    command = typer.main.get_command(app)
    _no_metavar_on_flags(command)
    command(prog_name="minivm")

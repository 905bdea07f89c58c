"""Wires the command modules into one typer app."""

from __future__ import annotations

from typing import Annotated

import typer

from minivm.cli import appliance, build, common, gns3, kernel, lab, run

app = typer.Typer(
    name="minivm",
    help="Turn a Docker image into a MiniVM: a small QEMU VM and a GNS3 appliance.",
    no_args_is_help=True,
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


def main() -> None:
    """Console-script entry point."""
    app()

"""``minivm kernel build``: the shared kernel kit (kernel, initramfs, module disk)."""

from __future__ import annotations

from typing import Annotated

import typer

from minivm.cli.common import (
    HELP_MARKUP,
    Json,
    PlatformOption,
    Quiet,
    emit_json,
    reporter,
    user_errors,
)

app = typer.Typer(help="Build the shared kernel kit (kernel, initramfs, module disk).",
                  no_args_is_help=True, rich_markup_mode=HELP_MARKUP)

Force = Annotated[bool, typer.Option("--force", help="Rebuild even if nothing changed.")]
Flavour = Annotated[str | None, typer.Option(
    "--flavour", help="Kernel flavour from kernel/kit.toml (minimal: compiled for MiniVMs; "
                      "cloud: Debian's cloud kernel). Default: kit.toml's `default`.")]


@app.command("build")
@user_errors
def build(quiet: Quiet = False, json_output: Json = False, force: Force = False,
          flavour: Flavour = None, platform: PlatformOption = None) -> None:
    """Build the kernel kit once (it becomes the current one of its platform); every appliance
    of that platform shares it."""
    from minivm import platforms
    from minivm.kit import kernel

    report = reporter(quiet=quiet, json_output=json_output)
    kits = [kernel.build(reporter=report, force=force, flavour=flavour, platform=p)
            for p in platforms.parse_list(platform)]
    if json_output:
        emit_json(kits[0].to_json() if len(kits) == 1 else {"kits": [k.to_json() for k in kits]})
    elif not quiet:
        for kit in kits:
            for role, record in kit.to_json()["files"].items():
                typer.echo(f"{role:8} {record['path']}  {record['size'] / 1e6:.2f} MB")

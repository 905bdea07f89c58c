"""``minivm appliance``: write or check a GNS3 appliance bundle (.gns3a + its files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from minivm.cli.common import Json, Quiet, emit_json, fail, reporter, user_errors


@user_errors
def appliance(
    name: Annotated[str | None, typer.Argument(
        help="The built image whose bundle to (re)write (see `minivm build`).",
        show_default=False)] = None,
    check: Annotated[Path | None, typer.Option(
        "--check", metavar="FILE.gns3a",
        help="Verify a bundle instead: GNS3's rules, every file's size and md5, the kernel "
             "arguments.")] = None,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """(Re)write the GNS3 appliance of NAME from its build outputs, or --check a bundle."""
    from minivm.gns3 import appliance as bundles

    if (name is None) == (check is None):
        raise fail("give either NAME (to write its bundle) or --check FILE.gns3a", 2)
    report = reporter(quiet=quiet, json_output=json_output)
    if check is not None:
        result = bundles.check_bundle(check)
        if json_output:
            emit_json({"ok": True, **result.to_json()})
        elif not quiet:
            total = sum(f["filesize"] for f in result.files)
            typer.echo(f"ok: {check} ({len(result.files)} files, {total / 1e6:.1f} MB, "
                       "all present with the right size and md5)")
        return
    assert name is not None
    written = bundles.write_bundle(name, reporter=report)
    if json_output:
        emit_json(written.to_json())

"""``minivm appliance``: write or check a GNS3 appliance bundle (.gns3a + its files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from minivm.cli.common import (
    AllowUnsafeOptions,
    Json,
    Quiet,
    emit_json,
    fail,
    reporter,
    user_errors,
)


@user_errors
def appliance(
    name: Annotated[str | None, typer.Argument(
        help="The built image whose bundle to (re)write (see `minivm build`).",
        show_default=False)] = None,
    check: Annotated[Path | None, typer.Option(
        "--check", metavar="FILE.gns3a",
        help="Verify a bundle instead: GNS3's rules, every file's size and md5, the kernel "
             "arguments; for a Docker appliance (NAME-docker.gns3a), its image in the engine "
             "or in the archive beside it.")] = None,
    docker_archive: Annotated[bool, typer.Option(
        "--docker-archive", help="Also write the image's `docker save` output beside the "
                                 "Docker appliance (for a GNS3 host without a registry).")
    ] = False,
    allow_unsafe_options: AllowUnsafeOptions = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """(Re)write the GNS3 appliances of NAME (QEMU and Docker node) from its build outputs, or
    --check one."""
    from minivm.gns3 import appliance as bundles
    from minivm.gns3 import docker_node

    if (name is None) == (check is None):
        raise fail("give either NAME (to write its bundle) or --check FILE.gns3a", 2)
    report = reporter(quiet=quiet, json_output=json_output)
    if check is not None:
        result = bundles.check_bundle(check, allow_unsafe_options=allow_unsafe_options)
        if json_output:
            emit_json({"ok": True, **result.to_json()})
        elif not quiet and result.docker_image is not None:
            image = result.docker_image
            where = f"archive {result.files[0].filename}" if result.files else "the engine"
            typer.echo(f"ok: {check} (Docker node, image {image} in {where})")
        elif not quiet:
            total = sum(f.filesize for f in result.files)
            typer.echo(f"ok: {check} ({len(result.files)} files, {total / 1e6:.1f} MB, "
                       "all present with the right size and md5)")
        return
    assert name is not None
    written = bundles.write_bundle(name, reporter=report)
    docker_written = docker_node.write_appliance(name, reporter=report, archive=docker_archive)
    if json_output:
        emit_json({**written.to_json(),
                   "docker_appliance": docker_written.to_json() if docker_written else None})

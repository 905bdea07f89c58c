"""``minivm build``: an image (folder, context, reference or archive) to a MiniVM disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from minivm.cli.common import Json, PlatformOption, Quiet, emit_json, reporter, user_errors
from minivm.kinds import DiskBackend

if TYPE_CHECKING:
    from minivm.platforms import Platform
    from minivm.ui import Reporter

SOURCE_HELP = ("An image folder under images/, a Docker build context, an image the engine has "
               "(or can pull), or a `docker save` / OCI archive (no engine needed).")


@user_errors
def build(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP, show_default=False)],
    size: Annotated[str | None, typer.Option(help="Filesystem size (512M, 2G); default: "
                                                  "from the content, with headroom.")] = None,
    backend: Annotated[DiskBackend, typer.Option(
        help="Disk writer: mke2fs (root or fakeroot) or guestfs (libguestfs).")
        ] = DiskBackend.AUTO,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Output folder (default: build/).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when up to date.")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="Name of the outputs and the appliance (default: from the source, "
                       "e.g. the context folder's name).")] = None,
    docker_archive: Annotated[bool, typer.Option(
        "--docker-archive", help="Also write the image's `docker save` output beside the "
                                 "Docker appliance (for a GNS3 host without a registry).")
    ] = False,
    platform: PlatformOption = None,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Build a MiniVM root disk (compressed QCOW2) from a Docker image, for each platform
    asked (outputs of linux/arm64 are named NAME-arm64)."""
    from minivm import platforms

    builds = []
    for p in platforms.parse_list(platform):
        report = reporter(quiet=quiet, json_output=json_output)
        builds.append(_build_one(source, p, report, size=size, backend=backend, output=output,
                                 force=force, name=name, docker_archive=docker_archive))
    if json_output:
        emit_json(builds[0] if len(builds) == 1 else {"builds": builds})


def _build_one(source: str, platform: Platform, report: Reporter, *, size: str | None,
               backend: DiskBackend, output: Path | None, force: bool, name: str | None,
               docker_archive: bool) -> dict[str, Any]:
    """One platform's root disk and appliances; what --json reports of it."""
    from minivm.gns3 import appliance as bundles
    from minivm.gns3 import docker_node
    from minivm.image import build as builder
    from minivm.image import disk

    result = builder.build(source, reporter=report, backend=backend, output_dir=output,
                           size=disk.parse_size(size) if size else None, force=force,
                           name=name, platform=platform)
    # The GNS3 appliance bundle: written when a kernel kit exists, else a hint.
    bundle = bundles.after_build(result.name, folder=result.folder, reporter=report)
    # The same image as a GNS3 Docker node, when an engine holds it.
    docker_bundle = docker_node.after_build(result.name, folder=result.folder, reporter=report,
                                            archive=docker_archive)
    record = result.record
    return {
        "appliance": bundle.to_json() if bundle else None,
        "docker_appliance": docker_bundle.to_json() if docker_bundle else None,
        "name": result.name, "platform": platform.text, "image_id": result.image_id,
        "cached": result.cached, "backend": result.backend,
        "outputs": {role: f.to_json() for role, f in record.outputs.items()},
        "seconds": dict(report.seconds),  # this run's stages
        "built_seconds": record.seconds,  # the stages of the build that made it
    }

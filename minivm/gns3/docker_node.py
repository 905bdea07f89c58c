"""GNS3 Docker-node appliances: ``<name>-docker.gns3a``, the built image run as a container.

GNS3 creates a Docker node from an image its engine has. The build's image is tagged
``minivm/<name>:<short id>`` (the same image, the same reference), the appliance names that
reference, and ``docker save`` output can be written beside it (``<name>-docker-<id>.tar``) for
a GNS3 host that cannot reach a registry. Metadata (name, description, usage, vendor...) is the
QEMU appliance's; the file is rendered from ``appliances/appliance-docker.gns3a.j2``.
"""

from __future__ import annotations

import json
import re
import tarfile
import uuid
from pathlib import Path
from typing import Any

import docker

from minivm.errors import MinivmError
from minivm.fsutil import atomic_path, atomic_write_bytes, remove
from minivm.gns3 import model
from minivm.gns3.bundle import (
    Bundle,
    BundleFile,
    build_record,
    bundle_inputs,
    record_inputs,
    unchanged_bundle,
)
from minivm.gns3.metadata import required_metadata
from minivm.gns3.render import ID_NAMESPACE, render, values
from minivm.image import engine
from minivm.image.config import short_id
from minivm.paths import appliances_dir
from minivm.ui import Reporter

TEMPLATE = "appliance-docker.gns3a.j2"
USAGE_TEMPLATE = "usage-docker.txt.j2"
REPOSITORY = "minivm"
SUFFIX = "-docker.gns3a"

# --- what GNS3 accepts in "docker" (registry v6 schema, gns3-server 3.0.6, gns3-gui 3.0.6) ----
CONSOLE_TYPES = ("telnet", "vnc", "http", "https", "none")
DOCKER_REQUIRED = ("adapters", "image")
DOCKER_KEYS: dict[str, Any] = {
    "adapters": "int", "image": "str", "start_command": "str", "environment": "str",
    "console_type": CONSOLE_TYPES, "console_http_port": "int", "console_http_path": "str",
    "extra_hosts": "str", "extra_volumes": "array",
}
TOP_KEYS = {k: v for k, v in model.TOP_KEYS.items()
            if k not in ("qemu", "images", "versions")} | {"docker": "object"}
# A Docker reference minivm writes: repository[:tag] (lower case; no digest, no registry port).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REF_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?")


def appliance_id(name: str) -> str:
    """The stable id of the Docker appliance of ``name`` (not the QEMU one's: GNS3 keys
    appliances by id)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{name}/docker"))


def reference(name: str, image_id: str) -> str:
    """``minivm/<name>:<short id>``: stable for one image, new for another."""
    repo = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "image"
    return f"{REPOSITORY}/{repo}:{short_id(image_id)}"


def archive_name(ref: str) -> str:
    """The file ``docker save`` output of ``ref`` is written to, beside the appliance."""
    repo, _, tag = ref.rpartition(":")
    return f"{repo.rsplit('/', 1)[-1]}-docker-{tag}.tar"


def gns3a_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{SUFFIX}"


# --- the engine --------------------------------------------------------------------------------

def _engine_or_none() -> Any:
    try:
        return engine.connect()
    except MinivmError:
        return None


def _has_image(client: Any, ref: str) -> bool:
    try:
        client.inspect_image(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as e:
        raise MinivmError(f"cannot inspect image {ref}: {e.explanation or e}") from None


def archive_tags(path: Path) -> set[str]:
    """The RepoTags of a ``docker save`` archive (empty when it is not one)."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            manifest = json.loads(member.read()) if member else []
    except (OSError, tarfile.TarError, KeyError, ValueError):
        return set()
    return {t for entry in manifest if isinstance(entry, dict)
            for t in entry.get("RepoTags") or []}


def save_archive(client: Any, ref: str, target: Path, *, reporter: Reporter) -> str:
    """``docker save ref`` (Engine API) to ``target``, atomically; kept when it already holds
    ``ref`` (the reference names one image). Returns ``kept`` or ``written``."""
    if target.is_file() and ref in archive_tags(target):
        return "kept"
    with reporter.stage("docker_save", f"Saving {ref} to {target.name}"), \
            atomic_path(target) as tmp, tmp.open("wb") as out:
        try:
            for chunk in client.get_image(ref, chunk_size=1 << 20):
                out.write(chunk)
        except docker.errors.APIError as e:
            raise MinivmError(f"docker save of {ref} failed: {e.explanation or e}") from None
    return "written"


# --- writing -----------------------------------------------------------------------------------

def write_appliance(name: str, *, reporter: Reporter, folder: Path | None = None,
                    archive: bool = False, client: Any = None) -> Bundle | None:
    """Tag the build's image ``minivm/<name>:<id>`` and write ``<name>-docker.gns3a`` (and
    with ``archive``, the image's ``docker save`` output beside it). None, with a note, when
    no engine holds the image (a build from an archive on a host without one)."""
    folder, record, _ = build_record(name, folder)
    image_id = record.image_id
    client = client or _engine_or_none()
    if client is None or not _has_image(client, image_id):
        why = "no Docker engine answers" if client is None else \
            f"the Docker engine has no image {short_id(image_id)}"
        reporter.info(f"no GNS3 Docker appliance for {name}: {why} (built from "
                      f"{record.source}); load the image (`docker load -i ARCHIVE`), "
                      f"then run `minivm appliance {name}`")
        return None
    ref = reference(name, image_id)
    repository, _, tag = ref.rpartition(":")
    try:
        client.tag(image_id, repository, tag)
    except docker.errors.APIError as e:
        raise MinivmError(f"cannot tag image {image_id} as {ref}: {e.explanation or e}") from None
    target = folder / archive_name(ref)
    path = gns3a_path(folder, name)
    inputs = bundle_inputs(name, record, docker=ref, archive=archive)
    if unchanged := unchanged_bundle(path, inputs):
        reporter.info(f"[green]✓[/] Docker appliance {path} is up to date")
        return unchanged
    meta = required_metadata(name, record)
    files: list[BundleFile] = []
    if archive:
        how = save_archive(client, ref, target, reporter=reporter)
        files.append(BundleFile(target.name, target.stat().st_size, how=how))
    for stale in folder.glob(f"{archive_name(ref).rsplit('-docker-', 1)[0]}-docker-*.tar"):
        if stale != target:
            remove(stale)
    data = values(name, meta, record, version=tag, files={})
    adapters = data["adapters"]
    data.update(
        appliance_id=appliance_id(name), image=ref,
        usage=render(
            USAGE_TEMPLATE, usage=(meta.usage or "").strip(), image=ref, name=name,
            adapters=max(adapters, 1), archive=target.name,
            archived=bool(files)).strip())
    text = render(TEMPLATE, a=data)
    parsed = model.parse(text, where=f"{appliances_dir() / TEMPLATE} (rendered for "
                                              f"{name})")
    if problems := model_problems(parsed):
        raise MinivmError(f"{appliances_dir() / TEMPLATE} rendered an appliance GNS3 would "
                          f"refuse for {name}: {model.summary(problems)}",
                          hint="fix the template")
    atomic_write_bytes(path, text.encode())
    listed = tuple(BundleFile(f.filename, f.filesize) for f in files)
    record_inputs(path, inputs, listed)
    extra = f", archive {target.name} ({target.stat().st_size / 1e6:.1f} MB)" if files else ""
    reporter.info(f"[green]✓[/] Docker appliance {path} (image {ref}{extra})")
    return Bundle.of(path, parsed, listed)


def after_build(name: str, *, folder: Path, reporter: Reporter,
                archive: bool = False) -> Bundle | None:
    """The end of ``minivm build``: the Docker appliance when an engine holds the image."""
    return write_appliance(name, reporter=reporter, folder=folder, archive=archive)


# --- checking ----------------------------------------------------------------------------------

def model_problems(data: dict[str, Any]) -> list[str]:
    """What GNS3 (server model, GUI schema, registry v6 schema) would refuse in a Docker
    appliance."""
    problems = model.object_problems(data, TOP_KEYS, model.TOP_REQUIRED,
                                               "appliance")
    node = data.get("docker")
    if node is None:
        return [*problems, "appliance lacks 'docker'"]
    problems += model.object_problems(node, DOCKER_KEYS, DOCKER_REQUIRED, "docker")
    if isinstance(node, dict):
        image = node.get("image")
        if isinstance(image, str) and not REF_RE.fullmatch(image):
            problems.append(f"docker.image {image!r} is not a Docker image reference")
        adapters = node.get("adapters")
        if isinstance(adapters, int) and not 0 <= adapters <= 100:
            problems.append(f"docker.adapters is {adapters}, outside 0..100")
    return problems


def check(path: Path, data: dict[str, Any], *, client: Any = None) -> Bundle:
    """Verify a Docker appliance: GNS3's rules, and its image in the engine or in the archive
    beside it."""
    if problems := model_problems(data):
        raise MinivmError(f"{path}: {model.summary(problems)}",
                          hint="GNS3 would refuse it; rewrite it with `minivm appliance NAME`")
    ref = data["docker"]["image"]
    archive = path.parent / archive_name(ref)
    files: tuple[BundleFile, ...] = ()
    if archive.is_file():
        if ref not in archive_tags(archive):
            raise MinivmError(f"{archive} does not hold {ref}",
                              hint="rewrite it with `minivm appliance NAME --docker-archive`")
        files = (BundleFile(archive.name, archive.stat().st_size),)
    client = client or _engine_or_none()
    if not files and (client is None or not _has_image(client, ref)):
        where = "no Docker engine answers" if client is None else "the Docker engine lacks it"
        raise MinivmError(f"{path}: image {ref} is in no archive beside it and {where}",
                          hint="rebuild, or rewrite it with `minivm appliance NAME "
                               "--docker-archive`")
    return Bundle.of(path, data, files)

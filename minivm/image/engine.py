"""The Docker engine, through its API (the ``docker`` SDK): build, resolve, export. No CLI calls."""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors
from docker import APIClient

from minivm.errors import MinivmError
from minivm.image.config import ImageConfig
from minivm.ui import Reporter

START_HINT = (
    "start one with `sudo systemctl start docker` (or `sudo dockerd &`), "
    "or set DOCKER_HOST; a user must be in the `docker` group"
)
LOG_TAIL_LINES = 8

def connect() -> APIClient:
    """A client for the engine named by DOCKER_HOST (default: the local socket), checked alive."""
    try:
        client = docker.from_env(timeout=600).api
        client.ping()
    except docker.errors.DockerException as e:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        reason = "permission denied" if "Permission denied" in str(e) else "no answer"
        raise MinivmError(f"cannot reach the Docker engine at {where} ({reason})",
                          hint=START_HINT) from None
    return client


def build_image(
    client: APIClient,
    context: Path,
    *,
    reporter: Reporter,
    dockerfile: str | None = None,
    target: str | None = None,
    buildargs: dict[str, str] | None = None,
    tag: str | None = None,
    nocache: bool = False,
    platform: str | None = None,
) -> str:
    """Build a Docker context, streaming its log; return the image id (``nocache``: every
    step runs again, Docker's layer cache unused; ``platform``: Docker's ``--platform``).
    ``dockerfile`` is relative to the context, or a path outside it (sent along).

    A failing step raises a MinivmError naming the step and the tail of its log.
    """
    if not context.is_dir():
        raise MinivmError(f"no such build context: {context}",
                          hint="name a folder under images/ or a folder with a Dockerfile")
    dockerfile_path = context / (dockerfile or "Dockerfile")
    if not dockerfile_path.is_file():
        raise MinivmError(f"no Dockerfile in {context}", hint="add one, or name another folder")
    step, image_id = "", None
    tail: list[str] = []
    try:
        stream = client.build(
            path=str(context), dockerfile=dockerfile, target=target, buildargs=buildargs,
            tag=tag, rm=True, forcerm=True, decode=True, pull=False, nocache=nocache,
            platform=platform,
        )
        for chunk in stream:
            if "error" in chunk:
                detail = chunk.get("error", "").strip()
                log = " | ".join(line.strip() for line in tail[-LOG_TAIL_LINES:] if line.strip())
                raise MinivmError(
                    f"docker build of {context} failed at {step or 'the first step'}: {detail}"
                    + (f"; log tail: {log}" if log else "")
                )
            text = chunk.get("stream") or chunk.get("status") or ""
            for line in text.splitlines():
                if re.match(r"^Step \d+/\d+ : ", line):
                    step, tail = line.strip(), []
                else:
                    tail.append(line)
                reporter.log_line(line)
            if aux := chunk.get("aux"):
                image_id = aux.get("ID", image_id)
    except docker.errors.APIError as e:
        raise MinivmError(f"docker build of {context} failed: {e.explanation or e}") from None
    if not image_id:
        raise MinivmError(f"docker build of {context} returned no image id")
    return image_id


def resolve_image(client: APIClient, ref: str, *, reporter: Reporter) -> str:
    """The id of image ``ref``: local if the engine has it, else pulled."""
    try:
        return client.inspect_image(ref)["Id"]
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as e:
        raise MinivmError(f"cannot inspect image {ref}: {e.explanation or e}") from None
    reporter.info(f"pulling {ref}")
    try:
        for chunk in client.pull(ref, stream=True, decode=True):
            if "error" in chunk:
                raise docker.errors.APIError(chunk["error"])
        return client.inspect_image(ref)["Id"]
    except docker.errors.APIError as e:
        reason = getattr(e, "explanation", None) or str(e)
        raise MinivmError(f"no such image: {ref} (not local, and the pull failed: "
                          f"{' '.join(str(reason).split())[:200]})",
                          hint="check the name, or build it first") from None


# Docker Hub's per-architecture copies of its official images (``arm64v8/debian``): where the
# image of another platform is found when the engine's own tag names the host's.
ARCH_REPOSITORIES = {"amd64": "amd64", "arm64": "arm64v8"}


def image_platform(client: APIClient, ref: str) -> str | None:
    """``os/architecture`` of an image the engine has; None when it has none by that name."""
    try:
        info = client.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as e:
        raise MinivmError(f"cannot inspect image {ref}: {e.explanation or e}") from None
    return f"{info.get('Os') or 'linux'}/{info.get('Architecture') or 'amd64'}"


def arch_repository(ref: str, arch: str) -> str | None:
    """``arm64v8/debian:bookworm-slim`` for ``debian:bookworm-slim`` and arm64: the official
    image's per-architecture copy (None for images that are not official ones)."""
    name = ref.removeprefix("docker.io/").removeprefix("library/")
    if "/" in name or "@" in name or arch not in ARCH_REPOSITORIES:
        return None
    return f"{ARCH_REPOSITORIES[arch]}/{name}"


def local_for_platform(client: APIClient, ref: str, platform: str, *,
                       reporter: Reporter | None = None) -> str | None:
    """The id of the engine's image ``ref`` for ``platform``, or of the official image's
    per-architecture copy (see :data:`ARCH_REPOSITORIES`); None when it has neither."""
    if image_platform(client, ref) == platform:
        return str(client.inspect_image(ref)["Id"])
    copy = arch_repository(ref, platform.rsplit("/", 1)[-1])
    if copy and image_platform(client, copy) == platform:
        if reporter:
            reporter.info(f"using {copy} for {ref} ({platform})")
        return str(client.inspect_image(copy)["Id"])
    return None


def resolve_for_platform(client: APIClient, ref: str, platform: str, *,
                         reporter: Reporter) -> str:
    """The id of image ``ref`` for ``platform`` (``linux/arm64``): the engine's own when it
    is of that platform, else the official image's per-architecture copy the engine has, else
    pulled for that platform. An image only of another platform is refused, naming both."""
    if image_id := local_for_platform(client, ref, platform, reporter=reporter):
        return image_id
    found = image_platform(client, ref)
    copy = arch_repository(ref, platform.rsplit("/", 1)[-1])
    reporter.info(f"pulling {ref} for {platform}")
    reason = ""
    try:
        for chunk in client.pull(ref, platform=platform, stream=True, decode=True):
            if "error" in chunk:
                raise docker.errors.APIError(chunk["error"])
    except docker.errors.APIError as e:
        reason = " ".join(str(getattr(e, "explanation", None) or e).split())[:160]
    if image_platform(client, ref) == platform:
        return str(client.inspect_image(ref)["Id"])
    what = (f"image {ref} is not available for {platform}: the engine has it for {found} only"
            if found else f"no such image: {ref} for {platform}: the engine does not have it")
    raise MinivmError(what
                      + (f", and the pull failed ({reason})" if reason else ""),
                      hint=f"docker pull --platform {platform} {ref}, or docker load a "
                           f"{platform} archive" + (f" tagged {copy}" if copy else ""))


def image_config(client: APIClient, image_id: str) -> ImageConfig:
    """The config (Entrypoint, Cmd, Env, ...) of an image the engine has."""
    info = client.inspect_image(image_id)
    return ImageConfig.from_docker(info["Id"], info.get("Config"), info.get("Created"))


class _ChunkReader(io.RawIOBase):
    """A readable binary stream over an iterator of byte chunks (the export API's answer)."""

    def __init__(self, chunks: Iterator[bytes], on_bytes: Callable[[int], None]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
            self._on_bytes(len(self._buffer))
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _stream(chunks: Any, on_bytes: Callable[[int], None] = lambda n: None) -> BinaryIO:
    """A buffered binary stream over the byte chunks an API call yields."""
    return io.BufferedReader(_ChunkReader(iter(chunks), on_bytes), buffer_size=1 << 20)


@contextmanager
def exported_filesystem(
    client: APIClient, image_id: str, *, on_bytes: Callable[[int], None] = lambda n: None
) -> Iterator[BinaryIO]:
    """Create (never start) a container of the image and yield its flattened filesystem as a
    tar stream. The container is removed afterwards, whatever happens."""
    try:
        container = client.create_container(image_id, command=["/.minivm-export"],
                                            entrypoint=[], network_disabled=True,
                                            labels={"minivm": "export"})["Id"]
    except docker.errors.APIError as e:
        raise MinivmError(
            f"cannot create a container of {image_id}: {e.explanation or e}"
        ) from None
    try:
        yield _stream(client.export(container, chunk_size=1 << 20), on_bytes)
    finally:
        with suppress(docker.errors.APIError):
            client.remove_container(container, force=True, v=True)


def image_files(client: APIClient, image_id: str,
                names: tuple[str, ...]) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """The image's own version of a few files (topmost layer wins, whiteouts honoured), read
    from the image's layers as the engine saves them. Absent files are left out."""
    found: dict[str, dict[str, tuple[tarfile.TarInfo, bytes] | None]] = {}
    order: list[str] = []
    wanted = set(names)
    whiteouts = {posixpath.join(posixpath.dirname(n), ".wh." + posixpath.basename(n)): n
                 for n in names}
    stream = _stream(client.get_image(image_id, chunk_size=1 << 20))
    with tarfile.open(fileobj=stream, mode="r|") as outer:
        for member in outer:
            data = outer.extractfile(member) if member.isreg() else None
            if data is None:
                continue
            if member.name == "manifest.json":
                order = json.loads(data.read())[0]["Layers"]
                continue
            layer: dict[str, tuple[tarfile.TarInfo, bytes] | None] = {}
            try:
                with tarfile.open(fileobj=data, mode="r|*") as inner:
                    for info in inner:
                        name = info.name.removeprefix("./")
                        if name in wanted and info.isreg():
                            file = inner.extractfile(info)
                            layer[name] = (info, file.read() if file else b"")
                        elif name in whiteouts:
                            layer[whiteouts[name]] = None
            except (tarfile.TarError, EOFError):
                continue  # a config or index blob, not a layer
            if layer:
                found[member.name] = layer
    result: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    for layer_name in order:
        for name, value in found.get(layer_name, {}).items():
            if value is None:
                result.pop(name, None)
            else:
                value[0].name = name
                result[name] = value
    return result


def remove_image(client: APIClient, image_id: str) -> None:
    """Remove an image, ignoring one already gone."""
    with suppress(docker.errors.APIError):
        client.remove_image(image_id, force=True, noprune=False)


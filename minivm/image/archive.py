"""Daemonless input: `docker save` archives (classic and OCI layouts) and OCI image layouts.

An archive is read in place (a tar file is indexed, never unpacked); its layers are
opened one at a time, in order, by :mod:`minivm.image.layers`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tarfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from minivm.errors import MinivmError
from minivm.image.config import ImageConfig
from minivm.platforms import AMD64, Platform

MEDIA_INDEX = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass(frozen=True)
class Layer:
    """One layer of an archive: a name for messages and a way to open its (compressed) tar."""

    name: str
    open: Callable[[], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True)
class ImageArchive:
    """An image read from an archive: its config and its layers, bottom first."""

    path: Path
    config: ImageConfig
    layers: list[Layer]


def is_archive(path: Path) -> bool:
    """True for a tar file or an OCI layout folder (a file named oci-layout inside)."""
    return (path.is_file() and tarfile.is_tarfile(path)) or (path / "oci-layout").is_file()


def open_archive(path: Path, platform: Platform = AMD64) -> ImageArchive:
    """Read the manifest and config of a `docker save` tar or an OCI image layout holding an
    image of ``platform`` (an OCI index: its manifest for that platform)."""
    if not path.exists():
        raise MinivmError(f"no such archive: {path}")
    store = _DirStore(path) if path.is_dir() else _TarStore(path)
    where = str(path)
    if store.has("manifest.json"):
        manifest = _json(store, "manifest.json", where)
        if not isinstance(manifest, list) or len(manifest) != 1:
            raise MinivmError(f"{where}: manifest.json must name exactly one image "
                              f"(it names {len(manifest) if isinstance(manifest, list) else 0})",
                              hint="save a single image: docker save IMAGE > file.tar")
        config_name, layer_names = manifest[0]["Config"], manifest[0]["Layers"]
    elif store.has("index.json"):
        config_name, layer_names = _oci_manifest(store, where, platform)
    else:
        raise MinivmError(f"{where} is neither a `docker save` archive nor an OCI image layout",
                          hint="no manifest.json or index.json inside")
    raw_config = store.read(config_name, where)
    image_id = "sha256:" + hashlib.sha256(raw_config).hexdigest()
    try:
        config = json.loads(raw_config)
    except ValueError:
        raise MinivmError(f"{where}: the image config {config_name} is not valid JSON") from None
    if not isinstance(config, dict):
        raise MinivmError(f"{where}: the image config {config_name} is not a JSON object")
    found = config_platform(config)
    if found != platform.text:
        raise MinivmError(f"{where} holds a {found} image, not {platform.text}",
                          hint=f"save the {platform.text} image (docker save after "
                               f"docker pull --platform {platform.text}), or build with "
                               f"--platform {found}")
    for name in layer_names:
        if not store.has(name):
            raise MinivmError(f"{where}: layer {name} is missing",
                              hint="the archive is incomplete; save it again")
    layers = [Layer(name, functools.partial(store.open, name)) for name in layer_names]
    return ImageArchive(path, ImageConfig.from_docker(image_id, config.get("config"),
                                                             config.get("created")), layers)


def config_platform(config: dict[str, Any]) -> str:
    """``os/architecture`` of an image config (Docker's defaults when a field is missing)."""
    os_name, arch = config.get("os") or "linux", config.get("architecture") or AMD64.arch
    return f"{os_name}/{arch}" if isinstance(os_name, str) and isinstance(arch, str) else "?"


def _oci_manifest(store: _Store, where: str, platform: Platform) -> tuple[str, list[str]]:
    index = _json(store, "index.json", where)
    manifests = index.get("manifests") or []
    while manifests and manifests[0].get("mediaType") in MEDIA_INDEX:
        index = _json(store, _blob(manifests[0]["digest"]), where)
        listed = [m for m in index.get("manifests") or []
                  if isinstance(m, dict) and _entry_platform(m) != "unknown/unknown"]
        manifests = [m for m in listed if _entry_platform(m) in (None, platform.text)]
        if not manifests and listed:
            offered = sorted({_entry_platform(m) or "?" for m in listed})
            raise MinivmError(f"{where}: the image index has no {platform.text} image "
                              f"(it has {', '.join(offered)})",
                              hint="build with --platform " + " or ".join(offered))
    if len(manifests) != 1:
        raise MinivmError(f"{where}: index.json must name exactly one image manifest "
                          f"(it names {len(manifests)})")
    manifest = _json(store, _blob(manifests[0]["digest"]), where)
    return (_blob(manifest["config"]["digest"]),
            [_blob(layer["digest"]) for layer in manifest.get("layers", [])])


def _entry_platform(entry: dict[str, Any]) -> str | None:
    """``os/architecture`` an index entry names (``unknown/unknown``: an attestation); None
    when it names none (an index of one image)."""
    p = entry.get("platform")
    if not isinstance(p, dict) or not isinstance(p.get("architecture"), str):
        return None
    return f"{p.get('os') or 'linux'}/{p['architecture']}"


def _blob(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _json(store: _Store, name: str, where: str) -> Any:
    try:
        return json.loads(store.read(name, where))
    except ValueError:
        raise MinivmError(f"{where}: {name} is not valid JSON",
                          hint="the archive is corrupt; save it again") from None


class _Store:
    def has(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    def read(self, name: str, where: str) -> bytes:
        if not self.has(name):
            raise MinivmError(f"{where}: {name} is missing", hint="the archive is incomplete")
        with self.open(name) as f:
            return f.read()


class _DirStore(_Store):
    def __init__(self, root: Path) -> None:
        self.root = root

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def open(self, name: str) -> AbstractContextManager[BinaryIO]:
        return (self.root / name).open("rb")


class _TarStore(_Store):
    """Members of an uncompressed tar, opened in place through a seekable file."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, mode="r:")
            self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers()}
        except (tarfile.TarError, EOFError, OSError) as e:
            raise MinivmError(f"{path} is not a readable tar archive ({e})",
                              hint="the file is corrupt or truncated; save it again") from None
        self.path = path

    def has(self, name: str) -> bool:
        member = self.members.get(name)
        while member is not None and member.issym():
            target = str(Path(name).parent / member.linkname)
            name, member = target, self.members.get(_normalise(target))
        return member is not None and member.isreg()

    def open(self, name: str) -> AbstractContextManager[BinaryIO]:
        member = self.members[name]
        while member.issym():
            name = _normalise(str(Path(name).parent / member.linkname))
            member = self.members[name]
        f = self.tar.extractfile(member)
        assert f is not None
        return nullcontext(cast(BinaryIO, f))


def _normalise(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)

"""What both appliance kinds share: the build an appliance is made from, the record of its
inputs beside it (``.<name>.gns3a.inputs``: a cached build rewrites nothing), and the written
bundle as a value."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from minivm import cache
from minivm.errors import MinivmError
from minivm.fsutil import atomic_path, atomic_write_bytes, sha256_tree
from minivm.gns3.metadata import metadata_files
from minivm.paths import appliances_dir, build_dir, images_dir

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class BundleFile:
    """A file of a bundle, beside its .gns3a: name and size; for a QEMU appliance its role
    (root, kernel, initrd, modules), version and md5; for a Docker archive how it was made
    (kept, written)."""

    filename: str
    filesize: int
    role: str | None = None
    version: str | None = None
    md5sum: str | None = None
    how: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleFile:
        """KeyError/TypeError/ValueError when ``data`` is not one."""
        def text(key: str) -> str | None:
            return None if data.get(key) is None else str(data[key])
        return cls(filename=str(data["filename"]), filesize=int(data["filesize"]),
                   role=text("role"), version=text("version"), md5sum=text("md5sum"),
                   how=text("how"))


@dataclass(frozen=True)
class Bundle:
    """A written (or checked) appliance bundle: its .gns3a, the name and id it gives the
    appliance, the image of a Docker node (None: a QEMU appliance), its files."""

    path: Path
    name: str
    appliance_id: str
    docker_image: str | None = None
    files: tuple[BundleFile, ...] = ()

    @classmethod
    def of(cls, path: Path, data: dict[str, Any], files: Sequence[BundleFile] = ()) -> Bundle:
        """The bundle whose .gns3a ``path`` holds ``data`` (checked already, or minivm's own);
        KeyError/TypeError when it is not an appliance."""
        docker = data.get("docker")
        return cls(path, name=str(data["name"]), appliance_id=str(data["appliance_id"]),
                   docker_image=str(docker["image"]) if docker is not None else None,
                   files=tuple(files))

    def to_json(self) -> dict[str, Any]:
        return {"gns3a": str(self.path), "name": self.name, "appliance_id": self.appliance_id,
                "files": [f.to_json() for f in self.files],
                "total_bytes": sum(f.filesize for f in self.files)}


def build_record(name: str, folder: Path | None = None
                 ) -> tuple[Path, cache.BuildRecord, Path]:
    """The build folder, record and root disk of ``name``; clear errors when absent."""
    if not NAME_RE.fullmatch(name):
        raise MinivmError(f"{name!r} is not an appliance name",
                          hint="names are letters, digits, '.', '_' and '-'")
    folder = folder or build_dir() / name
    record = cache.load(folder)
    if record is None:
        if (images_dir() / name).is_dir() or folder.is_dir():
            raise MinivmError(f"{name} has not been built (no {folder / cache.RECORD})",
                              hint=f"run `minivm build {name}`")
        built = sorted(p.parent.name for p in build_dir().glob(f"*/{cache.RECORD}"))
        shipped = sorted(p.name for p in images_dir().glob("*") if p.is_dir())
        raise MinivmError(f"unknown appliance {name!r}",
                          hint=f"built: {', '.join(built) or 'none'}; "
                               f"shipped images: {', '.join(shipped) or 'none'}")
    root = record.root
    if not root.is_file():
        raise MinivmError(f"the root disk of {name} is missing ({root})",
                          hint=f"run `minivm build {name}`")
    return folder, record, root


def place(source: Path, target: Path) -> str:
    """Make ``target`` hold ``source``'s bytes: hard link, else reflink, else copy.

    Returns how (``same``, ``link``, ``reflink``, ``copy``); atomic (temp name + rename).
    """
    if target.exists() and os.path.samefile(source, target):
        return "same"
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
            return "link"
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
        with source.open("rb") as src, tmp.open("wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), 0x40049409, src.fileno())  # FICLONE
                return "reflink"
            except OSError:
                shutil.copyfileobj(src, dst, 1 << 20)
                return "copy"


def _key_file(gns3a: Path) -> Path:
    return gns3a.with_name(f".{gns3a.name}.inputs")


def bundle_inputs(name: str, record: cache.BuildRecord, **more: Any) -> str:
    """A digest of everything an appliance is made from: the build, the metadata files, the
    templates, minivm's version, and ``more`` (the kit, say)."""
    metadata_text = [f.read_text(errors="replace") for f in metadata_files(name, record)]
    return cache.key(name=name, build=record.key, metadata=metadata_text,
                     templates=sha256_tree(appliances_dir()), **more)


def record_inputs(gns3a: Path, inputs: str, files: Sequence[BundleFile]) -> None:
    """Write what the appliance at ``gns3a`` was made from, beside it (after the file)."""
    atomic_write_bytes(_key_file(gns3a), (json.dumps(
        {"key": inputs, "files": [f.to_json() for f in files]}, sort_keys=True) + "\n"
    ).encode())


def unchanged_bundle(gns3a: Path, inputs: str) -> Bundle | None:
    """The bundle at ``gns3a`` when it was written from ``inputs`` and its files are whole
    (same sizes): a cached ``minivm build`` then renders and hashes nothing."""
    try:
        saved = json.loads(_key_file(gns3a).read_text())
        if saved["key"] != inputs:
            return None
        files = tuple(BundleFile.from_json(f) for f in saved["files"])
        for f in files:
            if (gns3a.parent / f.filename).stat().st_size != f.filesize:
                return None
        return Bundle.of(gns3a, json.loads(gns3a.read_text(encoding="utf-8")), files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def named_files(gns3a: Path) -> set[str]:
    """File names a previous bundle listed (to remove what the new one no longer needs)."""
    try:
        data = json.loads(gns3a.read_text(encoding="utf-8"))
        return {str(i["filename"]) for i in data.get("images", []) if isinstance(i, dict)}
    except (OSError, ValueError, AttributeError, KeyError):
        return set()

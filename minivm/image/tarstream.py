"""Tar entries as a stream: safe names, reading a tar stream, writing one.

Every input (an engine export, a flattened set of layers) becomes an iterator of
:data:`Entry` values; every output is written by :func:`write_entries`.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO, cast

from minivm.errors import MinivmError

# A tar member and, for regular files, a reader of its data (valid until the next entry).
Entry = tuple[tarfile.TarInfo, BinaryIO | None]


def safe_name(name: str, *, where: str) -> str:
    """The normalised relative path of a member (``""`` for the root), or a MinivmError
    when it is absolute or climbs out with ``..``."""
    if name.startswith("/"):
        raise MinivmError(f"{where}: entry {name!r} has an absolute path",
                          hint="refusing an archive whose entries escape the root")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise MinivmError(f"{where}: entry {name!r} climbs out of the root with '..'",
                          hint="refusing an archive whose entries escape the root")
    return "/".join(parts)


def read_entries(stream: BinaryIO, *, where: str) -> Iterator[Entry]:
    """The members of a tar stream (any compression Python reads), names made safe."""
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                info.name = safe_name(info.name, where=where)
                if info.islnk():
                    info.linkname = safe_name(info.linkname, where=where)
                yield info, cast(BinaryIO, tar.extractfile(info)) if info.isreg() else None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise MinivmError(f"{where} is not a readable tar archive ({e})",
                          hint="the file is corrupt or truncated; save it again") from None


class SymlinkGuard:
    """Refuses entries whose parent path goes through a symlink seen earlier in the stream:
    extracting them would write outside the tree (or somewhere the image did not mean)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.links: set[str] = set()

    def check(self, info: tarfile.TarInfo) -> None:
        parent = posixpath.dirname(info.name)
        while parent:
            if parent in self.links:
                raise MinivmError(
                    f"{self.where}: entry {info.name!r} goes through the symlink {parent!r}",
                    hint="refusing an archive whose entries escape the root",
                )
            parent = posixpath.dirname(parent)
        if info.issym():
            self.links.add(info.name)
        else:
            self.links.discard(info.name)


def write_entries(entries: Iterable[Entry], out: BinaryIO) -> None:
    """Write entries as one uncompressed PAX tar stream (names relative, ``./`` prefixed)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for info, data in entries:
            info = _copy(info)
            info.name = "./" + info.name if info.name else "."
            if info.islnk():
                info.linkname = "./" + info.linkname
            tar.addfile(info, data if info.isreg() else None)


def _copy(info: tarfile.TarInfo) -> tarfile.TarInfo:
    new = tarfile.TarInfo(info.name)
    for attr in ("size", "mtime", "mode", "type", "linkname", "uid", "gid", "uname", "gname",
                 "devmajor", "devminor", "pax_headers"):
        setattr(new, attr, getattr(info, attr))
    new.pax_headers = {k: v for k, v in info.pax_headers.items()
                       if k.startswith("SCHILY.xattr.") or k in ("mtime",)}
    if not new.isreg():
        new.size = 0
    return new

"""Read a disk image's files back through libguestfs, for assertions."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import guestfs


@dataclass(frozen=True)
class Meta:
    """What a test compares of one path in a filesystem."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str
    md5: str
    mtime: int
    device: tuple[int, int]
    xattrs: tuple[tuple[str, str], ...]


def listing(image: Path, *, fmt: str = "qcow2") -> tuple[dict[str, Meta], str]:
    """Every path of the ext4 in ``image`` with its metadata, and the filesystem label."""
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.add_drive_opts(str(image), format=fmt, readonly=True)
        g.launch()
        label = g.vfs_label("/dev/sda")
        g.mount_ro("/dev/sda", "/")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "fs.tar"
            g.tar_out("/", str(out), xattrs=True)
            g.umount_all()
            return _join_hardlinks(_read(out)), label
    finally:
        g.close()


def _read(tar_path: Path) -> dict[str, Meta]:
    result: dict[str, Meta] = {}
    with tarfile.open(tar_path) as tar:
        for info in tar:
            name = info.name.removeprefix("./").rstrip("/")
            data = tar.extractfile(info) if info.isreg() else None
            xattrs = tuple(sorted((k.removeprefix("SCHILY.xattr."), v)
                                  for k, v in info.pax_headers.items()
                                  if k.startswith("SCHILY.xattr.")))
            result[name] = Meta(
                kind=_kind(info), mode=info.mode, uid=info.uid, gid=info.gid,
                size=info.size if info.isreg() else 0,
                target=info.linkname.removeprefix("./"),
                md5=hashlib.md5(data.read()).hexdigest() if data else "",
                mtime=int(info.mtime), device=(info.devmajor, info.devminor), xattrs=xattrs,
            )
    return result


def _join_hardlinks(files: dict[str, Meta]) -> dict[str, Meta]:
    """Name each hard-linked file by its whole group of names, whichever came first in the tar."""
    groups: dict[str, set[str]] = {}
    for path, meta in files.items():
        if meta.kind == "hardlink":
            group = groups.get(meta.target, {meta.target}) | groups.get(path, {path})
            for name in group:
                groups[name] = group
    for path, group in groups.items():
        first = next(files[n] for n in group if files[n].kind == "file")
        files[path] = replace(first, target="=" + ",".join(sorted(group)))
    return files


def _kind(info: tarfile.TarInfo) -> str:
    for kind, test in (("dir", info.isdir), ("file", info.isreg), ("symlink", info.issym),
                       ("hardlink", info.islnk), ("chr", info.ischr), ("blk", info.isblk),
                       ("fifo", info.isfifo)):
        if test():
            return kind
    return "other"

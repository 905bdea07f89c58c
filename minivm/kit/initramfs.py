"""A deterministic initramfs: cpio "newc" archive written in pure Python, then compressed.

Same entries in, same bytes out: entries sorted by path, inode numbers given in that order,
one fixed mtime, owner 0:0, gzip without a name or timestamp in its header.
"""

from __future__ import annotations

import gzip
import lzma
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from minivm.fsutil import atomic_path

COMPRESSIONS = ("gzip", "xz", "none")
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One member of the archive: ``data`` is a file's content or a symlink's target."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


class Tree:
    """The initramfs contents, keyed by path (no leading slash); parents are added as needed."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def _parents(self, path: str) -> None:
        for parent in reversed(PurePosixPath(path).parents):
            key = parent.as_posix()
            if key != "." and key not in self.entries:
                self.entries[key] = Entry(key, stat.S_IFDIR | 0o755)

    def _add(self, entry: Entry) -> None:
        self._parents(entry.path)
        self.entries[entry.path] = entry

    def dir(self, path: str, mode: int = 0o755) -> None:
        self._add(Entry(_clean(path), stat.S_IFDIR | mode))

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._add(Entry(_clean(path), stat.S_IFREG | mode, data))

    def symlink(self, path: str, target: str) -> None:
        self._add(Entry(_clean(path), stat.S_IFLNK | 0o777, target.encode()))

    def char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(Entry(_clean(path), stat.S_IFCHR | mode, rdev=(major, minor)))

    def __contains__(self, path: str) -> bool:
        return _clean(path) in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def _clean(path: str) -> str:
    clean = PurePosixPath("/", path).as_posix().lstrip("/")
    if not clean or ".." in PurePosixPath(clean).parts:
        raise ValueError(f"bad initramfs path: {path!r}")
    return clean


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(entry: Entry, ino: int, mtime: int) -> bytes:
    name = entry.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, mtime, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(name), 0)
    head = b"070701" + b"".join(b"%08x" % f for f in fields)
    return head + name + _pad(len(head) + len(name))


def cpio_bytes(entries: Iterable[Entry], *, mtime: int = 0) -> bytes:
    """The newc archive of ``entries``: sorted by path, inodes 1.. in that order."""
    out = bytearray()
    ordered = sorted(entries, key=lambda e: e.path)
    for ino, entry in enumerate(ordered, start=1):
        out += _header(entry, ino, mtime)
        out += entry.data + _pad(len(entry.data))
    out += _header(Entry(TRAILER, 0), 0, 0)
    out += b"\0" * (-len(out) % 512)  # whole 512-byte blocks, as cpio(1) writes
    return bytes(out)


def compress(data: bytes, method: str) -> bytes:
    """Compress an archive the way the kernel can unpack it (gzip or xz with a CRC32 check)."""
    if method == "gzip":
        return gzip.compress(data, compresslevel=9, mtime=0)
    if method == "xz":
        return xz(data, dict_size=1 << 22, x86=True)
    if method == "none":
        return data
    raise ValueError(f"unknown initramfs compression {method!r} (one of {COMPRESSIONS})")


def xz(data: bytes, *, dict_size: int, x86: bool) -> bytes:
    """xz -9e with a CRC32 check (what the kernel's and busybox's unpackers check), the given
    dictionary (what the unpacker must allocate) and, with ``x86``, the x86 BCJ filter (the
    kernel's unpacker has it, busybox's unxz does not)."""
    filters = [{"id": lzma.FILTER_X86}] if x86 else []
    filters.append({"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
                    "dict_size": dict_size})
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)


def write(tree: Tree, output: Path, *, compression: str = "gzip", mtime: int = 0) -> int:
    """Write ``tree`` as a compressed initramfs, atomically; return its size in bytes."""
    data = compress(cpio_bytes(tree.entries.values(), mtime=mtime), compression)
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return len(data)


def read_cpio(data: bytes) -> list[Entry]:
    """Parse an uncompressed newc archive (for tests and inspection)."""
    entries: list[Entry] = []
    pos = 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise ValueError(f"not a newc header at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        if name == TRAILER:
            return entries
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        entries.append(Entry(name, fields[1], body, (fields[9], fields[10])))


def decompress(data: bytes) -> bytes:
    """Undo :func:`compress` (detected from the magic bytes)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:6] == b"\xfd7zXZ\0":
        return lzma.decompress(data)
    return data

"""Unpacking a tar stream that a guest sent: hostile input, written only inside one fresh folder.

Root in a guest can replace the toolbox's ``tar`` and send any bytes, so the host parses the
stream itself (ustar, GNU long names, pax) and unpacks it into a staging folder that it made
empty, with these rules:

* a name is relative, with no ``..``: anything else is refused (the copy fails, nothing stays);
* no symlink exists in the staging folder while it fills: symlink entries are recorded and made
  at the very end, and an entry whose path goes through a recorded symlink (or a file) is
  refused, so no write can follow a link, whatever the order of the entries;
* a hard link must name a regular file this stream wrote before (never a symlink, never
  outside);
* device nodes, FIFOs and unknown entry types are skipped, each named in one warning line;
* setuid, setgid and sticky bits are dropped; files belong to the invoking user unless the
  guest's owners are asked for (``keep_owners``, ``lab cp -a``);
* the stream may not be longer than ``limit`` bytes (what the guest announced), must end with
  tar's end-of-archive block, and a metadata record (long name, pax) is at most 64 KiB.

Folders stay writable while they fill; their modes and times are applied by
:meth:`Unpacker.finish_folders` once the tree is in its place (a folder without write
permission could not be moved into another one).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from minivm.errors import MinivmError
from minivm.textsafe import shown

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
MAX_META = 65536  # a long name, a long link name or a pax record set
END_MARKER = BLOCK * 2
# An honest entry costs at most: its header, a long name and a long link name (PATH_MAX each,
# with their own headers), and its data rounded up to whole blocks.
ENTRY_OVERHEAD = BLOCK + 2 * (BLOCK + 4096 + BLOCK)
RECORD = 10240  # tar may pad the stream to a whole record
MAX_ID = 0xFFFFFFFE
MAX_TIME = 1 << 36  # beyond the year 4000

REGULAR = (b"0", b"\0", b"7")
HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, FOLDER, FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
LONGNAME, LONGLINK, PAX, PAX_GLOBAL = b"L", b"K", b"x", b"g"
SPECIAL = {CHARDEV: "a character device", BLOCKDEV: "a block device", FIFO: "a FIFO"}

Rel = tuple[str, ...]


def stream_bound(file_sizes: list[int], entries: int) -> int:
    """The most bytes an honest tar of ``entries`` entries with these file sizes can take."""
    data = sum(-(-size // BLOCK) * BLOCK for size in file_sizes)
    return data + entries * ENTRY_OVERHEAD + END_MARKER + RECORD


@dataclass
class _Header:
    name: str
    kind: bytes
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    linkname: str


@dataclass
class _Folder:
    mode: int
    mtime: int | None
    owner: tuple[int, int] | None


@dataclass
class Unpacker:
    """Feed it the stream (:meth:`feed`), then :meth:`close` it; see the module's rules.

    ``root`` is an empty folder the host made; ``what`` names the guest in messages; ``warn``
    gets one line per skipped entry.
    """

    root: Path
    what: str
    limit: int
    warn: Callable[[str], None]
    keep_owners: bool = False
    source: str = ""  # the guest's path, before entry names in warnings
    received: int = 0
    root_mode: int | None = None  # the stream's "." entry
    _buf: bytearray = field(default_factory=bytearray)
    _left: int = 0  # data bytes of the current entry still to come
    _pad: int = 0
    _fd: int | None = None
    _meta: bytearray | None = None
    _entry: _Header | None = None
    _ended: bool = False
    _long: dict[str, str] = field(default_factory=dict)  # pending 'path'/'linkpath' overrides
    _pax: dict[str, str] = field(default_factory=dict)
    _kinds: dict[Rel, str] = field(default_factory=dict)  # what stands at a path: d, f, l
    _links: dict[Rel, str] = field(default_factory=dict)  # symlinks made at the end
    _folders: dict[Rel, _Folder] = field(default_factory=dict)
    _link_owners: dict[Rel, tuple[int, int]] = field(default_factory=dict)

    # --- the stream -----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        try:
            self._feed(data)
        except OSError as e:
            self._abort()
            raise MinivmError(f"{self.what}: unpacking failed: {e.strerror}; nothing was "
                              "copied") from e

    def _feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            self._abort()
            raise MinivmError(f"{self.what}: the tar stream is longer than the "
                              f"{self.limit} bytes announced; nothing was copied",
                              hint="a file grew while it was copied, or the guest is hostile")
        view = memoryview(data)
        while view:
            if self._ended:
                return  # what follows the end of the archive (zeros, padding) is ignored
            if self._left:
                view = self._data(view)
            elif self._pad:
                step = min(self._pad, len(view))
                self._pad -= step
                view = view[step:]
            else:
                step = min(BLOCK - len(self._buf), len(view))
                self._buf += view[:step]
                view = view[step:]
                if len(self._buf) == BLOCK:
                    block = bytes(self._buf)
                    self._buf.clear()
                    self._header(block)

    def close(self) -> None:
        """The stream ended: it must have been whole. Makes the recorded symlinks."""
        if not self._ended or self._left or self._meta is not None:
            self._abort()
            raise MinivmError(f"{self.what}: the tar stream ended early (truncated); nothing "
                              "was copied")
        try:
            for rel, target in self._links.items():
                path = self._path(rel)
                os.symlink(target, path)
                if self.keep_owners and (owner := self._link_owners.get(rel)):
                    os.lchown(path, *owner)
        except OSError as e:
            raise MinivmError(f"{self.what}: unpacking failed: {e.strerror}; nothing was "
                              "copied") from e

    def finish_folders(self, base: Path, *, with_root: bool) -> None:
        """Give the folders under ``base`` (where the tree now is) their modes, owners and
        times, deepest first; the root's own only ``with_root``."""
        for rel in sorted(self._folders, key=len, reverse=True):
            if not rel and not with_root:
                continue
            folder = self._folders[rel]
            path = base.joinpath(*rel)
            if folder.owner:
                os.lchown(path, *folder.owner)
            os.chmod(path, folder.mode)  # a real folder: the tree was placed without links
            if folder.mtime is not None:
                os.utime(path, (folder.mtime, folder.mtime), follow_symlinks=False)

    # --- entries --------------------------------------------------------------------------

    def _header(self, block: bytes) -> None:
        if block == ZERO_BLOCK:
            self._ended = True
            return
        header = self._parse(block)
        if header.kind in (LONGNAME, LONGLINK, PAX, PAX_GLOBAL):
            if header.size > MAX_META:
                self._refuse(header.name, f"a metadata record of {header.size} bytes")
            self._entry, self._meta = header, bytearray()
            self._expect(header.size)
            if not header.size:
                self._meta_done()
            return
        self._entry = header
        self._start(header)
        self._expect(header.size)  # data of entries that are not files is skipped
        if not self._left:
            self._entry_done()

    def _expect(self, size: int) -> None:
        self._left = size
        self._pad = -size % BLOCK

    def _data(self, view: memoryview) -> memoryview:
        step = min(self._left, len(view))
        chunk, rest = view[:step], view[step:]
        if self._meta is not None:
            self._meta += chunk
        elif self._fd is not None:
            while chunk:
                chunk = chunk[os.write(self._fd, chunk):]
        self._left -= step
        if not self._left:
            if self._meta is not None:
                self._meta_done()
            else:
                self._entry_done()
        return rest

    def _meta_done(self) -> None:
        assert self._entry is not None and self._meta is not None
        kind, data = self._entry.kind, bytes(self._meta)
        self._meta = None
        if kind == LONGNAME:
            self._long["path"] = os.fsdecode(data.split(b"\0", 1)[0])
        elif kind == LONGLINK:
            self._long["linkpath"] = os.fsdecode(data.split(b"\0", 1)[0])
        elif kind == PAX:
            self._pax = _pax_records(data, self.what)
        self._entry = None

    def _start(self, h: _Header) -> None:
        """Act on an entry's header; a regular file's data follows into ``self._fd``."""
        rel = self._relative(h.name)
        if h.kind in SPECIAL:
            self.warn(f"{self.what}: skipped {self._shown(rel)}: {SPECIAL[h.kind]} (device "
                      "nodes and FIFOs are not copied)")
            return
        if h.kind == FOLDER:
            if rel:
                self._parents(rel, h.name)
                if self._kinds.get(rel, "d") != "d":
                    self._refuse(h.name, "the stream names it twice")
                if rel not in self._kinds:
                    os.mkdir(self._path(rel), 0o700)
                    self._kinds[rel] = "d"
            else:
                self.root_mode = h.mode & 0o777
            self._folders[rel] = _Folder(h.mode & 0o777, h.mtime, self._owner(h))
            return
        if not rel:
            self._refuse(h.name, "not a folder, yet named as the destination itself")
        if h.kind not in (*REGULAR, HARDLINK, SYMLINK):
            self.warn(f"{self.what}: skipped {self._shown(rel)}: an unsupported tar entry "
                      f"type {h.kind!r}")
            return
        self._parents(rel, h.name)
        self._clear(rel, h.name)
        path = self._path(rel)
        if h.kind == SYMLINK:
            self._links[rel] = h.linkname
            self._kinds[rel] = "l"
            if self.keep_owners:
                self._link_owners[rel] = (h.uid, h.gid)
        elif h.kind == HARDLINK:
            target = self._relative(h.linkname, of=h.name)
            if self._kinds.get(target) != "f":
                self._refuse(h.name, f"a hard link to {shown(h.linkname)}, which is not a "
                                     "file this copy wrote")
            os.link(self._path(target), path, follow_symlinks=False)
            self._kinds[rel] = "f"
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                               | os.O_CLOEXEC, 0o600)
            self._kinds[rel] = "f"

    def _entry_done(self) -> None:
        h, fd = self._entry, self._fd
        self._entry, self._fd = None, None
        if fd is None or h is None:
            return
        try:
            if (owner := self._owner(h)) is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, h.mode & 0o777)
            os.utime(fd, (h.mtime, h.mtime))
        finally:
            os.close(fd)

    def _owner(self, h: _Header) -> tuple[int, int] | None:
        return (h.uid, h.gid) if self.keep_owners else None

    # --- paths ----------------------------------------------------------------------------

    def _relative(self, name: str, *, of: str | None = None) -> Rel:
        """A member name as path parts under the root; refused when it could lead out."""
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if name.startswith("/") or ".." in parts:
            self._refuse(of or name, f"the name {shown(name)} leads outside the destination")
        return parts

    def _parents(self, rel: Rel, name: str) -> None:
        """Make the folders above ``rel``; refused when one is a symlink or a file."""
        for depth in range(1, len(rel)):
            above = rel[:depth]
            kind = self._kinds.get(above)
            if kind == "l":
                self._refuse(name, f"it goes through the symlink {shown('/'.join(above))}")
            if kind == "f":
                self._refuse(name, f"it goes through the file {shown('/'.join(above))}")
            if kind is None:  # a folder the stream did not list: plain, never re-moded
                os.mkdir(self._path(above), 0o755)
                self._kinds[above] = "d"

    def _clear(self, rel: Rel, name: str) -> None:
        """A name is given once (an honest tar of a tree never repeats one)."""
        if rel in self._kinds:
            self._refuse(name, "the stream names it twice")

    def _path(self, rel: Rel) -> str:
        return os.path.join(self.root, *rel)

    def _shown(self, rel: Rel) -> str:
        return shown(posixpath.join(self.source, *rel) if self.source else "/".join(rel))

    # --- failing --------------------------------------------------------------------------

    def _refuse(self, name: str, why: str) -> None:
        self._abort()
        raise MinivmError(f"{self.what}: refused the tar entry {shown(name)}: {why}; nothing "
                          "was copied", hint="the guest sent a hostile or broken tar stream")

    def _abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- parsing --------------------------------------------------------------------------

    def _parse(self, block: bytes) -> _Header:
        stored = _number(block[148:156], self.what)
        computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if stored != computed:
            raise MinivmError(f"{self.what}: the tar stream is malformed (a header's checksum "
                              "is wrong); nothing was copied")
        name = _text(block[0:100])
        if block[257:263] == b"ustar\0" and (prefix := _text(block[345:500])):
            name = f"{prefix}/{name}"
        h = _Header(name=name, kind=block[156:157], size=_number(block[124:136], self.what),
                    mode=_number(block[100:108], self.what),
                    uid=_number(block[108:116], self.what),
                    gid=_number(block[116:124], self.what),
                    mtime=_number(block[136:148], self.what), linkname=_text(block[157:257]))
        if h.kind in (LONGNAME, LONGLINK, PAX, PAX_GLOBAL):
            return h
        h.name = self._long.pop("path", "") or h.name
        h.linkname = self._long.pop("linkpath", "") or h.linkname
        pax, self._pax = self._pax, {}
        h.name = pax.get("path", h.name)
        h.linkname = pax.get("linkpath", h.linkname)
        for key in ("size", "uid", "gid", "mtime"):
            if key in pax:
                value = pax[key].split(".", 1)[0]
                if not value.isdigit():
                    raise MinivmError(f"{self.what}: the tar stream is malformed (pax {key} "
                                      f"{shown(pax[key])}); nothing was copied")
                setattr(h, key, int(value))
        if h.uid > MAX_ID or h.gid > MAX_ID or h.mtime > MAX_TIME:
            raise MinivmError(f"{self.what}: the tar stream is malformed (an owner or a time "
                              "out of range); nothing was copied")
        return h


def _text(field: bytes) -> str:
    return os.fsdecode(field.split(b"\0", 1)[0])


def _number(field: bytes, what: str) -> int:
    """A numeric header field: octal text, or base-256 (GNU) when the first bit is set."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise MinivmError(f"{what}: the tar stream is malformed (a negative number); "
                              "nothing was copied")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise MinivmError(f"{what}: the tar stream is malformed (the number "
                          f"{shown(os.fsdecode(text))}); nothing was copied") from None


def _pax_records(data: bytes, what: str) -> dict[str, str]:
    """``LENGTH KEY=VALUE\\n`` records."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        length = data[pos:space]
        if space < 0 or not length.isdigit() or int(length) <= space - pos + 1 \
                or pos + int(length) > len(data) or data[pos + int(length) - 1] != 0x0A:
            raise MinivmError(f"{what}: the tar stream is malformed (a pax record); nothing "
                              "was copied")
        key, eq, value = data[space + 1:pos + int(length) - 1].partition(b"=")
        if eq:
            records[os.fsdecode(key)] = os.fsdecode(value)
        pos += int(length)
    return records

"""Tar streams a hostile guest sends to `lab cp`, and a canary tree that must survive them.

Each attack aims at the canary (outside the destination) by absolute name, by `..`, through a
symlink or a hard link, or abuses what an honest tar carries (setuid bits, device nodes,
FIFOs), or lies about its length. The same streams feed the unpacker directly (fast unit
tests) and a real MiniVM whose toolbox `tar` was replaced (the hostile-guest suite).
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.imagefactory import Member, layer_tar, member


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644,
          link: str = "", devmajor: int = 0, devminor: int = 0) -> Member:
    info, data = member(name, data, kind=kind, mode=mode, linkname=link, uid=4242,
                        mtime=1_700_000_000)
    info.gid, info.devmajor, info.devminor = 4242, devmajor, devminor
    return info, data


def stream(*entries: Member, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """A tar stream holding ``entries`` in this order, as the guest's tar writes (GNU)."""
    return layer_tar(entries, fmt)


def make_canary(folder: Path) -> Path:
    """A small tree of files, a folder and modes that an attack would change."""
    (folder / "dir").mkdir(parents=True)
    (folder / "file").write_text("canary\n")
    (folder / "secret").write_text("do not read\n")
    (folder / "secret").chmod(0o600)
    (folder / "dir" / "inner").write_text("inner\n")
    (folder / "dir").chmod(0o755)
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under ``folder`` (itself included) with its mode and bytes or link target."""
    found: dict[str, tuple[int, bytes]] = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = path.lstat()
        body = (os.readlink(path).encode() if stat.S_ISLNK(st.st_mode) else
                path.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
        found[str(path.relative_to(folder))] = (st.st_mode, body)
    return found


@dataclass(frozen=True)
class Attack:
    """A hostile stream; ``refused``: the copy must fail (else it succeeds, defused)."""

    name: str
    build: Callable[[Path], bytes]  # the canary's path -> the stream
    refused: bool = True
    warnings: int = 0  # lines naming skipped entries


ATTACKS = [
    Attack("symlink-then-file", lambda c: stream(
        entry("x", tarfile.SYMTYPE, link=str(c / "file")),
        entry("x", data=b"pwned\n"))),
    Attack("folder-through-symlink", lambda c: stream(
        entry("d", tarfile.SYMTYPE, link=str(c / "dir")),
        entry("d", tarfile.DIRTYPE, mode=0o777),
        entry("d/inner", data=b"pwned\n"))),
    Attack("file-below-symlink", lambda c: stream(
        entry("d", tarfile.SYMTYPE, link=str(c)),
        entry("d/file", data=b"pwned\n"))),
    Attack("hard-link-through-symlink", lambda c: stream(
        entry("l", tarfile.SYMTYPE, link=str(c)),
        entry("h", tarfile.LNKTYPE, link="l/secret"),
        entry("h", data=b"pwned\n"))),
    Attack("hard-link-to-a-symlink", lambda c: stream(
        entry("s", tarfile.SYMTYPE, link=str(c / "file")),
        entry("h", tarfile.LNKTYPE, link="s"))),
    Attack("hard-link-absolute", lambda c: stream(
        entry("h", tarfile.LNKTYPE, link=str(c / "secret")))),
    Attack("absolute-name", lambda c: stream(entry(str(c / "file"), data=b"pwned\n"))),
    Attack("dotdot-name", lambda c: stream(
        entry("a/" + "../" * 12 + str(c / "file"), data=b"pwned\n"))),
    Attack("pax-absolute-name", lambda c: stream(
        entry(str(c / "file") + "/" + "x" * 120, data=b"pwned\n"), fmt=tarfile.PAX_FORMAT)),
    Attack("setuid", lambda c: stream(entry("tool", data=b"#!/bin/sh\n", mode=0o6755),
                                      entry("sticky", tarfile.DIRTYPE, mode=0o1777)),
           refused=False),
    Attack("device-nodes", lambda c: stream(
        entry("null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        entry("disk", tarfile.BLKTYPE, mode=0o666, devmajor=8, devminor=0),
        entry("ok", data=b"kept\n")), refused=False, warnings=2),
    Attack("fifo", lambda c: stream(entry("pipe", tarfile.FIFOTYPE), entry("ok", data=b"kept\n")),
           refused=False, warnings=1),
    Attack("longer-than-announced", lambda c: stream(entry("big", data=bytes(4 << 20)))),
    Attack("truncated", lambda c: stream(entry("a", data=os.urandom(100_000)))[:60_000]),
    Attack("truncated-at-a-header", lambda c: stream(entry("a", data=b"x" * 512))[:1024]),
]

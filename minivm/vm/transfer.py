"""Copying files and folders into and out of a running MiniVM over its control channel.

Files go as they are (``put``/``get``: binary-safe, the mode kept); folders go as a tar stream
that the toolbox's ``tar`` (``/.minivm/bin/tar``, in every image) packs or unpacks in the guest.
The semantics are ``docker cp``'s: a destination that is an existing folder receives the source
under its own name (merged with what is there), ``SRC/.`` copies a folder's contents, a folder
and a non-folder never replace each other; else the destination is the new name.

Copying out, the guest is not trusted (root there can replace ``tar``): a file may not differ
from the size it announced, a folder's stream may not outgrow the bound its listing gives, both
must fit the destination's free space, and the stream is unpacked by :mod:`minivm.vm.untar`
into a staging folder beside the destination, then moved in. Nothing appears before it is
whole and a failed or interrupted copy (Ctrl-C included) leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from minivm.errors import MinivmError
from minivm.fsutil import remove
from minivm.textsafe import shown
from minivm.vm import untar
from minivm.vm.control import Channel, Stat

TAR = "/.minivm/bin/tar"
MKDIR = "/.minivm/bin/mkdir"
LS = "/.minivm/bin/ls"
ROOT = "0"  # copies are made as root, as docker cp does


def copy_in(ch: Channel, local: Path, guest_path: str) -> str:
    """Copy the host's ``local`` (file or folder) to ``guest_path``; returns the guest path."""
    if not local.exists():
        raise MinivmError(f"{local} does not exist")
    name = local.resolve().name
    if local.is_file():
        with local.open("rb") as f:
            return ch.put(f, guest_path, name, local.stat().st_mode & 0o7777)
    if not local.is_dir():
        raise MinivmError(f"{local} is neither a file nor a folder")
    st = ch.stat_path(guest_path)
    target = posixpath.join(guest_path, name) if st and st.is_dir else guest_path
    if st and not st.is_dir:
        raise MinivmError(f"{ch.what}: {guest_path} exists and is not a folder")
    _guest_run(ch, [MKDIR, "-p", target], f"creating {target}")
    read_end, write_end = os.pipe()
    errors: list[BaseException] = []

    def pack() -> None:
        try:
            with os.fdopen(write_end, "wb") as pipe, tarfile.open(fileobj=pipe, mode="w|",
                                                                  format=tarfile.PAX_FORMAT) as t:
                t.add(local, arcname=".")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=pack, daemon=True)
    thread.start()
    try:
        with os.fdopen(read_end, "rb") as stdin:
            _guest_run(ch, [TAR, "-C", target, "-xf", "-"], f"unpacking into {target}",
                       stdin=stdin)
    finally:
        thread.join()
    if errors and not isinstance(errors[0], BrokenPipeError):
        raise MinivmError(f"reading {local} failed: {errors[0]}")
    return target


def copy_out(ch: Channel, guest_path: str, local: str | Path, *, archive: bool = False,
             warn: Callable[[str], None] = lambda line: None) -> Path:
    """Copy the guest's ``guest_path`` (file or folder) to the host's ``local``; returns the
    host path written. See the module's docstring for the rules; ``warn`` gets one line per
    entry skipped (device nodes, FIFOs)."""
    st = ch.stat_path(guest_path)
    if st is None:
        raise MinivmError(f"{ch.what}: {shown(guest_path)} does not exist")
    if not (st.is_dir or st.is_file):
        raise MinivmError(f"{ch.what}: {shown(guest_path)} is {st.kind}: only files and "
                          "folders are copied")
    dest = Path(local)
    contents = guest_path.endswith("/.")
    name = posixpath.basename(posixpath.normpath(guest_path)) if guest_path.strip("/") else ""
    if str(local).endswith("/") and not dest.is_dir():
        raise MinivmError(f"{dest} is not an existing folder",
                          hint="create it first, or name the new file without a final /")
    if st.is_dir:
        if dest.exists() and not dest.is_dir():
            raise MinivmError(f"cannot copy the folder {ch.what}:{shown(guest_path)} onto the "
                              f"file {dest}")
        target = dest / name if dest.is_dir() and not contents and name not in ("", ".") \
            else dest
    else:
        target = dest / name if dest.is_dir() else dest
    if not target.parent.is_dir():
        raise MinivmError(f"{target.parent} is not a folder")
    if target != dest and target.is_symlink() and st.is_dir:  # a link is never followed
        raise MinivmError(f"cannot overwrite the symlink {target} with the folder "
                          f"{ch.what}:{shown(guest_path)}; nothing was copied")
    if st.is_file and not archive:
        _get_file(ch, guest_path, st, target)
    else:
        _unpack_tree(ch, guest_path, st, target, archive=archive, warn=warn,
                     with_root=not (contents and target == dest))
    return target


def _get_file(ch: Channel, guest_path: str, st: Stat, target: Path) -> None:
    """A regular file by GET: at most the size the guest announced, renamed in when whole."""
    if target.is_dir() and not target.is_symlink():
        raise MinivmError(f"cannot overwrite the folder {target} with the file "
                          f"{ch.what}:{shown(guest_path)}")
    _check_room(target.parent, st.size, ch.what, guest_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".minivm-cp", dir=target.parent)
    try:
        got = 0
        with os.fdopen(fd, "wb") as f:
            def sink(data: bytes) -> None:
                nonlocal got
                got += len(data)
                if got > st.size:
                    raise MinivmError(f"{ch.what}: sent more of {shown(guest_path)} than the "
                                      f"{st.size} bytes announced; nothing was copied",
                                      hint="the file grew while it was copied, or the guest "
                                           "is hostile")
                f.write(data)

            sent = ch.get(guest_path, sink)
            if got != sent.size or got != st.size:
                raise MinivmError(f"{ch.what}: sent {got} bytes of {shown(guest_path)}, not the "
                                  f"{st.size} announced; nothing was copied",
                                  hint="the file changed while it was copied: try again")
            os.fchmod(f.fileno(), sent.mode & 0o777)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _unpack_tree(ch: Channel, guest_path: str, st: Stat, target: Path, *, archive: bool,
                 warn: Callable[[str], None], with_root: bool) -> None:
    """A folder (or, with ``archive``, a file) as a tar stream, unpacked by :mod:`untar` into
    a staging folder beside ``target`` and then moved in (merged into a folder that exists)."""
    merge = target.is_dir()
    if st.is_dir:
        limit = _announced(ch, guest_path)
        pack = [TAR, "-C", guest_path, "-cf", "-", "."]
    else:
        limit = untar.stream_bound([st.size], 1)
        pack = [TAR, "-C", posixpath.dirname(guest_path) or "/", "-cf", "-",
                posixpath.basename(guest_path)]
    home = target if merge else target.parent
    _check_room(home, limit, ch.what, guest_path)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".minivm-cp", dir=home))
    try:
        unpacker = untar.Unpacker(root=staging, what=ch.what, limit=limit, warn=warn,
                                  keep_owners=archive, source=guest_path if st.is_dir else
                                  posixpath.dirname(guest_path))
        _guest_run(ch, pack, f"packing {shown(guest_path)}", stdout=unpacker.feed)
        unpacker.close()
        tree = staging
        if not st.is_dir:
            tree = staging / posixpath.basename(guest_path)
            if not tree.is_file() or tree.is_symlink() or len(os.listdir(staging)) != 1:
                raise MinivmError(f"{ch.what}: the tar stream of the file "
                                  f"{shown(guest_path)} held something else; nothing was copied")
            if target.is_dir() and not target.is_symlink():
                raise MinivmError(f"cannot overwrite the folder {target} with the file "
                                  f"{ch.what}:{shown(guest_path)}")
            os.replace(tree, target)
            return
        if merge:
            merge_tree(staging, target)
        else:
            os.chmod(staging, 0o700)
            os.rename(staging, target)
        unpacker.finish_folders(target, with_root=with_root or not merge)
    finally:
        remove(staging)


def merge_tree(source: Path, target: Path) -> None:
    """Move ``source``'s entries into the existing folder ``target``, as ``docker cp`` merges:
    a folder meets a folder and is merged, anything else replaces what has its name (a link
    itself, never what it points to); a folder and a non-folder never replace each other. The
    conflicts are looked for before anything moves. No link in ``target`` is followed."""
    conflicts = list(_conflicts(source, target))
    if conflicts:
        src, dst = conflicts[0]
        kind = "folder" if src.is_dir() and not src.is_symlink() else "non-folder"
        raise MinivmError(f"cannot overwrite {dst} with a {kind}; nothing was copied",
                          hint="docker cp refuses the same: remove it first")
    _move_in(source, target)


def _conflicts(source: Path, target: Path) -> Iterator[tuple[Path, Path]]:
    with os.scandir(source) as entries:
        for entry in entries:
            dst = target / entry.name
            try:
                there = os.lstat(dst)
            except FileNotFoundError:
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir != stat.S_ISDIR(there.st_mode):
                yield Path(entry.path), dst
            elif is_dir:
                yield from _conflicts(Path(entry.path), dst)


def _move_in(source: Path, target: Path) -> None:
    with os.scandir(source) as entries:
        for entry in entries:
            dst = target / entry.name
            if entry.is_dir(follow_symlinks=False) and os.path.isdir(dst) \
                    and not os.path.islink(dst):
                _move_in(Path(entry.path), dst)
            elif entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, 0o700)  # movable: its own mode comes last
                os.rename(entry.path, dst)
            else:
                os.replace(entry.path, dst)


def _announced(ch: Channel, guest_path: str) -> int:
    """What a folder's tar stream may weigh at most, from a listing of the guest's tree."""
    out = _Listing()
    _guest_run(ch, [LS, "-lRan", posixpath.join(guest_path, ".")], f"listing {shown(guest_path)}",
               stdout=out.feed)
    out.feed(b"\n")
    if out.too_long:
        raise MinivmError(f"{ch.what}: the listing of {shown(guest_path)} is too long",
                          hint="copy its sub-folders one by one")
    return untar.stream_bound(out.sizes, out.entries)


class _Listing:
    """Sizes of regular files and the number of entries out of ``ls -lRan``'s output (text a
    guest wrote: anything that is not an entry line is ignored, and its length bounded)."""

    MAX = 256 << 20
    ENTRY = re.compile(rb"([-dlcbps])[-rwxsStT]{9}\S*\s+\d+\s+\d+\s+\d+\s+(\d+)?")

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.entries = 0
        self.length = 0
        self.too_long = False
        self._tail = b""

    def feed(self, data: bytes) -> None:
        self.length += len(data)
        if self.length > self.MAX:
            self.too_long = True
            return
        *lines, self._tail = (self._tail + data).split(b"\n")
        for line in lines:
            m = self.ENTRY.match(line)
            if m:
                self.entries += 1
                if m[1] == b"-" and m[2]:
                    self.sizes.append(int(m[2]))


def _check_room(folder: Path, size: int, what: str, guest_path: str) -> None:
    free = shutil.disk_usage(folder).free
    if size > free:
        raise MinivmError(f"{what}:{shown(guest_path)} may need {size} bytes; {folder} has "
                          f"{free} free; nothing was copied")


def _guest_run(ch: Channel, argv: list[str], what: str, **streams: object) -> None:
    """Run a toolbox command as root; a non-zero exit is an error naming its last line."""
    err = bytearray()
    code = ch.exec(argv, user=ROOT, workdir="/", stderr=_capped(err), **streams)  # type: ignore[arg-type]
    if code:
        lines = err.decode(errors="replace").strip().splitlines()
        raise MinivmError(f"{ch.what}: {what} failed: "
                          f"{shown(lines[-1]) if lines else f'exit status {code}'}")


def _capped(buffer: bytearray, limit: int = 65536) -> Callable[[bytes], None]:
    """A sink keeping the last ``limit`` bytes a guest wrote (its error text)."""
    def add(data: bytes) -> None:
        buffer.extend(data)
        del buffer[:-limit]
    return add

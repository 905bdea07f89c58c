"""Copying files and folders into and out of a running MiniVM over its control channel.

Files go as they are (``put``/``get``: binary-safe, the mode kept); folders go as a tar stream
that the toolbox's ``tar`` (``/.minivm/bin/tar``, in every image) packs or unpacks in the guest.
The semantics are ``docker cp``'s: a destination that is an existing folder receives the source
under its own name, else the destination is the new name. On the host, nothing appears before
it is whole: a temporary name beside the destination, renamed at the end (also on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tarfile
import threading
from pathlib import Path

from minivm.errors import MinivmError
from minivm.fsutil import atomic_path
from minivm.vm.control import Channel

TAR = "/.minivm/bin/tar"
MKDIR = "/.minivm/bin/mkdir"
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


def copy_out(ch: Channel, guest_path: str, local: Path) -> Path:
    """Copy the guest's ``guest_path`` (file or folder) to the host's ``local``; returns the
    host path written."""
    st = ch.stat_path(guest_path)
    if st is None:
        raise MinivmError(f"{ch.what}: {guest_path} does not exist")
    name = posixpath.basename(guest_path.rstrip("/")) or "root"
    target = local / name if local.is_dir() else local
    if not target.parent.is_dir():
        raise MinivmError(f"{target.parent} is not a folder")
    if st.is_dir:
        with atomic_path(target) as tmp:
            tmp.mkdir()
            _unpack_from_guest(ch, guest_path, tmp)
            os.chmod(tmp, st.mode & 0o7777)
        return target
    with atomic_path(target) as tmp:
        with tmp.open("wb") as f:
            got = ch.get(guest_path, f.write)
        os.chmod(tmp, got.mode & 0o7777)
    return target


def _unpack_from_guest(ch: Channel, guest_path: str, dest: Path) -> None:
    read_end, write_end = os.pipe()
    errors: list[BaseException] = []
    root = dest.resolve()

    def safe(member: tarfile.TarInfo) -> None:
        name = Path(member.name)
        parts = [p for p in name.parts if p != "."]
        inside = root.joinpath(*parts[:-1]).resolve()  # no symlink leads out
        if name.is_absolute() or ".." in parts or not inside.is_relative_to(root):
            raise MinivmError(f"{ch.what}: refusing the tar entry {member.name!r} (outside "
                              "the destination)")
        if member.islnk() and (Path(member.linkname).is_absolute()
                               or ".." in Path(member.linkname).parts):
            raise MinivmError(f"{ch.what}: refusing the hard link {member.name!r}")

    def unpack() -> None:
        try:
            folders: list[tuple[Path, int]] = []
            with os.fdopen(read_end, "rb") as pipe, tarfile.open(fileobj=pipe, mode="r|") as t:
                for member in t:
                    safe(member)
                    if member.isdir():  # writable while it fills; its mode comes last
                        folders.append((dest / member.name, member.mode))
                        member.mode |= 0o700
                    t.extract(member, dest)
            for folder, mode in reversed(folders):
                os.chmod(folder, mode & 0o7777)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=unpack, daemon=True)
    thread.start()
    pipe = os.fdopen(write_end, "wb")
    try:
        _guest_run(ch, [TAR, "-C", guest_path, "-cf", "-", "."], f"packing {guest_path}",
                   stdout=pipe.write)
    finally:
        with contextlib.suppress(BrokenPipeError):
            pipe.close()
        thread.join()
    if errors:
        e = errors[0]
        raise e if isinstance(e, MinivmError) else MinivmError(f"unpacking failed: {e}")


def _guest_run(ch: Channel, argv: list[str], what: str, **streams: object) -> None:
    """Run a toolbox command as root; a non-zero exit is an error naming its last line."""
    err = bytearray()
    code = ch.exec(argv, user=ROOT, workdir="/", stderr=err.extend, **streams)  # type: ignore[arg-type]
    if code:
        lines = err.decode(errors="replace").strip().splitlines()
        raise MinivmError(f"{ch.what}: {what} failed: "
                          f"{lines[-1] if lines else f'exit status {code}'}")

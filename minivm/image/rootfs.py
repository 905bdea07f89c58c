"""The root filesystem's content: the image's entries, cleaned, plus what minivm injects.

This is the one seam between an image and its VM: the init program and its defaults
(from ``init/``, see :mod:`minivm.image.inject`) and the image config the init reads
(``/.minivm/config`` and ``/.minivm/image.json``).
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from minivm.errors import MinivmError
from minivm.image.config import SHADOWED, ImageConfig, is_container_artifact
from minivm.image.tarstream import Entry, SymlinkGuard

MINIVM_DIR = ".minivm"
# Folders the init mounts on or writes to: created when an image lacks them (FROM scratch).
STANDARD_DIRS = {"dev": 0o755, "proc": 0o755, "sys": 0o755, "tmp": 0o1777, "run": 0o755,
                 "etc": 0o755}
MTAB = ("etc/mtab", "../proc/self/mounts")
# What a shell on the console types to stop or restart the VM. The toolbox's (busybox) signal
# PID 1; a login shell (getty) has no toolbox in its PATH, so images without their own (Debian
# without systemd) get links to them in /usr/sbin.
POWER_COMMANDS = ("poweroff", "reboot", "halt")
COMMAND_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")


@dataclass
class RootfsStats:
    """What went into the filesystem: entry times (for timestamp fixing) and sizes."""

    mtimes: dict[str, int] = field(default_factory=dict)
    data_bytes: int = 0
    newest: int = 0

    @property
    def entries(self) -> int:
        return len(self.mtimes)


def run_config(config: ImageConfig, *, name: str) -> str:
    """The ``/.minivm/config`` text: one ``KEY VALUE`` record a line, lists as repeated keys.

    Newlines and backslashes are escaped; a NUL cannot be carried (the init reads the file as
    a C string: everything after it would be lost, the image's USER with it), so a value
    holding one is refused, naming the field."""
    fields = [("name", "name", name)]
    fields += [("entrypoint", f"Entrypoint[{i}]", a) for i, a in enumerate(config.entrypoint)]
    fields += [("cmd", f"Cmd[{i}]", a) for i, a in enumerate(config.cmd)]
    fields += [("env", f"Env[{i}]", item) for i, item in enumerate(config.env)]
    if config.workdir:
        fields.append(("workdir", "WorkingDir", config.workdir))
    if config.user:
        fields.append(("user", "User", config.user))
    for _, field_name, value in fields:
        if "\0" in value:
            raise MinivmError(f"image {name}: config field {field_name} holds a NUL byte, which "
                              "the VM's init cannot carry (later settings, USER among them, "
                              "would be lost)", hint="remove it from the image's config")
    return "".join(f"{key} {_escape(value)}\n" for key, _, value in fields)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def compose(
    entries: Iterable[Entry],
    *,
    config: ImageConfig,
    name: str,
    injection: Path | None,
    stats: RootfsStats,
    from_engine: bool,
    where: str,
    stamp: int,
    shadowed: Callable[[], dict[str, tuple[tarfile.TarInfo, bytes]]] | None = None,
) -> Iterator[Entry]:
    """The image's entries (engine artifacts and any ``/.minivm`` dropped), then the injected
    tree, the config files and missing standard folders. Fills ``stats`` as it goes.

    ``stamp`` (the image's creation time) dates what minivm adds, and no time is later than it:
    the folders the engine touches when it creates a container must not date the disk.
    ``shadowed`` gives the image's own version of the files an engine export shows empty
    (:data:`minivm.image.config.SHADOWED`); they are written at the end.
    """
    guard = SymlinkGuard(where)
    seen: set[str] = set()
    folders: set[str] = set()
    for info, data in entries:
        if not info.name or info.name == MINIVM_DIR or info.name.startswith(MINIVM_DIR + "/"):
            continue
        if from_engine and (is_container_artifact(info) or info.name in SHADOWED):
            continue
        guard.check(info)
        info.mtime = min(info.mtime, stamp)
        _record(stats, info)
        seen.add(info.name)
        if info.isdir():
            folders.add(info.name)
        yield info, data
    extra: list[Entry] = []
    for info, content in (shadowed() if shadowed else {}).values():
        info.mtime = min(info.mtime, stamp)
        seen.add(info.name)
        extra.append((info, io.BytesIO(content)))
    for rel, mode in sorted(STANDARD_DIRS.items()):
        if rel not in seen:
            extra.append((_dir(rel, mode, stamp), None))
    if injection is not None:
        extra += _tree(injection, seen, stamp)
        extra += _power_links(seen, folders, stamp)
    if MTAB[0] not in seen:
        extra.append((_symlink(*MTAB, stamp), None))
    for rel, text in (("config", run_config(config, name=name)),
                      ("image.json", json.dumps(config.to_json(), indent=2, sort_keys=True,
                                                ensure_ascii=False) + "\n")):
        extra.append(_file(f"{MINIVM_DIR}/{rel}", text.encode(), 0o644, stamp))
    for info, data in extra:
        _record(stats, info, update_newest=False)
        seen.add(info.name)
        yield info, data
    stats.mtimes[""] = stamp


def _record(stats: RootfsStats, info: tarfile.TarInfo, *, update_newest: bool = True) -> None:
    mtime = int(info.mtime)
    stats.mtimes[info.name] = mtime
    if info.isreg():
        stats.data_bytes += info.size
    if update_newest:
        stats.newest = max(stats.newest, mtime)


def _tree(root: Path, seen: set[str], stamp: int) -> Iterator[Entry]:
    """The injected tree: ``.minivm/`` always, other paths only where the image has none."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        ours = rel == MINIVM_DIR or rel.startswith(MINIVM_DIR + "/")
        if rel in seen and not ours:
            continue
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if path.is_symlink():
            yield _symlink(rel, os.readlink(path), stamp), None
        elif path.is_dir():
            if rel not in seen:
                yield _dir(rel, mode, stamp), None
        else:
            yield _file(rel, path.read_bytes(), mode, stamp)


def _power_links(seen: set[str], folders: set[str], stamp: int) -> Iterator[Entry]:
    """``/usr/sbin/NAME`` -> the toolbox's, for each power command the image has nowhere."""
    if "usr/sbin" not in folders:
        return
    for name in POWER_COMMANDS:
        if not any(f"{folder}/{name}" in seen for folder in COMMAND_DIRS):
            yield _symlink(f"usr/sbin/{name}", f"/{MINIVM_DIR}/bin/{name}", stamp), None


def _header(rel: str, kind: bytes, mode: int, stamp: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.type, info.mode, info.mtime = kind, mode, stamp
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _dir(rel: str, mode: int, stamp: int) -> tarfile.TarInfo:
    return _header(rel, tarfile.DIRTYPE, mode, stamp)


def _symlink(rel: str, target: str, stamp: int) -> tarfile.TarInfo:
    info = _header(rel, tarfile.SYMTYPE, 0o777, stamp)
    info.linkname = target
    return info


def _file(rel: str, data: bytes, mode: int, stamp: int) -> Entry:
    info = _header(rel, tarfile.REGTYPE, mode, stamp)
    info.size = len(data)
    return info, io.BytesIO(data)

"""ext4 root filesystems from tar entries, in compressed QCOW2 files.

Two backends write the same filesystem:

* ``mke2fs``: unpack into a scratch folder (as root, or under ``fakeroot`` for other users),
  then ``mke2fs -d``. Fast, and byte-reproducible.
* ``guestfs``: libguestfs makes the filesystem and unpacks the tar inside its appliance.
  Needs no root and no fakeroot, at the cost of booting the appliance.

Both then set every inode's atime and ctime to its mtime (``debugfs``), so that the result does
not depend on when it was built, and convert to compressed QCOW2 under a temporary name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from minivm.errors import MinivmError
from minivm.fsutil import atomic_path, remove
from minivm.image.tarstream import Entry, read_entries, write_entries
from minivm.kinds import DiskBackend
from minivm.run import run, spawn, which
from minivm.ui import Reporter

BLOCK = 4096
INODE_SIZE = 256
MIB = 1 << 20
MIN_SIZE = 64 * MIB
BACKENDS = tuple(DiskBackend)
SCRATCH_TMPFS = Path("/dev/shm")


@dataclass(frozen=True)
class DiskResult:
    """A written disk: where, which backend wrote it, the filesystem's size."""

    path: Path
    backend: str
    fs_size: int
    content_bytes: int
    entries: int


@dataclass
class _Content:
    """What the entries held, counted as they stream past."""

    mtimes: dict[str, int]
    folders: set[str] = field(default_factory=set)
    data_bytes: int = 0
    blocks: int = 0

    def needed_bytes(self) -> int:
        """Bytes of filesystem the content needs: data, inodes, journal and metadata."""
        inodes = self.inode_count()
        metadata = inodes * INODE_SIZE + self.blocks * BLOCK // 64
        return self.blocks * BLOCK + metadata + _journal_bytes(self.blocks * BLOCK) + 8 * MIB

    def inode_count(self) -> int:
        return max(len(self.mtimes) * 2 + 1024, 4096)


def _journal_bytes(fs_bytes: int) -> int:
    return 16 * MIB if fs_bytes < 1 << 30 else 64 * MIB


def auto_size(content: _Content) -> int:
    """A filesystem size with headroom: half again the content, plus 64 MiB, at least 256 MiB."""
    needed = content.needed_bytes()
    return _round_mib(max(needed * 3 // 2 + 64 * MIB, 256 * MIB))


def _round_mib(n: int) -> int:
    return -(-n // MIB) * MIB


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``300000000``: a size in bytes (K/M/G/T are powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if value and value[-1] in units:
            return int(float(value[:-1]) * units[value[-1]])
        return int(value)
    except ValueError:
        raise MinivmError(f"--size {text!r} is not a size",
                          hint="write it like 512M or 2G") from None


def pick_backend(requested: str = "auto") -> str:
    """The backend to use: ``mke2fs`` when root or fakeroot can run it, else ``guestfs``."""
    if requested not in BACKENDS:
        raise MinivmError(f"unknown disk backend {requested!r}",
                          hint=f"choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return str(requested)
    can_own = os.geteuid() == 0 or shutil.which("fakeroot")
    return "mke2fs" if can_own and shutil.which("mke2fs", path=_SBIN_PATH) else "guestfs"


_SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def write_qcow2(
    source: BinaryIO | Iterable[Entry],
    output: Path,
    *,
    label: str,
    uuid: uuidlib.UUID,
    timestamp: int,
    size: int | None = None,
    backend: str = "auto",
    reporter: Reporter,
) -> DiskResult:
    """Write the tar stream (or entries) ``source`` as an ext4 in a compressed QCOW2 at
    ``output``: whole or not at all."""
    entries = (read_entries(cast(BinaryIO, source), where="tar stream")
               if hasattr(source, "read") else source)
    chosen = pick_backend(backend)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".minivm-", dir=output.parent) as tmp:
        raw = Path(tmp) / "disk.raw"
        writer = _write_mke2fs if chosen == "mke2fs" else _write_guestfs
        content, fs_size = writer(entries, raw, label=label, uuid=uuid, timestamp=timestamp,
                                  size=size, reporter=reporter)
        with reporter.stage("timestamps", "Fixing timestamps for a reproducible disk"):
            _fix_times(raw, content, timestamp)
        with reporter.stage("qcow2", "Compressing to QCOW2"), atomic_path(output) as part:
            _convert(raw, part)
    return DiskResult(output, chosen, fs_size, content.data_bytes, len(content.mtimes))


def _counted(entries: Iterable[Entry], content: _Content) -> Iterator[Entry]:
    for info, data in entries:
        content.mtimes[info.name] = int(info.mtime)
        if info.isdir():
            content.folders.add(info.name)
        if info.isreg():
            content.data_bytes += info.size
            content.blocks += -(-info.size // BLOCK)
        elif info.isdir() or info.issym():
            content.blocks += 1 if info.isdir() or len(info.linkname) >= 60 else 0
        yield info, data


def _check_size(content: _Content, size: int | None) -> int:
    needed = content.needed_bytes()
    if size is None:
        return auto_size(content)
    if size < needed:
        raise MinivmError(
            f"the content needs about {_round_mib(needed) // MIB} MiB, more than "
            f"--size {size // MIB} MiB",
            hint=f"use --size {_round_mib(needed * 11 // 10) // MIB}M or more, or leave --size out",
        )
    return size


def _scratch_parent(fallback: Path) -> Path:
    """Unpack on tmpfs when it has room: faster, and its folder order is reproducible."""
    override = os.environ.get("MINIVM_SCRATCH")
    if override:
        return Path(override)
    try:
        free = shutil.disk_usage(SCRATCH_TMPFS).free
    except OSError:
        return fallback
    return SCRATCH_TMPFS if free >= 4 << 30 and os.access(SCRATCH_TMPFS, os.W_OK) else fallback


def _write_mke2fs(entries: Iterable[Entry], raw: Path, *, label: str, uuid: uuidlib.UUID,
                  timestamp: int, size: int | None, reporter: Reporter) -> tuple[_Content, int]:
    content = _Content(mtimes={})
    rootless = os.geteuid() != 0
    scratch = Path(tempfile.mkdtemp(prefix="minivm-tree-", dir=_scratch_parent(raw.parent)))
    state = raw.parent / "fakeroot.state"
    try:
        tree = scratch / "root"
        tree.mkdir()
        fake = [which("fakeroot"), "-s", str(state), "--"] if rootless else []
        with reporter.stage("unpack", "Unpacking the filesystem tree"
                            + (" (under fakeroot)" if rootless else "")):
            _unpack(_counted(entries, content), tree, fake, reporter)
            os.utime(tree, (timestamp, timestamp))
        fs_size = _check_size(content, size)
        with reporter.stage("mkfs", f"Making ext4 ({fs_size // MIB} MiB) with mke2fs -d"):
            with raw.open("wb") as f:
                f.truncate(fs_size)
            fake = [which("fakeroot"), "-i", str(state), "--"] if rootless else []
            _mkfs(fake + [which("mke2fs")], raw, tree, label=label, uuid=uuid,
                  timestamp=timestamp, inodes=content.inode_count())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        remove(state)
    return content, fs_size


def _unpack(entries: Iterable[Entry], tree: Path, fake: list[str], reporter: Reporter) -> None:
    cmd = fake + [which("tar"), "-x", "-p", "--numeric-owner", "--xattrs",
                  "--xattrs-include=*", "--no-overwrite-dir", "-C", str(tree), "-f", "-"]
    errors: list[bytes] = []
    with spawn(cmd, stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        stdin, stderr = cast(BinaryIO, proc.stdin), proc.stderr
        reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
        reader.start()
        try:
            with reporter.bytes("unpacked") as advance:
                write_entries(_advancing(entries, advance), stdin)
            stdin.close()
        except BrokenPipeError:
            pass
        code = proc.wait()
        reader.join()
    if code != 0:
        _raise_tool_error("unpacking the tree", b"".join(errors), where=tree.parent)


def _advancing(entries: Iterable[Entry], advance: object) -> Iterator[Entry]:
    for info, data in entries:
        if info.isreg():
            advance(info.size)  # type: ignore[operator]
        yield info, data


def _mkfs(cmd: list[str], raw: Path, tree: Path | None, *, label: str, uuid: uuidlib.UUID,
          timestamp: int, inodes: int) -> None:
    argv = cmd + ["-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-I", str(INODE_SIZE),
                  "-L", label, "-U", str(uuid), "-N", str(inodes), "-m", "1",
                  "-E", f"hash_seed={uuid},root_owner=0:0,lazy_itable_init=0"]
    if tree is not None:
        argv += ["-d", str(tree)]
    argv.append(str(raw))
    proc = run(argv, env=_fake_time(timestamp), check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace")
        if tree is not None and "Could not allocate" in message:
            fs_size = raw.stat().st_size
            raise MinivmError(
                f"the content does not fit in a {fs_size // MIB} MiB filesystem",
                hint=f"use --size {_round_mib(fs_size * 3 // 2) // MIB}M or more",
            )
        _raise_tool_error("mke2fs", proc.stderr, where=raw.parent)


def _fake_time(timestamp: int) -> dict[str, str]:
    return {"E2FSPROGS_FAKE_TIME": str(timestamp)}


def _fix_times(raw: Path, content: _Content, timestamp: int) -> None:
    """Set atime and ctime of every written path to its mtime (and the root's to timestamp).

    Folders get their mtime again too: unpacking may have touched it after setting it."""
    lines: list[str] = []
    for name, mtime in sorted(content.mtimes.items()):
        if "\n" in name:
            continue
        path = '"/' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        when = timestamp if not name else mtime
        fields = ("ctime", "atime", "mtime") if name in content.folders else ("ctime", "atime")
        lines.extend(f"sif {path} {field_} @{when}\n" for field_ in fields)
    if "" not in content.mtimes:
        lines.append(f'sif "/" ctime @{timestamp}\nsif "/" atime @{timestamp}\n')
        lines.append(f'sif "/" mtime @{timestamp}\n')
    script = raw.parent / "debugfs.cmds"
    script.write_text("".join(lines), encoding="utf-8", errors="surrogateescape")
    proc = run([which("debugfs"), "-w", "-f", str(script), str(raw)], env=_fake_time(timestamp),
               check=False)
    if proc.returncode != 0:
        _raise_tool_error("debugfs", proc.stderr, where=raw.parent)


def _convert(raw: Path, qcow2: Path) -> None:
    proc = run([which("qemu-img"), "convert", "-c", "-O", "qcow2", "-f", "raw", str(raw),
                str(qcow2)], check=False)
    if proc.returncode != 0:
        _raise_tool_error("qemu-img convert", proc.stderr, where=qcow2.parent)


def _raise_tool_error(step: str, stderr: bytes | None, *, where: Path) -> None:
    text = (stderr or b"").decode(errors="replace")
    if "No space left on device" in text or "ENOSPC" in text:
        free = shutil.disk_usage(where).free // MIB
        raise MinivmError(f"disk full while {step} in {where} ({free} MiB free)",
                          hint="free some space there, or point MINIVM_BUILD_DIR elsewhere")
    tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:] if line.strip())
    raise MinivmError(f"{step} failed: {tail or 'no message'}")


def _write_guestfs(entries: Iterable[Entry], raw: Path, *, label: str, uuid: uuidlib.UUID,
                   timestamp: int, size: int | None, reporter: Reporter) -> tuple[_Content, int]:
    from minivm.image import guestfs_backend

    content = _Content(mtimes={})
    spool = raw.parent / "rootfs.tar"
    with reporter.stage("spool", "Writing the tar stream for libguestfs"), \
            spool.open("wb") as f, reporter.bytes("spooled") as advance:
        write_entries(_advancing(_counted(entries, content), advance), f)
    fs_size = _check_size(content, size)
    with raw.open("wb") as f:
        f.truncate(fs_size)
    with reporter.stage("mkfs", f"Making ext4 ({fs_size // MIB} MiB) inside libguestfs"):
        guestfs_backend.make_filesystem(raw, spool, label=label, uuid=uuid,
                                        inodes=content.inode_count())
    spool.unlink()
    return content, fs_size

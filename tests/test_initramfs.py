"""The cpio newc writer: format, determinism, compression; checked against busybox cpio."""

from __future__ import annotations

import gzip
import lzma
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from minivm.kit import initramfs


def sample(order: list[str] | None = None) -> initramfs.Tree:
    tree = initramfs.Tree()
    items = {
        "init": lambda t: t.file("init", b"#!/bin/sh\necho hi\n", mode=0o755),
        "busybox": lambda t: t.file("bin/busybox", b"\x7fELF" + b"x" * 1001, mode=0o755),
        "sh": lambda t: t.symlink("bin/sh", "busybox"),
        "console": lambda t: t.char_device("dev/console", 5, 1),
        "mod": lambda t: t.file("lib/modules/6.1/kernel/a.ko", b"module"),
        "empty": lambda t: t.dir("newroot"),
    }
    for key in order or list(items):
        items[key](tree)
    return tree


def test_roundtrip_keeps_every_entry():
    entries = initramfs.read_cpio(initramfs.cpio_bytes(sample().entries.values()))
    by_path = {e.path: e for e in entries}
    assert by_path["init"].data == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(by_path["init"].mode) == 0o755
    assert stat.S_ISLNK(by_path["bin/sh"].mode) and by_path["bin/sh"].data == b"busybox"
    assert stat.S_ISCHR(by_path["dev/console"].mode) and by_path["dev/console"].rdev == (5, 1)
    assert stat.S_ISDIR(by_path["lib/modules/6.1/kernel"].mode)  # parents added
    assert [e.path for e in entries] == sorted(by_path)


def test_same_content_any_order_same_bytes():
    one = initramfs.cpio_bytes(sample().entries.values(), mtime=1234)
    other = initramfs.cpio_bytes(
        sample(["mod", "empty", "console", "sh", "busybox", "init"]).entries.values(), mtime=1234)
    assert one == other
    assert initramfs.compress(one, "gzip") == initramfs.compress(other, "gzip")


def test_header_fields_are_fixed():
    data = initramfs.cpio_bytes(sample().entries.values(), mtime=77)
    assert data.startswith(b"070701") and len(data) % 512 == 0
    assert all(entry.path for entry in initramfs.read_cpio(data))  # names parsed back whole
    # ino of the first entry is 1, uid/gid 0, mtime as given
    fields = [int(data[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    assert fields[0] == 1 and fields[2] == 0 and fields[3] == 0 and fields[5] == 77
    assert b"TRAILER!!!" in data[-600:]


def test_gzip_has_no_timestamp_and_xz_uses_crc32():
    raw = initramfs.cpio_bytes(sample().entries.values())
    gz = initramfs.compress(raw, "gzip")
    assert gz[4:8] == b"\0\0\0\0" and gzip.decompress(gz) == raw
    xz = initramfs.compress(raw, "xz")
    assert lzma.decompress(xz) == raw
    assert xz[7] == 0x01  # stream flags: check type CRC32, which the kernel's unxz requires
    with pytest.raises(ValueError):
        initramfs.compress(raw, "bzip9")


@pytest.mark.parametrize("bad", ["", "/", "a/../../etc", "../x"])
def test_bad_paths_are_refused(bad):
    with pytest.raises(ValueError):
        initramfs.Tree().file(bad, b"")


@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox not installed")
def test_busybox_cpio_extracts_it(tmp_path: Path):
    out = tmp_path / "initrd.img"
    size = initramfs.write(sample(), out, compression="gzip")
    assert size == out.stat().st_size
    dest = tmp_path / "x"
    dest.mkdir()
    raw = gzip.decompress(out.read_bytes())
    subprocess.run(["busybox", "cpio", "-i", "-d", "-m"], input=raw, cwd=dest, check=True,
                   capture_output=True)
    assert (dest / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (dest / "init").stat().st_mode & 0o777 == 0o755
    assert (dest / "bin/sh").is_symlink() and (dest / "bin/sh").readlink() == Path("busybox")
    assert (dest / "lib/modules/6.1/kernel/a.ko").read_bytes() == b"module"
    assert (dest / "dev/console").is_char_device()
    listing = subprocess.run(["busybox", "cpio", "-t"], input=raw, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == sorted(listing) and "bin/busybox" in listing


def test_write_is_atomic(tmp_path: Path):
    out = tmp_path / "initrd.img"
    out.write_bytes(b"old")
    with pytest.raises(ValueError):
        initramfs.write(sample(), out, compression="nope")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["initrd.img"]

"""The injected tree is unpacked as built (modes, owners, the guest's absolute symlinks) and
nothing in the archive reaches outside it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from minivm.errors import MinivmError
from minivm.image import inject


def archive(*members: tuple[str, bytes, int, str]) -> io.BytesIO:
    """A tar stream of (name, type, mode, data or link target) members, owned 1234:2345."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind, mode, text in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = kind, mode, 1234, 2345
            data = b""
            if kind == tarfile.SYMTYPE:
                info.linkname = text
            elif kind == tarfile.REGTYPE:
                data = text.encode()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


TREE = (
    (".minivm", tarfile.DIRTYPE, 0o755, ""),
    (".minivm/init", tarfile.REGTYPE, 0o755, "init"),
    (".minivm/bin", tarfile.DIRTYPE, 0o750, ""),
    (".minivm/bin/box", tarfile.REGTYPE, 0o4755, "box"),
    (".minivm/bin/sh", tarfile.SYMTYPE, 0o777, "/.minivm/bin/box"),
    ("etc", tarfile.DIRTYPE, 0o755, ""),
    ("etc/shared", tarfile.REGTYPE, 0o664, "group-writable"),
    ("etc/secret", tarfile.REGTYPE, 0o600, "private"),
)


def test_modes_owners_and_absolute_symlinks_are_kept(tmp_path: Path) -> None:
    dest = tmp_path / "tree"
    inject._extract(archive(*TREE), dest)
    for name, kind, mode, text in TREE:
        st = (dest / name).lstat()
        if kind == tarfile.SYMTYPE:
            assert os.readlink(dest / name) == text
            continue
        assert oct(st.st_mode & 0o7777) == oct(mode), name
        if kind == tarfile.REGTYPE:
            assert (dest / name).read_text() == text
        if os.geteuid() == 0:  # only root can give a file away
            assert (st.st_uid, st.st_gid) == (1234, 2345), name


@pytest.mark.parametrize("hostile", [
    [("/etc/evil", tarfile.REGTYPE, 0o644, "x")],
    [("a/../../evil", tarfile.REGTYPE, 0o644, "x")],
    [("../evil", tarfile.REGTYPE, 0o644, "x")],
    [("out", tarfile.SYMTYPE, 0o777, "OUTSIDE"), ("out/evil", tarfile.REGTYPE, 0o644, "x")],
    [("up", tarfile.SYMTYPE, 0o777, ".."), ("up/evil", tarfile.REGTYPE, 0o644, "x")],
    [("f", tarfile.SYMTYPE, 0o777, "../evil"), ("f", tarfile.REGTYPE, 0o644, "x")],
], ids=["absolute", "dotdot-inside", "dotdot", "through-symlink", "through-relative-symlink",
        "over-symlink"])
def test_a_member_outside_the_tree_is_refused(tmp_path: Path, hostile) -> None:
    outside = tmp_path / "outside"  # an absolute folder a symlink in the archive names
    outside.mkdir()
    members = [(n, k, m, str(outside) if t == "OUTSIDE" else t) for n, k, m, t in hostile]
    with pytest.raises(MinivmError, match="the init build holds a path"):
        inject._extract(archive(*TREE, *members), tmp_path / "tree")
    assert not (tmp_path / "evil").exists() and not (outside / "evil").exists()
    assert not Path("/etc/evil").exists()

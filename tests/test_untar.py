"""The unpacker of guest tar streams (`lab cp` out), fed generated streams: honest ones (busybox
tar, as the guest's toolbox writes them, GNU and pax) come out whole; hostile ones change
nothing outside the destination; random bytes only ever end in MinivmError."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minivm.errors import MinivmError
from minivm.vm import untar
from minivm.vm.transfer import merge_tree
from tests.hostile import ATTACKS, Attack, entry, make_canary, snapshot, stream


def honest_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (root / "sub" / "run.sh").chmod(0o750)
    (root / "empty").write_bytes(b"")
    (root / ("long-" + "n" * 150)).write_bytes(os.urandom(3000))
    (root / "big.bin").write_bytes(os.urandom(300_000))
    os.link(root / "big.bin", root / "hard")
    (root / "link").symlink_to("sub/run.sh")
    (root / "dangling").symlink_to("/no/such/" + "x" * 120)
    (root / "sub" / "deeper" / "locked").write_text("no access\n")
    (root / "sub" / "deeper" / "locked").chmod(0o000)
    (root / "sub" / "deeper").chmod(0o555)
    return root


def unpack(data: bytes, dest: Path, *, limit: int | None = None,
           chunks: int = 7) -> tuple[untar.Unpacker, list[str]]:
    warnings: list[str] = []
    dest.mkdir()
    u = untar.Unpacker(root=dest, what="r1", limit=limit or len(data) + 1,
                       warn=warnings.append)
    rng = random.Random(len(data))
    pos = 0
    while pos < len(data):  # pieces of any size, as frames cut the stream
        step = rng.randint(1, max(1, len(data) // chunks))
        u.feed(data[pos:pos + step])
        pos += step
    u.close()
    u.finish_folders(dest, with_root=True)
    return u, warnings


def same_tree(a: Path, b: Path) -> None:
    """Same names, modes (permission bits), bytes, link targets and hard links."""
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for name in sa:
        assert (stat.S_IMODE(sa[name][0]), sa[name][1]) == (stat.S_IMODE(sb[name][0]),
                                                           sb[name][1]), name
    assert (b / "hard").stat().st_ino == (b / "big.bin").stat().st_ino


@pytest.mark.parametrize("packer", ["busybox", "gnu", "pax"])
def test_honest_streams_come_out_whole(tmp_path: Path, packer: str) -> None:
    tree = honest_tree(tmp_path / "tree")
    if packer == "busybox":  # what the guest's toolbox tar writes
        data = subprocess.run(["busybox", "tar", "-C", str(tree), "-cf", "-", "."],
                              check=True, capture_output=True).stdout
    else:
        import io
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT if packer == "gnu"
                          else tarfile.PAX_FORMAT) as t:
            t.add(tree, arcname=".")
        data = out.getvalue()
    (tree / "sub" / "deeper").chmod(0o755)  # readable for the comparison
    u, warnings = unpack(data, tmp_path / "out")
    (tmp_path / "out" / "sub" / "deeper").chmod(0o755)
    assert warnings == [] and u.root_mode == stat.S_IMODE(tree.stat().st_mode)
    same_tree(tree, tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").stat().st_mtime == int((tree / "big.bin").stat().st_mtime)


def test_the_bound_holds_for_an_honest_stream(tmp_path: Path) -> None:
    tree = honest_tree(tmp_path / "tree")
    (tree / "sub" / "deeper").chmod(0o755)
    data = subprocess.run(["busybox", "tar", "-C", str(tree), "-cf", "-", "."], check=True,
                          capture_output=True).stdout
    files = [p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()]
    entries = len(list(tree.rglob("*"))) + 1
    assert len(data) <= untar.stream_bound([p.stat().st_size for p in files], entries)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_hostile_streams_touch_nothing_outside(tmp_path: Path, attack: Attack) -> None:
    canary = make_canary(tmp_path / "canary")
    before = snapshot(canary)
    data = attack.build(canary)
    limit = untar.stream_bound([], 3) if attack.name == "longer-than-announced" else None
    dest = tmp_path / "out"
    if attack.refused:
        with pytest.raises(MinivmError) as caught:
            unpack(data, dest, limit=limit)
        assert "\n" not in str(caught.value) and "nothing was copied" in str(caught.value)
    else:
        _, warnings = unpack(data, dest, limit=limit)
        assert len(warnings) == attack.warnings
        assert all("\n" not in w and "not copied" in w for w in warnings)
        for path in dest.rglob("*"):
            mode = path.lstat().st_mode
            assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), path
            assert not mode & 0o7000, path
    assert snapshot(canary) == before


def test_names_from_the_guest_are_shown_escaped(tmp_path: Path) -> None:
    data = stream(entry("\x1b[2J\x1b]0;owned\x07", tarfile.FIFOTYPE), entry("/abs\r\nfake"))
    with pytest.raises(MinivmError) as caught:
        unpack(data, tmp_path / "out")
    message = str(caught.value)
    assert "\r" not in message and "\n" not in message and "\\x0d\\x0a" in message
    warnings: list[str] = []
    u = untar.Unpacker(root=tmp_path, what="r1", limit=1 << 20, warn=warnings.append)
    u.feed(stream(entry("\x1b[2Jx", tarfile.FIFOTYPE)))
    assert warnings and "\x1b" not in warnings[0] and "\\x1b[2Jx" in warnings[0]


def test_guest_owners_only_when_asked(tmp_path: Path) -> None:
    data = stream(entry("f", data=b"x"), entry("d", tarfile.DIRTYPE, mode=0o755))
    unpack(data, tmp_path / "plain")
    assert (tmp_path / "plain" / "f").stat().st_uid == os.getuid()
    if os.geteuid() != 0:
        return
    dest = tmp_path / "kept"
    dest.mkdir()
    u = untar.Unpacker(root=dest, what="r1", limit=1 << 20, warn=print, keep_owners=True)
    u.feed(data)
    u.close()
    u.finish_folders(dest, with_root=False)
    assert (dest / "f").stat().st_uid == 4242 and (dest / "d").stat().st_gid == 4242


def test_merge_refuses_folder_file_clashes_before_moving_anything(tmp_path: Path) -> None:
    target = tmp_path / "target"
    (target / "keep").mkdir(parents=True)
    (target / "keep" / "old").write_text("old\n")
    outside = make_canary(tmp_path / "canary")
    (target / "link").symlink_to(outside)
    (target / "file").write_text("replaced\n")
    before = snapshot(outside)
    source = tmp_path / "staged"
    (source / "keep").mkdir(parents=True)
    (source / "keep" / "new").write_text("new\n")
    (source / "file").write_text("new file\n")
    (source / "link").mkdir()  # a folder onto a link: refused (the link is not followed)
    (source / "link" / "file").write_text("pwned\n")
    with pytest.raises(MinivmError, match=r"cannot overwrite .*link with a folder"):
        merge_tree(source, target)
    assert not (target / "keep" / "new").exists() and (target / "file").read_text() == \
        "replaced\n"
    (source / "link" / "file").unlink()
    (source / "link").rmdir()
    (source / "link").write_text("a file replaces the link itself\n")
    merge_tree(source, target)
    assert sorted(p.name for p in (target / "keep").iterdir()) == ["new", "old"]
    assert (target / "file").read_text() == "new file\n"
    assert not (target / "link").is_symlink() and snapshot(outside) == before


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(min_size=1, max_size=600),
    st.sampled_from([a.build(Path("/nonexistent/canary")) for a in ATTACKS]).flatmap(
        lambda s: st.integers(0, len(s)).map(lambda cut: s[:cut]))), min_size=1, max_size=4))
def test_random_streams_only_end_in_minivm_errors(tmp_path_factory: pytest.TempPathFactory,
                                                   pieces: list[bytes]) -> None:
    dest = tmp_path_factory.mktemp("fuzz")
    u = untar.Unpacker(root=dest, what="r1", limit=1 << 20, warn=lambda line: None)
    try:
        for piece in pieces:
            u.feed(piece)
        u.close()
    except MinivmError:
        pass
    for path in dest.rglob("*"):  # whatever it made stays inside and is plain
        assert path.resolve().is_relative_to(dest.resolve()) or path.is_symlink()


def header(name: bytes, kind: bytes, numbers: list[bytes], link: bytes) -> bytes:
    """A header block with these raw fields and a right checksum."""
    block = bytearray(512)
    block[0:100] = name[:100].ljust(100, b"\0")
    for offset, width, value in zip((100, 108, 116, 124, 136), (8, 8, 8, 12, 12), numbers,
                                    strict=True):
        block[offset:offset + width] = value[:width].ljust(width, b"\0")
    block[156:157] = kind
    block[157:257] = link[:100].ljust(100, b"\0")
    block[257:263] = b"ustar\0"
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


number = st.one_of(st.integers(0, 8**7).map(lambda n: b"%o" % n),
                   st.binary(min_size=1, max_size=12).map(lambda b: bytes([0x80]) + b),
                   st.binary(max_size=12))
name = st.one_of(st.sampled_from([b"a", b"a/b", b"/etc/x", b"../x", b"a/../../x", b".", b"",
                                  b"a/\x1b[2J"]), st.binary(max_size=110))
headers = st.builds(header, name, st.sampled_from(list(b"0123456LKxgS\0") + [b"7"]).map(
    lambda k: k if isinstance(k, bytes) else bytes([k])), st.lists(number, min_size=5,
                                                                   max_size=5), name)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(headers, st.binary(max_size=1100)), max_size=6),
       st.booleans())
def test_random_headers_only_end_in_minivm_errors(tmp_path_factory: pytest.TempPathFactory,
                                                  entries: list[tuple[bytes, bytes]],
                                                  end: bool) -> None:
    dest = tmp_path_factory.mktemp("fuzz")
    u = untar.Unpacker(root=dest, what="r1", limit=1 << 20, warn=lambda line: None)
    try:
        for block, data in entries:
            u.feed(block + data)
        u.feed(bytes(1024) if end else b"")
        u.close()
    except MinivmError:
        pass
    for path in dest.rglob("*"):
        assert path.resolve().is_relative_to(dest.resolve()) or path.is_symlink()
        assert path.is_symlink() or not path.lstat().st_mode & 0o7000

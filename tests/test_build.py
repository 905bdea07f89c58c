"""minivm build end to end: real engine, real mke2fs and libguestfs, disks read back."""

from __future__ import annotations

import hashlib
import shutil
import stat
import tarfile

import pytest

from minivm.errors import MinivmError
from minivm.image import build as builder
from tests.fsview import listing
from tests.imagefactory import (
    IMAGE_HOSTS,
    LONG_DIR,
    UNICODE_NAME,
    classic_archive,
    member,
    oci_layout,
    rich_context,
    save_image,
)

# vfs_cap_data revision 2 with cap_net_raw (bit 13) permitted and effective.
CAP_NET_RAW = "\x01\x00\x00\x02\x00\x20" + "\x00" * 14


@pytest.fixture(scope="module")
def rich_build(tmp_path_factory, docker_api):
    """The rich context built once through the engine, and its disk read back."""
    tmp = tmp_path_factory.mktemp("rich")
    context = rich_context(tmp / "rich-ctx")
    from minivm.ui import Reporter

    result = builder.build(str(context), reporter=Reporter(quiet=True), output_dir=tmp / "out")
    files, label = listing(result.qcow2)
    yield result, files, label, tmp
    from minivm.image.engine import remove_image

    remove_image(docker_api, result.image_id)


def test_engine_build_keeps_every_kind_of_file(rich_build):
    result, files, label, _ = rich_build
    assert label == "minivm-root"
    assert result.backend == "mke2fs"
    assert "data/doomed" not in files  # deleted in a later layer
    assert "data/old/file" not in files and files["data/old/new"].kind == "file"  # replaced dir
    assert files["data/suid"].mode & stat.S_ISUID and files["data/suid"].mode & 0o777 == 0o755
    assert files["data/a"].target == files["data/b"].target == "=data/a,data/b"  # one inode
    assert files["data/null"].kind == "chr" and files["data/null"].device == (1, 3)
    assert files[f"data/{LONG_DIR}/file"].size == 5
    assert files[f"data/{UNICODE_NAME}"].kind == "file"
    assert files["data/link"].kind == "symlink" and files["data/link"].target == "keep"
    keep = files["data/keep"]
    assert (keep.uid, keep.gid) == (1000, 1000)
    assert keep.mtime == 981173106  # 2001-02-03 04:05:06 UTC, from touch -d
    assert files["data/hello.txt"].size == len("hello from COPY\n")
    # The engine's export shows /etc/hosts empty; the image's own one must be on the disk.
    assert files["etc/hosts"].md5 == hashlib.md5(IMAGE_HOSTS.encode()).hexdigest()


def test_engine_build_stores_the_image_config(rich_build):
    result, files, _, _ = rich_build
    config = result.config
    assert config.entrypoint == ["/bin/echo"] and config.cmd == ["hi", "there"]
    assert "FOO=bar" in config.env and config.workdir == "/data" and config.user == "1000"
    assert config.exposed_ports == ["80/tcp"]
    assert config.labels["org.example.purpose"] == "minivm test"
    assert files[".minivm/config"].size > 0 and files[".minivm/image.json"].size > 0
    assert files[".minivm/init"].kind == "file"


def test_same_image_twice_gives_identical_bytes(rich_build, quiet):
    result, _, _, tmp = rich_build
    first = result.qcow2.read_bytes()
    again = builder.build(str(tmp / "rich-ctx"), reporter=quiet, output_dir=tmp / "out",
                          force=True)
    assert again.qcow2 == result.qcow2 and not again.cached
    assert again.qcow2.read_bytes() == first


def test_unchanged_build_is_reused(rich_build, quiet):
    result, _, _, tmp = rich_build
    written = result.qcow2.stat().st_mtime_ns
    again = builder.build(str(tmp / "rich-ctx"), reporter=quiet, output_dir=tmp / "out")
    assert again.cached and again.qcow2 == result.qcow2
    assert result.qcow2.stat().st_mtime_ns == written  # nothing rewritten
    assert not {"docker_build", "unpack", "spool", "mkfs", "timestamps", "qcow2"} & set(
        quiet.seconds)  # no stage of a build ran (its time: bench/build_figures.py)


def _comparable(files):
    """What must be equal between two builds of one image by different paths. The folders the
    engine's container layer touches keep the container's time, so folder times are left out."""
    return {path: (m.kind, m.mode, m.uid, m.gid, m.size, m.target, m.md5, m.device, m.xattrs,
                   None if m.kind == "dir" else m.mtime)
            for path, m in files.items() if path != ".minivm/config"}


def test_daemonless_archive_gives_the_same_files(rich_build, docker_api, quiet):
    result, files, _, tmp = rich_build
    saved = save_image(docker_api, result.image_id, tmp / "saved.tar")
    from_archive = builder.build(str(saved), reporter=quiet, output_dir=tmp / "archive-out")
    assert from_archive.image_id == result.image_id
    archive_files, _ = listing(from_archive.qcow2)
    assert _comparable(archive_files) == _comparable(files)


@pytest.mark.engine
def test_oci_layouts_read_like_classic_archives(tmp_path, quiet):
    layers = [
        [member("bin/", kind=tarfile.DIRTYPE, mode=0o755), member("bin/tool", b"v1", mode=0o755),
         member("etc/", kind=tarfile.DIRTYPE, mode=0o755), member("etc/gone", b"x"),
         member("opt/", kind=tarfile.DIRTYPE), member("opt/old", b"old")],
        [member("bin/tool", b"v2", mode=0o755), member("etc/.wh.gone"),
         member("opt/", kind=tarfile.DIRTYPE), member("opt/.wh..wh..opq"),
         member("opt/new", b"new"),
         member("bin/ping", b"elf", mode=0o755,
                xattrs={"security.capability": CAP_NET_RAW})],
    ]
    classic = classic_archive(tmp_path / "classic.tar", layers)
    oci_dir = tmp_path / "oci"
    oci_dir.mkdir()
    variants = {
        "classic": classic,
        "oci-dir": oci_layout(oci_dir, classic, as_tar=False),
        "oci-tar": oci_layout(tmp_path / "docker25.tar", classic, as_tar=True, compress=False),
    }
    seen = {}
    for name, path in variants.items():
        result = builder.build(str(path), reporter=quiet, output_dir=tmp_path / f"out-{name}")
        files, _ = listing(result.qcow2)
        assert files["bin/tool"].md5 == hashlib.md5(b"v2").hexdigest()
        assert "etc/gone" not in files and "opt/old" not in files and "opt/new" in files
        assert dict(files["bin/ping"].xattrs)["security.capability"] == CAP_NET_RAW
        seen[name] = _comparable({k: v for k, v in files.items() if not k.startswith(".minivm")})
    assert seen["classic"] == seen["oci-dir"] == seen["oci-tar"]


@pytest.mark.engine
def test_power_commands_are_linked_only_where_the_image_has_none(tmp_path, quiet):
    """A login shell's PATH has no toolbox: /usr/sbin gets links to its power commands, except
    for those the image has somewhere in a standard PATH folder."""
    archive = classic_archive(tmp_path / "img.tar", [[
        member("usr/", kind=tarfile.DIRTYPE, mode=0o755),
        member("usr/sbin/", kind=tarfile.DIRTYPE, mode=0o755),
        member("bin/", kind=tarfile.DIRTYPE, mode=0o755),
        member("bin/poweroff", b"image's own", mode=0o755),
    ]])
    files, _ = listing(builder.build(str(archive), reporter=quiet,
                                     output_dir=tmp_path / "out").qcow2)
    assert "usr/sbin/poweroff" not in files and files["bin/poweroff"].kind == "file"
    for name in ("reboot", "halt"):
        assert files[f"usr/sbin/{name}"].target == f"/.minivm/bin/{name}"
        assert files[f".minivm/bin/{name}"].kind == "symlink"  # the toolbox has it


@pytest.mark.parametrize("bad, message", [
    (member("/etc/passwd", b"x"), "absolute path"),
    (member("../../escape", b"x"), "climbs out"),
])
@pytest.mark.engine
def test_escaping_entries_are_refused(tmp_path, quiet, bad, message):
    archive = classic_archive(tmp_path / "bad.tar", [[bad]])
    with pytest.raises(MinivmError, match=message):
        builder.build(str(archive), reporter=quiet, output_dir=tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.qcow2"))


@pytest.mark.engine
def test_writing_through_a_symlink_is_refused(tmp_path, quiet):
    archive = classic_archive(tmp_path / "bad.tar", [[
        member("lib", kind=tarfile.SYMTYPE, linkname="/"),
        member("lib/evil", b"x"),
    ]])
    with pytest.raises(MinivmError, match="goes through the symlink"):
        builder.build(str(archive), reporter=quiet, output_dir=tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.qcow2"))


def test_guestfs_backend_writes_the_same_files(rich_build, quiet):
    result, files, _, tmp = rich_build
    # The image itself, not its context again: a rebuild could meet another base image.
    other = builder.build(result.image_id, reporter=quiet, backend="guestfs",
                          output_dir=tmp / "guestfs-out")
    assert other.backend == "guestfs"
    guest_files, label = listing(other.qcow2)
    assert label == "minivm-root"
    assert _comparable(guest_files) == _comparable(files)


@pytest.mark.engine
def test_size_option_is_honoured(tmp_path, quiet):
    archive = classic_archive(tmp_path / "a.tar", [[member("f", b"x" * 1000)]])
    result = builder.build(str(archive), reporter=quiet, output_dir=tmp_path / "out", size=96 << 20)
    assert result.record.fs_size == 96 << 20


def test_two_contexts_with_one_folder_name_never_share_a_disk(tmp_path, docker_api, capsys):
    """./a/app and ./b/app both want build/app/: the second is refused (the first's disk is
    kept) until it is given a name of its own, or until ./a/app is gone (a moved checkout):
    then its build is replaced, with a note."""
    from minivm.ui import Reporter

    contexts = []
    for side in ("a", "b"):
        ctx = tmp_path / side / "app"
        ctx.mkdir(parents=True)
        (ctx / "Dockerfile").write_text(f"FROM minivm-test/busybox\nRUN echo {side} > /side\n")
        contexts.append(ctx)
    out = tmp_path / "out"
    first = builder.build(str(contexts[0]), reporter=Reporter(quiet=True), output_dir=out)
    with pytest.raises(MinivmError, match=r"holds the build of .*a/app.*--name NAME"):
        builder.build(str(contexts[1]), reporter=Reporter(quiet=True), output_dir=out)
    assert first.qcow2.is_file()
    second = builder.build(str(contexts[1]), reporter=Reporter(quiet=True), output_dir=out,
                           name="app-b")
    assert second.folder == out / "app-b" and second.qcow2.is_file() and first.qcow2.is_file()
    with pytest.raises(MinivmError, match=r"--name 'bad name' is not a usable name"):
        builder.build(str(contexts[1]), reporter=Reporter(quiet=True), output_dir=out,
                      name="bad name")
    capsys.readouterr()
    shutil.rmtree(tmp_path / "a")
    third = builder.build(str(contexts[1]), reporter=Reporter(), output_dir=out)
    assert third.folder == out / "app" and third.qcow2.is_file() and not first.qcow2.exists()
    assert third.record.source_id == str(contexts[1].resolve())
    note = " ".join(capsys.readouterr().err.split())
    assert f"{out / 'app'} held the build of {contexts[0]}, whose folder" in note
    assert f"{contexts[0].resolve()} is gone: this build of {contexts[1]} replaces it" in note
    from minivm.image.engine import remove_image

    for result in (first, second):
        remove_image(docker_api, result.image_id)

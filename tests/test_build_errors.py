"""Every user error of `minivm build`: one line on stderr, non-zero exit, nothing left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from minivm.image import inject
from tests.fsview import listing
from tests.imagefactory import CONFIG, classic_archive, member

REPO = Path(__file__).resolve().parent.parent


MINIVM = [sys.executable, "-m", "minivm"]


def minivm(*args: str, env: dict[str, str] | None = None, out: Path,
           **kw) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MINIVM_BUILD_DIR": str(out), **(env or {})}
    return subprocess.run(MINIVM + list(args), capture_output=True, text=True, env=full_env,
                          timeout=600, **kw)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_nothing_left(out: Path, docker_api) -> None:
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers
    assert docker_api.containers(all=True, filters={"label": "minivm=export"}) == []


def test_no_such_folder(tmp_path, docker_api):
    proc = minivm("build", "./no-such-context", "-q", out=tmp_path)
    assert_one_line_error(proc, "no such folder or archive", "no-such-context")


def test_no_such_image(tmp_path, docker_api):
    proc = minivm("build", "minivm-test/absent:never", "-q", out=tmp_path)
    assert_one_line_error(proc, "no such image", "minivm-test/absent:never")
    assert_nothing_left(tmp_path, docker_api)


def test_failing_dockerfile_step_shows_the_step_and_its_log(tmp_path, docker_api):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM minivm-test/busybox:latest\n"
        "RUN echo preparing && echo broken-step-output && exit 3\n")
    before = {i["Id"] for i in docker_api.images()}
    proc = minivm("build", str(context), "-q", out=tmp_path / "out")
    assert_one_line_error(proc, "Step 2/2 : RUN echo preparing", "broken-step-output")
    assert {i["Id"] for i in docker_api.images()} == before
    assert_nothing_left(tmp_path / "out", docker_api)


def test_engine_unreachable_says_how_to_start_one(tmp_path):
    proc = minivm("build", "minivm-test/busybox:latest", "-q", out=tmp_path,
                  env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_one_line_error(proc, "cannot reach the Docker engine", "dockerd")


@pytest.mark.engine
def test_unusable_libguestfs_says_what_is_missing(tmp_path):
    archive = classic_archive(tmp_path / "a.tar", [[member("f", b"x")]])
    proc = minivm("build", str(archive), "--backend", "guestfs", "-q", out=tmp_path / "out",
                  env={"LIBGUESTFS_PATH": str(tmp_path / "no-appliance"),
                       "SUPERMIN_KERNEL": str(tmp_path / "no-kernel")})
    assert_one_line_error(proc, "libguestfs cannot start its appliance", "apt-get install")
    assert not list((tmp_path / "out").rglob("*.qcow2"))


def test_content_larger_than_size_says_the_size_needed(tmp_path, docker_api):
    archive = classic_archive(tmp_path / "big.tar", [[member("big", os.urandom(40 << 20))]])
    proc = minivm("build", str(archive), "--size", "16M", "-q", out=tmp_path / "out")
    assert_one_line_error(proc, "content needs about", "more than --size 16 MiB", "--size")
    assert_nothing_left(tmp_path / "out", docker_api)


def test_corrupt_archive(tmp_path, docker_api):
    archive = classic_archive(tmp_path / "ok.tar", [[member("f", os.urandom(1 << 20))]])
    data = archive.read_bytes()
    broken = tmp_path / "broken.tar"
    broken.write_bytes(data[: len(data) // 2])
    proc = minivm("build", str(broken), "-q", out=tmp_path / "out")
    assert_one_line_error(proc, "broken.tar")
    assert_nothing_left(tmp_path / "out", docker_api)


@pytest.mark.parametrize(("config", "field"), [
    ({"Env": ["A=1\x00", "PATH=/bin"], "User": "1000"}, "Env[0] holds a NUL"),
    ({"Cmd": ["/bin/sh", "-c", "x\x00y"]}, "Cmd[2] holds a NUL"),
    ({"Entrypoint": ["/bin/sh"], "User": "nobody\x00"}, "User holds a NUL"),
    ({"WorkingDir": "/\x00"}, "WorkingDir holds a NUL"),
    ({"Entrypoint": "/bin/sh -c run"}, "Entrypoint is not a list of strings"),
    ({"Env": [1, 2]}, "Env is not a list of strings"),
    ({"User": ["root"]}, "User is not a string"),
])
def test_image_config_the_init_cannot_carry_is_refused(tmp_path, config, field):
    """A NUL would end the init's config early (USER lost: the main process as root)."""
    archive = classic_archive(tmp_path / "nul.tar", [[member("f", b"x")]],
                              config={**CONFIG, "config": config})
    proc = minivm("build", str(archive), "-q", out=tmp_path / "out")
    assert_one_line_error(proc, f"config field {field}")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_text("not a tar at all\n" * 100)
    proc = minivm("build", str(junk), "-q", out=tmp_path / "out")
    assert_one_line_error(proc, "junk.tar")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full(tmp_path, docker_api):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
    try:
        archive = classic_archive(tmp_path / "big.tar", [[member("big", os.urandom(48 << 20))]])
        proc = minivm("build", str(archive), "-q", out=small / "out",
                      env={"MINIVM_SCRATCH": str(small)})
        assert_one_line_error(proc, "disk full", str(small))
        assert_nothing_left(small, docker_api)
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_ctrl_c_leaves_nothing_behind(tmp_path, docker_api):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM debian:bookworm-slim\nRUN head -c 300000000 /dev/urandom > /blob\n")
    out = tmp_path / "out"
    # Ctrl-C as in a terminal: SIGINT handled by default, whatever this test inherited (a
    # shell's background job starts with it ignored, and Python then keeps it ignored)
    proc = subprocess.Popen(MINIVM + ["build", str(context)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MINIVM_BUILD_DIR": str(out)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the tree is being written
        if "Unpacking" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in rest and "Traceback" not in rest
    assert_nothing_left(out, docker_api)
    assert not list(Path("/dev/shm").glob("minivm-tree-*"))


@pytest.mark.engine
def test_rootless_build_under_fakeroot(tmp_path, quiet):
    """A user who is not root (here: nobody, not in the docker group) builds an archive with
    mke2fs under fakeroot; owners, modes and device nodes survive."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    work = Path(tempfile.mkdtemp(prefix="minivm-rootless-"))
    try:
        os.chmod(work, 0o777)
        archive = classic_archive(work / "a.tar", [[
            member("bin/", kind=b"5", mode=0o755),
            member("bin/su", b"elf", mode=0o4755),
            member("home/", kind=b"5", mode=0o755),
            member("home/user-file", b"mine", uid=1234),
            member("dev/", kind=b"5", mode=0o755),
            member("dev/null", kind=b"3", mode=0o666),
        ]])
        out = work / "out"
        with pytest.MonkeyPatch.context() as env:  # the caller's own value comes back
            env.setenv("MINIVM_CACHE_DIR", str(work / "cache"))
            # the init tree is built once with the engine (root's); then no engine is needed
            inject.prepare(reporter=quiet)
        subprocess.run(["chmod", "-R", "a+rwX", str(work)], check=True)
        proc = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
             *MINIVM, "build", str(archive), "--json"],
            capture_output=True, text=True, timeout=600, cwd=REPO,
            env={**os.environ, "MINIVM_BUILD_DIR": str(out), "HOME": str(work),
                 "MINIVM_CACHE_DIR": str(work / "cache"),
                 "MINIVM_SCRATCH": str(work), "DOCKER_HOST": "unix:///nonexistent"})
        assert proc.returncode == 0, proc.stderr
        assert '"backend": "mke2fs"' in proc.stdout
        files, _ = listing(next(out.rglob("*.qcow2")))
        assert files["bin/su"].mode == 0o4755 and files["bin/su"].uid == 0
        assert files["home/user-file"].uid == 1234
        assert files["dev/null"].kind == "chr"
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""`minivm lab exec`, `lab cp` and published ports, on real MiniVMs under TCG.

One lab node (alpine-minivm's look-alike) serves most checks; a FROM-scratch image (no shell,
no libc) shows exec beside a running main process. The protocol's framing and the client's
answers to a silent or older init are checked on real sockets without a VM.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from test_lab import READY, bundle, cli, write_lab  # noqa: F401 - bundle is a fixture

from minivm.errors import MinivmError
from minivm.gns3 import appliance
from minivm.image import build
from minivm.kit import kernel
from minivm.ui import QUIET
from minivm.vm import control

MINIVM = [str(Path(sys.executable).with_name("minivm"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def lab_exec(path: Path, node: str, *args: str, stdin: bytes | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*MINIVM, "lab", "exec", str(path), node, *args],
                          input=stdin, capture_output=True, timeout=timeout)


# --- the protocol, without a VM -------------------------------------------------------------

def test_frames_round_trip_split_and_resync() -> None:
    frames = [(control.R_STDOUT, b""), (control.DATA, bytes(range(256)) * 256),
              (control.EXEC, control.exec_payload(["sh", "-c", "exit 3"], env={"A": "b=c"}))]
    stream = b"".join(control.encode(k, p) for k, p in frames)
    decoder = control.Decoder()
    got = [f for i in range(0, len(stream), 7) for f in decoder.feed(stream[i:i + 7])]
    assert got == frames
    # the tail of an earlier session, then garbage that looks like a header, then a frame
    noisy = stream[20:100] + b"mv\x07\x01zzzz" + control.encode(control.R_HELLO, b"\0\1n")
    assert list(control.Decoder().feed(noisy))[-1] == (control.R_HELLO, b"\0\1n")
    assert control.exec_payload(["a", "b"], user="0", workdir="/", stdin=True) == \
        b"aa\0ab\0u0\0w/\0i\0"
    with pytest.raises(ValueError):
        control.encode(control.DATA, bytes(control.MAX_PAYLOAD + 1))
    with pytest.raises(MinivmError, match="NUL"):
        control.exec_payload(["a\0b"])


def fake_guest(tmp: Path, answer: bytes | None) -> Path:
    """A control socket whose guest answers ``answer`` to HELLO (None: never answers), as a
    QEMU whose guest init has no channel, or an older one."""
    path = tmp / "control.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        data = conn.recv(1024)
        if answer is not None:
            nonce = data[control.HEADER.size + 2:]
            conn.sendall(b"stale output" + control.encode(control.R_HELLO, answer + nonce))
        time.sleep(3)
        conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return path


def test_an_init_without_the_channel_or_older_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(MinivmError, match="older than the channel"):
        control.Channel(fake_guest(tmp_path / "a", None), what="r1", timeout=1)
    with pytest.raises(MinivmError, match=r"protocol 0, this minivm speaks 1 .*older"):
        control.Channel(fake_guest(tmp_path / "b", struct.pack(">H", 0)), what="r1")


# --- on a lab node ----------------------------------------------------------------------------

@pytest.mark.engine
@pytest.mark.boot
def test_exec_cp_and_published_port(bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    port = free_port()
    path = write_lab(tmp_path, bundle, {"r1": ""}, [])
    spec = json.loads(path.read_text())
    spec["nodes"]["r1"]["publish"] = [f"{port}:80"]
    path.write_text(json.dumps(spec))

    down = lab_exec(path, "r1", "--", "true")  # not started yet
    assert down.returncode == 1 and down.stderr.decode().count("\n") == 1
    assert b"not running" in down.stderr

    up = cli("lab", "up", path, "--wait", READY, "--json")
    assert up.returncode == 0, up.stderr
    try:
        info = json.loads(up.stdout)["nodes"]["r1"]
        assert info["publish"] == {"nic": "publish0", "ports": [f"127.0.0.1:{port}->80/tcp"]}
        assert f"publish0: 127.0.0.1:{port}->80/tcp" in cli("lab", "status", path).stdout

        three = lab_exec(path, "r1", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (three.returncode, three.stdout, three.stderr) == (3, b"out\n", b"err\n")
        missing = lab_exec(path, "r1", "--", "no-such-command")
        assert missing.returncode == 127 and b"no-such-command" in missing.stderr
        assert lab_exec(path, "r1", "--", "/etc/hostname").returncode == 126
        env = lab_exec(path, "r1", "-e", "FOO=b a r", "-w", "/tmp", "-u", "1234:1234", "--",
                       "sh", "-c", 'echo "$FOO|$(pwd)|$(id -u)|$PATH"')
        assert env.stdout.decode().startswith("b a r|/tmp|1234|/usr/local/sbin:"), env
        blob = os.urandom(100_000)
        piped = lab_exec(path, "r1", "-i", "--", "md5sum", stdin=blob)
        assert piped.stdout.split()[0].decode() == hashlib.md5(blob).hexdigest()

        # a 20 MB file in and out: same bytes, same mode
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(20 << 20))
        big.chmod(0o751)
        copied_in = cli("lab", "cp", path, big, "r1:/root/")
        assert copied_in.returncode == 0, copied_in.stderr
        inside = lab_exec(path, "r1", "--", "sh", "-c", "md5sum /root/big.bin; stat -c %a "
                          "/root/big.bin 2>/dev/null || ls -l /root/big.bin")
        assert md5(big) in inside.stdout.decode()
        back = tmp_path / "back"
        back.mkdir()
        copied_out = cli("lab", "cp", path, "r1:/root/big.bin", back)
        assert copied_out.returncode == 0, copied_out.stderr
        assert md5(back / "big.bin") == md5(big)
        assert (back / "big.bin").stat().st_mode & 0o7777 == 0o751

        # a folder both ways (as tar): tree, modes and a symlink kept
        tree = tmp_path / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
        (tree / "sub" / "run.sh").chmod(0o700)
        (tree / "link").symlink_to("sub/run.sh")
        assert cli("lab", "cp", path, tree, "r1:/opt").returncode == 0
        assert lab_exec(path, "r1", "--", "/opt/link").stdout == b"ran\n"
        out = cli("lab", "cp", path, "r1:/opt", tmp_path / "opt-copy")
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "opt-copy" / "sub" / "run.sh").stat().st_mode & 0o777 == 0o700
        assert os.readlink(tmp_path / "opt-copy" / "link") == "sub/run.sh"

        # a full guest disk: one line, nothing left in the guest
        small = lab_exec(path, "r1", "--", "sh", "-c", "mkdir -p /mnt/small && "
                         "mount -t tmpfs -o size=1m tmpfs /mnt/small")
        assert small.returncode == 0, small.stderr
        full = cli("lab", "cp", path, big, "r1:/mnt/small/")
        assert full.returncode == 1 and full.stderr.count("\n") == 1
        assert "No space left on device" in full.stderr
        assert lab_exec(path, "r1", "--", "ls", "-A", "/mnt/small").stdout == b""

        # nothing half-written on the host: a copy that fails, a copy interrupted
        assert cli("lab", "cp", path, "r1:/no/such", tmp_path / "none").returncode == 1
        partial = tmp_path / "partial"
        partial.mkdir()
        proc = subprocess.Popen([*MINIVM, "lab", "cp", str(path), "r1:/root/big.bin",
                                 str(partial)], stderr=subprocess.PIPE)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        assert list(partial.iterdir()) in ([], [partial / "big.bin"])  # never a partial file
        if proc.returncode:
            assert list(partial.iterdir()) == []

        # a web server in the guest, reached through the published port
        served = lab_exec(path, "r1", "--", "sh", "-c", "mkdir -p /www && echo hello-from-r1 "
                          "> /www/index.html && httpd -p 80 -h /www")
        assert served.returncode == 0, served.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert r.read() == b"hello-from-r1\n"
        # the lab's own adapters keep their names: eth0 is the first lab adapter
        links = lab_exec(path, "r1", "--", "ip", "-o", "link").stdout.decode()
        assert "publish0" in links and " eth0:" in links

        # the same port again, in another lab: refused before anything starts
        other = tmp_path / "other"
        other.mkdir()
        path2 = write_lab(other, bundle, {"r9": ""}, [])
        spec2 = json.loads(path2.read_text())
        spec2["nodes"]["r9"]["publish"] = [f"{port}:80"]
        path2.write_text(json.dumps(spec2))
        taken = cli("lab", "up", path2)
        assert taken.returncode == 1 and taken.stderr.count("\n") == 1
        assert f"port {port}" in taken.stderr and "taken" in taken.stderr
        assert "r9           stopped" in cli("lab", "status", path2).stdout
    finally:
        down = cli("lab", "down", path, "--json")
    assert down.returncode == 0, down.stderr


SCRATCH = """\
FROM minivm-test/busybox:latest AS tools
FROM scratch
COPY --from=tools /bin/busybox /opt/busybox
ENV GREETING=hello-from-the-image
WORKDIR /work
ENTRYPOINT ["/opt/busybox", "sleep", "100000"]
"""


@pytest.mark.engine
@pytest.mark.boot
def test_exec_beside_the_main_process_of_a_scratch_image(tmp_path: Path) -> None:
    kit = kernel.current() or kernel.build(reporter=QUIET)
    context = tmp_path / "scratchy"
    context.mkdir()
    (context / "Dockerfile").write_text(SCRATCH)
    result = build.build(str(context), reporter=QUIET, output_dir=tmp_path / "build")
    app = appliance.write_bundle(result.name, reporter=QUIET, folder=result.folder, kit=kit).path
    path = write_lab(tmp_path, app, {"s1": ""}, [])
    up = cli("lab", "up", path, "--json")
    assert up.returncode == 0, up.stderr
    try:
        deadline = time.monotonic() + 120
        while True:  # the channel opens just after the main process starts
            done = lab_exec(path, "s1", "--", "sh", "-c", 'echo "$GREETING $(pwd)"; ps')
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert done.returncode == 0, done.stderr
        first, *ps = done.stdout.decode().splitlines()
        assert first == "hello-from-the-image /work"  # the image's ENV and WORKDIR
        assert any("/opt/busybox sleep 100000" in line for line in ps)  # the main process runs
        assert lab_exec(path, "s1", "--", "/opt/busybox", "echo", "hi").stdout == b"hi\n"
        assert lab_exec(path, "s1", "--", "bash").returncode == 127
    finally:
        cli("lab", "down", path)

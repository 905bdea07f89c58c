"""`minivm lab exec`, `lab cp` and published ports, on real MiniVMs under TCG.

One lab node (alpine-minivm's look-alike) serves most checks; a FROM-scratch image (no shell,
no libc) shows exec beside a running main process. The protocol's framing and the client's
answers to a silent or older init are checked on real sockets without a VM.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from minivm import lab
from minivm.errors import MinivmError
from minivm.gns3 import appliance
from minivm.image import build
from minivm.kit import kernel
from minivm.ui import QUIET
from minivm.vm import control, qemu, transfer
from tests.cli import MINIVM, cli
from tests.labs import READY, lab_exec, write_lab
from tests.ports import free_port


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def full_cli_exec(path: Path, node: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`lab exec` through the typer app, bypassing the quick path the `minivm` script takes."""
    run_app = "import sys; from minivm.cli.main import main; sys.argv[0] = 'minivm'; main()"
    return subprocess.run([sys.executable, "-c", run_app, "lab", "exec", str(path), node, *args],
                          capture_output=True, timeout=120)


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


def test_the_publish_nic_comes_after_every_adapter_even_on_a_new_bridge() -> None:
    node = uuid.uuid4()
    pub = (qemu.parse_publish("8080:80", "t"), qemu.parse_publish("127.0.0.1:5353:53/udp", "t"))
    argv = qemu.command_line(qemu.Machine(name="n", node_id=node, ram=64,
                                          adapters=(None,) * 32, publish=pub,
                                          control=Path("/tmp/c.sock")))
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    nics = [d for d in devices if d.startswith("virtio-net-pci")]
    assert len(nics) == 33 and "pci-bridge2" in nics[-1] and qemu.PUBLISH_MAC in nics[-1]
    assert all(qemu.PUBLISH_MAC not in d for d in nics[:-1])
    assert "virtserialport,bus=minivm-serial.0,chardev=minivm-control," \
           "name=org.minivm.control" in devices
    assert not any("minivm" in a for a in qemu.command_line(
        qemu.Machine(name="n", node_id=node, ram=64, adapters=(None,))))  # as GNS3: none
    with pytest.raises(MinivmError, match="published twice"):
        qemu.check_publish([pub[0], qemu.Publish(8080, 81)], "t")


# --- on a lab node ----------------------------------------------------------------------------

@pytest.mark.engine
@pytest.mark.boot
def test_exec_cp_and_published_port(bundle: Path, tmp_path: Path) -> None:
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
        for args in (["--", "sh", "-c", "echo out; echo err >&2; exit 3"],
                     ["--", "no-such-command"], ["-u", "nobody-here", "--", "true"]):
            quick, full = lab_exec(path, "r1", *args), full_cli_exec(path, "r1", *args)
            assert (quick.returncode, quick.stdout, quick.stderr) == \
                (full.returncode, full.stdout, full.stderr), args
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
        assert "r1:/root/big.bin" in copied_in.stderr and "//" not in copied_in.stderr
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
        assert "cannot write /mnt/small/big.bin: No space left on device" in full.stderr
        assert lab_exec(path, "r1", "--", "ls", "-A", "/mnt/small").stdout == b""

        # nothing half-written on the host: a copy that fails, a copy interrupted
        assert cli("lab", "cp", path, "r1:/no/such", tmp_path / "none").returncode == 1
        partial = tmp_path / "partial"
        partial.mkdir()
        sock = lab.control_socket(path, "r1")
        with control.Channel(sock, what="r1") as ch:
            real_get = ch.get

            def get_then_ctrl_c(guest: str, sink):  # Ctrl-C after the first 32 KiB
                def first(data: bytes) -> None:
                    sink(data)
                    raise KeyboardInterrupt
                return real_get(guest, first)

            ch.get = get_then_ctrl_c  # type: ignore[method-assign]
            with pytest.raises(KeyboardInterrupt):
                transfer.copy_out(ch, "/root/big.bin", partial)
        assert list(partial.iterdir()) == []
        # a client gone in the middle of a put, even in the middle of a frame: the guest
        # drops the half-written file, and the next session works at once
        with control.Channel(sock, what="r1") as ch:
            ch.send(control.PUT, struct.pack(">I", 0o644) + b"/root/cut.bin\0cut.bin\0")
            ch.expect(control.R_DONE)
            ch.send(control.DATA, bytes(32768))
            ch.sock.sendall(control.encode(control.DATA, bytes(32768))[:1000])
        left = lab_exec(path, "r1", "--", "ls", "-A", "/root")
        assert left.returncode == 0 and b"cut.bin" not in left.stdout, left

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
    assert json.loads(down.stdout)["stopped"] == {"r1": "acpi"}  # the channel never blocks it


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


@pytest.mark.engine
def test_run_publishes_after_the_adapters_and_refuses_taken_or_bad_ports(
        bundle: Path, tmp_path: Path) -> None:
    port = free_port()
    shown = cli("run", bundle, "--print-command", "-p", f"{port}:80", "-p", "5353:53/udp")
    assert shown.returncode == 0, shown.stderr
    argv = shown.stdout.split()
    netdev = next(a for a in argv if a.startswith("user,id=minivm-publish"))
    assert f"hostfwd=tcp:127.0.0.1:{port}-100.127.255.15:80" in netdev
    assert "hostfwd=udp:127.0.0.1:5353-100.127.255.15:53" in netdev and "restrict=on" in netdev
    nics = [a for a in argv if a.startswith("virtio-net-pci,mac=")]
    assert nics[-1].startswith("virtio-net-pci,mac=0e:6d:76:70:75:62")  # after the adapters
    assert len(nics) == json.loads(bundle.read_text())["qemu"]["adapters"] + 1
    assert any("name=org.minivm.control" in a for a in argv)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = cli("run", bundle, "-p", f"{busy.getsockname()[1]}:80", timeout=60)
    assert taken.returncode == 1 and taken.stderr.count("\n") == 1
    assert "is taken" in taken.stderr
    for bad in ("80", "0:80", "8080:80/sctp", "10.0.0.1:8080:80"):
        refused = cli("run", bundle, "--print-command", "-p", bad)
        assert refused.returncode == 1 and "HOST_PORT:GUEST_PORT" in refused.stderr, bad
    path = write_lab(tmp_path, bundle, {"a": "", "b": ""}, [])
    spec = json.loads(path.read_text())
    spec["nodes"]["a"]["publish"] = ["8080:80"]
    spec["nodes"]["b"]["publish"] = ["8080:8080"]
    path.write_text(json.dumps(spec))
    twice = cli("lab", "up", path)
    assert twice.returncode == 1 and "published twice" in twice.stderr
    spec["nodes"]["b"]["publish"] = ["8081:80"]
    path.write_text(json.dumps(spec))
    for argv, message in ((["exec", path, "nosuch", "--", "true"], "has no node 'nosuch'"),
                          (["cp", path, "a.txt", "b.txt"], "one side of `lab cp` is NODE:PATH"),
                          (["cp", path, "a:/etc/hosts", "b:/tmp"], "one side of `lab cp`")):
        done = cli("lab", *argv)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


@pytest.mark.engine
@pytest.mark.boot
def test_run_serves_the_channel_and_a_published_port(bundle: Path,
                                                     tmp_path: Path) -> None:
    port = free_port()
    master, slave = pty.openpty()
    proc = subprocess.Popen([*MINIVM, "run", str(bundle), "--accel", "tcg", "-p", f"{port}:8000",
                             "--disk-dir", str(tmp_path / "vm")],
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        sock = tmp_path / "vm" / "control.sock"
        deadline = time.monotonic() + 120
        while True:  # the channel answers once the main process runs
            if select.select([master], [], [], 0.2)[0]:
                os.read(master, 65536)
            try:
                ch = control.Channel(sock, what="vm", timeout=2)
                break
            except MinivmError:
                assert time.monotonic() < deadline and proc.poll() is None
        with ch:
            err = bytearray()
            code = ch.exec(["sh", "-c", "mkdir -p /www && echo via-run > /www/index.html && "
                            "httpd -p 8000 -h /www"], stderr=err.extend)
            assert code == 0, err
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert r.read() == b"via-run\n"
        os.write(master, b"\x1d")  # Ctrl-]: detach, which powers the VM off
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)

"""Labs and `minivm run` for real: MiniVMs under TCG linked by GNS3's UDP tunnels.

The appliance is alpine-minivm's look-alike (busybox userland, the shipped etc/), built with
`minivm build` and bundled with the kernel kit. At most three VMs run at once (2 shared cores).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from minivm import lab
from minivm.vm import console
from minivm.vm.console import CURSOR_REPORT
from tests.cli import MINIVM, cli
from tests.labs import READY, fsck_overlay, ip, run_single_then_resume, variant, write_lab
from tests.ports import free_udp_ports

REPO = Path(__file__).resolve().parent.parent


def session(path: Path, node: str) -> console.Session:
    s = console.Session(lab.console_address(path, node))
    s.sendline()
    s.expect(r"[#$] ", timeout=30)
    return s


def check(s: console.Session, command: str, timeout: float = 60) -> str:
    code, out = s.run(command, timeout)
    assert code == 0, f"{command!r} failed ({code}):\n{out}"
    return out


@pytest.mark.boot
def test_two_nodes_ping_transfer_crash_recover_and_down(bundle: Path, tmp_path: Path) -> None:
    path = write_lab(tmp_path, bundle, {"r1": ip("10.0.0.1/24"), "r2": ip("10.0.0.2/24")},
                     ["r1:eth0 -- r2:eth0"])
    up = cli("lab", "up", path, "--wait", READY, "--json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    assert info["started"] == ["r1", "r2"]
    ports = {n: info["nodes"][n]["ports"]["eth0"] for n in ("r1", "r2")}
    assert ports["r1"] != ports["r2"]
    try:
        with session(path, "r1") as r1, session(path, "r2") as r2:
            assert "0 packets received" not in check(r1, "ping -c 3 -W 5 10.0.0.2")
            check(r2, "(nc -l -p 5000 > /tmp/got; echo RECV-DONE) &")
            sent = check(r1, "dd if=/dev/urandom of=/tmp/data bs=1024 count=4096 2>/dev/null;"
                             " md5sum /tmp/data").split()[0]
            check(r1, "nc -w 10 10.0.0.2 5000 < /tmp/data", timeout=180)
            r2.expect("RECV-DONE", timeout=60)
            got = check(r2, "md5sum /tmp/got; wc -c < /tmp/got").split()
            assert got[0] == sent and got[-1] == str(4096 * 1024)
            check(r1, "echo synced-before-the-kill > /root/kept; sync")
            check(r1, "echo not-synced > /root/lost")  # may or may not survive

        pid = json.loads(cli("lab", "status", path, "--json").stdout)["nodes"]["r1"]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        status = cli("lab", "status", path)
        assert status.returncode == 3
        assert re.search(r"r1\s+crashed", status.stdout) and re.search(r"r2\s+running",
                                                                        status.stdout)
        again = cli("lab", "up", path, "--wait", READY, "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["started"] == ["r1"]
        assert "gone" in again.stderr  # the crash is reported, not silently reused
        with session(path, "r1") as r1:
            assert check(r1, "cat /root/kept").strip() == "synced-before-the-kill"
            # the restarted node is on the same link ports: r2 still reaches it
            assert "0 packets received" not in check(r1, "ping -c 2 -W 5 10.0.0.2")
    finally:
        down = cli("lab", "down", path, "--json")
    assert down.returncode == 0, down.stderr
    # both powered off by the ACPI button, neither quit nor killed
    assert json.loads(down.stdout)["stopped"] == {"r1": "acpi", "r2": "acpi"}
    for node in ("r1", "r2"):
        fsck_overlay(lab.node_dir(tmp_path / "lab.state", node) / "hda_disk.qcow2", tmp_path)
    assert "r1           stopped" in cli("lab", "status", path).stdout
    log = (lab.node_dir(tmp_path / "lab.state", "r1") / "console.log").read_text(
        errors="replace")
    assert log.count("minivm lab up") == 2  # boot logs kept across restarts


@pytest.mark.boot
def test_three_in_a_line_r2_routes(bundle: Path, tmp_path: Path) -> None:
    nodes = {"r1": ip("10.0.1.1/24", gateway="10.0.1.2"),
             "r2": ip("10.0.1.2/24") + " " + ip("10.0.2.2/24", "eth1"),
             "r3": ip("10.0.2.3/24", gateway="10.0.2.2")}
    two = variant(bundle, tmp_path / "two", adapters=2)
    path = write_lab(tmp_path, two, nodes, ["r1:eth0 -- r2:eth0", "r2:eth1 -- r3:eth0"],
                     telnet=("r2",))
    up = cli("lab", "up", path, "--wait", READY)
    assert up.returncode == 0, up.stderr
    try:
        consoles = {n: i["console"] for n, i in
                    json.loads(cli("lab", "status", path, "--json").stdout)["nodes"].items()}
        assert consoles["r2"].startswith("telnet:127.0.0.1:")  # asked for
        for name in ("r1", "r3"):  # the default: a socket only this user reaches
            sock = lab.node_dir(tmp_path / "lab.state", name) / "console.sock"
            assert consoles[name] == f"unix:{sock}"
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "lab.state").stat().st_mode) == 0o700
        with session(path, "r2") as r2:
            check(r2, "echo 1 > /proc/sys/net/ipv4/ip_forward")
        with session(path, "r1") as r1:
            out = check(r1, "ping -c 3 -W 5 10.0.2.3")
            assert "ttl=63" in out  # one hop: routed through r2
        attach_console(path, "r3")
    finally:
        down = cli("lab", "down", path, "--clean")
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "lab.state").exists()


def attach_console(path: Path, node: str) -> None:
    """`minivm lab console LAB NODE` on a terminal: at the prompt a command runs, Ctrl-]
    detaches (exit 0) and the node keeps running."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*MINIVM, "lab", "console", str(path), node], stdin=slave,
                            stdout=slave, stderr=slave, cwd=REPO)
    os.close(slave)
    buf, sent = b"", False
    try:
        deadline = time.monotonic() + 60
        while b"con42sole" not in buf:
            assert time.monotonic() < deadline, buf[-2000:].decode(errors="replace")
            data = os.read(master, 65536) if select.select([master], [], [], 1)[0] else b""
            buf += data
            if b"\x1b[6n" in data:
                os.write(master, CURSOR_REPORT)  # the shell asks where the cursor is
            if not sent and re.search(rb"[#$] (\x1b\[6n)?$", buf) and (not data or
                                                                  b"\x1b[6n" in data):
                os.write(master, b"echo con$((20+22))sole\r")  # at a quiet prompt
                sent = True
        os.write(master, b"\x1d")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert re.search(rf"{node}\s+running", cli("lab", "status", path).stdout)


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class FakeHost:
    """A host at the far end of a lab's external UDP link, emulated from its frames: answers
    ARP for its address and ICMP echo (one Ethernet frame per datagram, as QEMU sends them)."""

    MAC = bytes.fromhex("020000000a02")

    def __init__(self, address: str) -> None:
        self.ip = socket.inet_aton(address)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.frames = self.arp_replies = self.echo_replies = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                frame, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.frames += 1
            if reply := self._answer(frame):
                self.sock.sendto(reply, peer)

    def _answer(self, frame: bytes) -> bytes | None:
        src, kind, body = frame[6:12], frame[12:14], frame[14:]
        if kind == b"\x08\x06" and body[6:8] == b"\0\x01" and body[24:28] == self.ip:
            self.arp_replies += 1
            arp = body[:6] + b"\0\x02" + self.MAC + self.ip + body[8:18]  # to its sender
            return (src + self.MAC + kind + arp).ljust(60, b"\0")
        ihl = (body[0] & 0xF) * 4 if body else 0
        if kind == b"\x08\x00" and body[9] == 1 and body[16:20] == self.ip \
                and body[ihl] == 8:
            self.echo_replies += 1
            icmp = b"\0\0\0\0" + body[ihl + 4:]
            icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
            header = body[:8] + b"\x40\x01\0\0" + body[16:20] + body[12:16] + body[20:ihl]
            header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
            return src + self.MAC + kind + header + icmp
        return None

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.mark.boot
def test_external_udp_link_reaches_a_host_outside_the_lab(bundle: Path, tmp_path: Path) -> None:
    """A link to `udp:HOST:RPORT:LPORT`: the node's frames reach whatever listens on RPORT,
    and what is sent to LPORT reaches the node (here a host emulated in the test: ping)."""
    host = FakeHost("10.0.9.2")
    (local,) = free_udp_ports(1)
    path = write_lab(tmp_path, bundle, {"r1": ip("10.0.9.1/24")},
                     [f"r1:eth0 -- udp:127.0.0.1:{host.port}:{local}"])
    try:
        up = cli("lab", "up", path, "--wait", READY)
        assert up.returncode == 0, up.stderr
        with session(path, "r1") as r1:
            _, out = r1.run("ping -c 3 -W 5 10.0.9.2", 60)
        seen = f"frames {host.frames}, ARP {host.arp_replies}, echo {host.echo_replies}"
        assert re.search(r"3 packets transmitted, 3 packets received", out), out + seen
        assert host.arp_replies >= 1 and host.echo_replies == 3
    finally:
        down = cli("lab", "down", path, "--clean")
        host.close()
    assert down.returncode == 0, down.stderr


@pytest.mark.boot
def test_partial_failure_rolls_back(bundle: Path, tmp_path: Path) -> None:
    """r2's QEMU refuses its options: r1, already started, is stopped again; nothing stays."""
    bad = variant(bundle, tmp_path / "bad", options="-device no-such-device")
    path = tmp_path / "lab.yaml"
    path.write_text(json.dumps({"accel": "tcg", "nodes": {
        "r1": {"appliance": str(bundle)}, "r2": {"appliance": str(bad)}},
        "links": ["r1:eth0 -- r2:eth0"]}))
    refused = cli("lab", "up", path)  # off the allow-list: refused before anything starts
    assert "QEMU option -device no-such-device" in refused.stderr
    assert not (tmp_path / "lab.state" / "state.json").exists()
    result = cli("lab", "up", path, "--allow-unsafe-options")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: node r2: QEMU failed")
    assert "no-such-device" in result.stderr
    state = tmp_path / "lab.state"
    assert not (state / "state.json").exists()
    assert not list(state.glob("**/hda_disk.qcow2"))
    pids = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True).stdout
    assert not pids.strip(), "a QEMU of the failed lab still runs"


@pytest.mark.boot
def test_silent_kvm_node_is_restarted_under_tcg(bundle: Path, tmp_path: Path) -> None:
    """A KVM that passed the probe once (the verdict says yes) but runs no Linux now: the node
    prints nothing, is started again under TCG with one warning line, and boots; the verdict
    is turned to no, so the next `up` picks TCG at once."""
    from minivm import hostfacts, paths
    from minivm.gns3 import reader
    from tests import kvm_standin

    folder = kvm_standin.install(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}
    kernel = reader.load(bundle).kernel
    assert kernel is not None
    # the verdict is keyed by the QEMU the lab will find on PATH: the stand-in
    verdict = hostfacts.record_verdict(kernel, True, "seeded by the test",
                                       qemu=str(folder / kvm_standin.NAME))
    assert verdict.is_relative_to(paths.cache_dir())
    path = tmp_path / "lab.yaml"
    path.write_text(json.dumps({"accel": "auto", "nodes": {"r1": {"appliance": str(bundle)}}}))
    try:
        if not os.access(hostfacts.KVM_DEVICE, os.R_OK | os.W_OK):
            pytest.skip(f"{hostfacts.KVM_DEVICE} is not here: auto never tries KVM")
        up = subprocess.run([*MINIVM, "lab", "up", str(path), "--wait", READY, "--timeout",
                             "300"], capture_output=True, text=True, timeout=400, env=env,
                            cwd=REPO)
        assert up.returncode == 0, up.stderr
        warnings = [line for line in up.stderr.splitlines() if "restarted under TCG" in line]
        assert len(warnings) == 1 and "r1" in warnings[0], up.stderr
        status = json.loads(cli("lab", "status", path, "--json").stdout)
        assert status["nodes"]["r1"]["accel"] == "tcg"
        assert json.loads(verdict.read_text())["kvm"] is False
    finally:
        down = cli("lab", "down", path, "--clean")
        verdict.unlink(missing_ok=True)
    assert down.returncode == 0, down.stderr


@pytest.mark.boot
def test_run_single_shows_the_recovery_shell_then_resumes(bundle: Path) -> None:
    run_single_then_resume(bundle, "--accel", "tcg")

"""The QEMU command line (GNS3's, read from gns3-server 3.0), the .gns3a reader, the lab file
checks, port holding and the accelerator choice: no VM is booted here."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from minivm import hostfacts, lab
from minivm.errors import MinivmError
from minivm.gns3 import reader
from minivm.gns3.machine import machine_from_appliance
from minivm.lab import ports as lab_ports
from minivm.vm import accel, qemu
from tests.fakeproject import make_appliance

NODE = uuid.UUID("0c794c66-1234-4abc-8def-0123456789ab")


def test_command_line_matches_what_gns3_ran(tmp_path: Path) -> None:
    """The line a gns3-server 3.0.6 logged for a node with one linked adapter (its appliance
    written before no_timer_check was in every MiniVM command line: the runner adds it)."""
    app = reader.load(make_appliance(tmp_path / "a", adapters=1))
    hda = tmp_path / "n" / "hda_disk.qcow2"
    m = machine_from_appliance(
        app, name="t-1", node_id=NODE, disks=[hda, tmp_path / "n" / "hdb_disk.qcow2"],
        adapters=[qemu.UdpTunnel(10004, "127.0.0.1", 10005)],
        console=qemu.Console("telnet", port=5001), monitor=tmp_path / "m.sock")
    line = shlex.join(qemu.command_line(m))
    expected = (
        "qemu-system-x86_64 -name t-1 -m 256M -smp cpus=1,maxcpus=1,sockets=1 -accel tcg "
        f"-boot order=c -device virtio-scsi-pci,id=scsi0 -drive file={hda},if=none,id=drive0,"
        "index=0,media=disk -device scsi-hd,drive=drive0")
    assert line.startswith(expected)
    tail = (
        f"-initrd {app.initrd} -kernel {app.kernel} "
        "-append 'no_timer_check console=ttyS0 quiet root=/dev/sda rw' "
        f"-uuid {NODE} -serial telnet:127.0.0.1:5001,server,nowait "
        f"-monitor unix:{tmp_path}/m.sock,server,nowait -net none "
        "-device i82801b11-bridge,id=dmi_pci_bridge1 "
        "-device pci-bridge,id=pci-bridge1,bus=dmi_pci_bridge1,chassis_nr=0x1,addr=0x1,shpc=off "
        "-device virtio-net-pci,mac=0e:79:4c:66:00:00,speed=10000,duplex=full,bus=pci-bridge1,"
        "addr=0x00,netdev=gns3-0 "
        "-netdev socket,id=gns3-0,udp=127.0.0.1:10005,localaddr=127.0.0.1:10004 -display none")
    assert line.endswith(tail)


def test_unconnected_adapters_have_no_backend_and_options_come_last(tmp_path: Path) -> None:
    app = reader.load(make_appliance(tmp_path, adapters=3, options="-device virtio-rng-pci"))
    m = machine_from_appliance(app, name="n", node_id=NODE, disks=[Path("a"), Path("b")],
                                    adapters=[None, qemu.UdpTunnel(1, "10.0.0.9", 2), None])
    argv = qemu.command_line(m)
    nics = [a for a in argv if a.startswith("virtio-net-pci")]
    assert [("netdev=" in n) for n in nics] == [False, True, False]
    assert argv.count("-netdev") == 1 and "udp=10.0.0.9:2" in argv[argv.index("-netdev") + 1]
    assert argv[-2:] == ["-device", "virtio-rng-pci"]
    macs = [n.split("mac=")[1].split(",")[0] for n in nics]
    assert macs == ["0e:79:4c:66:00:00", "0e:79:4c:66:00:01", "0e:79:4c:66:00:02"]
    assert int(macs[0][:2], 16) & 0b11 == 0b10  # unicast, locally administered


def test_many_adapters_get_a_second_bridge(tmp_path: Path) -> None:
    app = reader.load(make_appliance(tmp_path, adapters=40))
    m = machine_from_appliance(app, name="n", node_id=NODE, disks=[Path("a"), Path("b")])
    line = " ".join(qemu.command_line(m))
    assert "pci-bridge,id=pci-bridge2,bus=dmi_pci_bridge2" in line
    assert "mac=0e:79:4c:66:00:27,speed=10000,duplex=full,bus=pci-bridge2,addr=0x07" in line


@pytest.mark.parametrize(("interface", "expected"), [
    ("scsi", ["-device", "virtio-scsi-pci,id=scsi1",
              "-drive", "file=D,if=none,id=drive1,index=1,media=disk",
              "-device", "scsi-hd,drive=drive1"]),
    ("virtio", ["-drive", "file=D,if=virtio,index=1,media=disk,id=drive1"]),
    ("ide", ["-drive", "file=D,if=ide,index=1,media=disk,id=drive1"]),
    ("sata", ["-device", "ahci,id=ahci1", "-drive", "file=D,if=none,id=drive1,index=1,media=disk",
              "-device", "ide-hd,drive=drive1,bus=ahci1.0,id=drive1"]),
])
def test_disk_interfaces_as_gns3(interface: str, expected: list[str]) -> None:
    m = qemu.Machine(name="n", node_id=NODE, ram=64,
                     drives=(qemu.Drive(Path("R"), "virtio"), qemu.Drive(Path("D"), interface)))
    argv = qemu.command_line(m)
    start = argv.index("-boot") + 4  # after -boot order=c and the first (virtio) disk
    assert argv[start:start + len(expected)] == expected


def test_forbidden_options_are_refused(tmp_path: Path) -> None:
    app = reader.load(make_appliance(tmp_path, options="-netdev user,id=x"))
    with pytest.raises(MinivmError, match="-netdev is not allowed"):
        machine_from_appliance(app, name="n", node_id=NODE, disks=[Path("a"), Path("b")])


def test_console_variants_and_kvm(tmp_path: Path) -> None:
    base = qemu.Machine(name="n", node_id=NODE, ram=64, accel="kvm", qmp=tmp_path / "q.sock",
                        console=qemu.Console("unix", path=tmp_path / "c.sock",
                                             log=tmp_path / "c.log"), paused=True)
    line = " ".join(qemu.command_line(base))
    assert "-enable-kvm -machine smm=off" in line
    assert (f"-chardev socket,id=con0,path={tmp_path}/c.sock,server=on,wait=off,"
            f"logfile={tmp_path}/c.log,logappend=on -serial chardev:con0") in line
    assert f"-qmp unix:{tmp_path}/q.sock,server,nowait" in line and " -S" in line
    telnet = qemu.Console("telnet", port=5000, log=tmp_path / "c.log")
    line = " ".join(qemu.command_line(qemu.Machine(name="n", node_id=NODE, ram=64,
                                                   console=telnet)))
    assert "host=127.0.0.1,port=5000,telnet=on,server=on,wait=off" in line


def test_overlays_are_linked_clones_and_the_image_is_never_written(tmp_path: Path) -> None:
    app = reader.load(make_appliance(tmp_path / "a"))
    before = app.disks[0][0].read_bytes()
    disks = qemu.create_overlays(app.images, tmp_path / "node")
    assert [d.name for d in disks] == ["hda_disk.qcow2", "hdb_disk.qcow2"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disks[0])],
                                     capture_output=True, check=True).stdout)
    assert info["backing-filename"] == str(app.disks[0][0].resolve())
    assert info["backing-filename-format"] == "qcow2"
    subprocess.run(["qemu-io", "-c", "write -P 0x55 0 1M", str(disks[0])], check=True,
                   capture_output=True)
    assert app.disks[0][0].read_bytes() == before
    mtime = disks[0].stat().st_mtime_ns
    qemu.create_overlays(app.images, tmp_path / "node")  # kept: the node's disk persists
    assert disks[0].stat().st_mtime_ns == mtime


def test_reader_errors_are_one_line(tmp_path: Path) -> None:
    path = make_appliance(tmp_path)
    (tmp_path / "modules.qcow2").unlink()
    with pytest.raises(MinivmError, match=r"appliance image .*modules.qcow2 is missing"):
        reader.load(path)
    with pytest.raises(MinivmError, match="not found"):
        reader.load(tmp_path / "nope.gns3a")
    with pytest.raises(MinivmError, match="appliance 'nothing-built' not found"):
        reader.load("nothing-built")


def write_lab(folder: Path, text: str) -> Path:
    make_appliance(folder / "app", adapters=2)
    path = folder / "lab.yaml"
    path.write_text(text)
    return path


NODES = "nodes:\n  r1: {appliance: app/t.gns3a}\n  r2: {appliance: app/t.gns3a}\n"


@pytest.mark.parametrize(("text", "message"), [
    (NODES + "links: ['r1:eth0 -- r9:eth0']", "unknown node 'r9'"),
    (NODES + "links: ['r1:eth0 -- r2:eth0', 'r1:eth0 -- r2:eth1']",
     "adapter r1:eth0 is used twice"),
    (NODES + "links: ['r1:eth2 -- r2:eth0']", "r1 has no adapter eth2"),
    ("nodes:\n  r1: {appliance: app/t.gns3a, adapters: 3}\n", "asks for 3 adapters, the appliance"),
    ("nodes:\n  r1: {appliance: app/missing.gns3a}\n", "appliance file .*missing.gns3a not found"),
    (NODES + "links: ['r1:eth0 r2:eth0']", "is not 'a:eth0 -- b:eth0'"),
    ("nodes: {r1: {appliance: app/t.gns3a, rom: 1}}\n", "unknown key"),
])
def test_lab_file_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MinivmError, match=message):
        lab.load(write_lab(tmp_path, text))


def test_lab_file_parses_links_and_external_ends(tmp_path: Path) -> None:
    lab_ = lab.load(write_lab(tmp_path, NODES + "links:\n  - r1:eth0 -- r2:eth1\n"
                                               "  - udp:127.0.0.1:40001:40000 -- r1:eth1\n"))
    assert lab_.links[0].a == ("r1", 0) and lab_.links[0].b == ("r2", 1)
    assert lab_.links[1].a == ("r1", 1)
    assert lab_.links[1].b == lab.External("127.0.0.1", 40001, 40000)
    ports = {"r1:eth0": 1000, "r2:eth1": 2000, "r1:eth1": 40000}
    tunnels = lab_ports.tunnels(lab_, ports, "r1")
    assert tunnels == [qemu.UdpTunnel(1000, "127.0.0.1", 2000),
                       qemu.UdpTunnel(40000, "127.0.0.1", 40001)]
    assert lab_ports.tunnels(lab_, ports, "r2") == [None, qemu.UdpTunnel(2000, "127.0.0.1", 1000)]
    assert lab_.state_dir == tmp_path / "lab.state"


def test_held_ports_are_shared_with_qemu_only(tmp_path: Path) -> None:
    """A held port: a port-0 allocation never gets it, a plain bind is refused, a
    SO_REUSEADDR bind (what QEMU does) shares it."""
    held = lab.hold_port()
    port = held.getsockname()[1]
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    plain.close()
    with pytest.raises(MinivmError, match=f"port {port} .* is taken"):
        lab.hold_port(port)
    qemu_like = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    qemu_like.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    qemu_like.bind(("127.0.0.1", port))
    qemu_like.close()
    held.close()


def test_port_taken_and_qemu_missing_start_nothing(tmp_path: Path, monkeypatch) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    path = write_lab(tmp_path, NODES + f"links: ['r1:eth0 -- udp:127.0.0.1:9:{port}']\n")
    with pytest.raises(MinivmError, match=f"port {port} .*is taken"):
        lab.up(lab.load(path), accel="tcg")
    taken.close()
    assert not list((tmp_path / "lab.state").glob("**/hda_disk.qcow2"))
    assert not (tmp_path / "lab.state" / "state.json").exists()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    with pytest.raises(MinivmError, match="qemu-system-x86_64 is not installed"):
        lab.up(lab.load(path), accel="tcg")


def test_accel_choice() -> None:
    assert accel.choose("tcg") == "tcg"
    assert accel.choose("auto", kvm_setting="disable") == "tcg"
    with pytest.raises(MinivmError, match="--accel 'fast'"):
        accel.choose("fast")


@pytest.mark.boot
def test_auto_probes_kvm_and_says_why() -> None:
    """Here /dev/kvm answers but a guest hangs: the probe (bounded by its own timeout) says
    so, and auto uses TCG."""
    hostfacts.kvm_works.cache_clear()
    works, why = hostfacts.kvm_works()
    assert why == "a KVM guest ran" if works else why.startswith(
        ("/dev/kvm is missing", "a KVM guest did not run within", "KVM failed: ")), why
    chosen = accel.choose("auto")
    assert chosen == ("kvm" if works else "tcg"), why


def test_lab_nodes_are_named_after_themselves_unless_told_otherwise():
    from minivm.lab.spec import with_hostname

    assert with_hostname("r1", "") == "hostname=r1"
    assert with_hostname("r1", "quiet") == "hostname=r1 quiet"
    assert with_hostname("r1", "ip=10.0.0.1/24::::core:eth0") == "ip=10.0.0.1/24::::core:eth0"
    assert with_hostname("r1", "ip=10.0.0.1/24 hostname=x") == "ip=10.0.0.1/24 hostname=x"
    assert with_hostname("r1", "ip=10.0.0.1/24") == "hostname=r1 ip=10.0.0.1/24"


"""A .gns3a that minivm did not write: its QEMU options pass an allow-list, its file names are
plain names beside it. Each hostile case is refused naming the option or the file, in
``run``, ``lab up``, ``gns3 push`` and ``appliance --check``, before anything starts.
No VM is booted: the refusals come first."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from minivm.errors import MinivmError
from minivm.fsutil import plain_name_problem
from minivm.gns3 import appliance, push, reader
from minivm.gns3.machine import machine_from_appliance
from minivm.vm import options, qemu
from tests.fakeproject import make_appliance

REPO = Path(__file__).resolve().parent.parent
MINIVM = [str(Path(sys.executable).with_name("minivm"))]
NODE = uuid.UUID("0c794c66-1234-4abc-8def-0123456789ab")

# Each reaches a host file, device or socket, or undoes minivm's own line: all refused.
HOSTILE = [
    ("-serial file:/tmp/x", "-serial"),
    ("-serial stdio", "-serial"),
    ("-chardev file,id=c,path=/tmp/x -device isa-serial,chardev=c", "-chardev"),
    ("-monitor unix:/tmp/m,server,nowait", "-monitor"),
    ("-qmp tcp:0.0.0.0:4444,server", "-qmp"),
    ("-netdev user,id=n,hostfwd=tcp::2222-:22", "-netdev"),
    ("-nic user", "-nic"),
    ("-drive file=/etc/passwd,format=raw", "-drive"),
    ("-hda /etc/passwd", "-hda"),
    ("-cdrom /etc/passwd", "-cdrom"),
    ("-blockdev driver=file,filename=/etc/passwd,node-name=x", "-blockdev"),
    ("-fsdev local,id=f,path=/,security_model=none", "-fsdev"),
    ("-virtfs local,path=/,mount_tag=h,security_model=none", "-virtfs"),
    ("-kernel /etc/passwd", "-kernel"),
    ("-initrd /etc/passwd", "-initrd"),
    ("-append init=/bin/sh", "-append"),
    ("-bios /etc/passwd", "-bios"),
    ("-L /tmp", "-L"),
    ("-option-rom /etc/passwd", "-option-rom"),
    ("-object memory-backend-file,id=m,size=64M,mem-path=/tmp/x,share=on", "-object"),
    ("-mem-path /tmp", "-mem-path"),
    ("-plugin /tmp/evil.so", "-plugin"),
    ("-readconfig /tmp/x.cfg", "-readconfig"),
    ("-writeconfig /tmp/x.cfg", "-writeconfig"),
    ("-incoming exec:touch${IFS}/tmp/x", "-incoming"),
    ("-add-fd fd=3,set=1", "-add-fd"),
    ("-loadvm snap", "-loadvm"),
    ("-D /tmp/qemu.log", "-D"),
    ("-trace enable=*,file=/tmp/t", "-trace"),
    ("-pidfile /tmp/p", "-pidfile"),
    ("-daemonize", "-daemonize"),
    ("-runas nobody", "-runas"),
    ("-chroot /", "-chroot"),
    ("-gdb tcp::1234", "-gdb"),
    ("-s", "-s"),
    ("-vnc 0.0.0.0:0", "-vnc"),
    ("-spice port=5900", "-spice"),
    ("-display gtk", "-display gtk"),
    ("-audiodev pa,id=a", "-audiodev"),
    ("-parallel file:/tmp/x", "-parallel"),
    ("-debugcon file:/tmp/x", "-debugcon"),
    ("-acpitable file=/etc/passwd", "-acpitable"),
    ("-fw_cfg name=opt/x,file=/etc/passwd", "-fw_cfg"),
    ("-smbios file=/etc/passwd", "-smbios file=/etc/passwd"),
    ("-global e1000.romfile=/etc/passwd", "-global"),
    ("-set drive.drive0.file=/etc/passwd", "-set"),
    ("-device e1000,romfile=/etc/passwd", "romfile"),
    ("-device e1000,romfile", "romfile"),
    ("-device loader,file=/etc/passwd,addr=0x1000", "-device loader"),
    ("-device vfio-pci,host=01:00.0", "-device vfio-pci"),
    ("-device virtconsole,chardev=minivm-control", "-device virtconsole"),
    ("-device virtio-net-pci,netdev=gns3-0", "netdev"),
    ("-device scsi-hd,drive=drive0", "-device scsi-hd"),
    ("-device e1000,id=a,,romfile=/etc/passwd", "escaped comma"),
    ('-device {"driver":"e1000","romfile":"/etc/passwd"}', "JSON"),
    ("-machine pc,kernel=/etc/passwd", "'kernel'"),
    ("-machine pc,dumpdtb=/tmp/x", "'dumpdtb'"),
    ("-M pc,firmware=/etc/passwd", "'firmware'"),
    ("-boot order=c,splash=/etc/passwd", "'splash'"),
    ("-cpu max,x=/etc", "CPU property"),
    ("-m 256,maxmem=/x", "maxmem"),
    ("/etc/passwd", "bare word"),
    ("-accel tcg", "-accel"),
    ("--serial file:/tmp/x", "--serial"),
    ("-cpu", "needs a value"),
    # arm64 (qemu-system-aarch64 -machine virt): its file-reading properties and devices
    ("-machine virt,dtb=/etc/passwd", "'dtb'"),
    ("-machine virt,gic-version=max,dumpdtb=/tmp/x", "'dumpdtb'"),
    ("-M virt,firmware=/etc/passwd", "'firmware'"),
    ("-machine virt,kernel=/etc/passwd", "'kernel'"),
    ("-machine virt,initrd=/etc/passwd", "'initrd'"),
    ("-machine virt,append=init=/bin/sh", "'append'"),
    ("-machine virt,memory-backend=ram0", "'memory-backend'"),
    ("-machine virt,accel=kvm", "'accel'"),
    ("-machine virt,confidential-guest-support=sev0", "'confidential-guest-support'"),
    ("-dtb /etc/passwd", "-dtb"),
    ("-bios /etc/passwd", "-bios"),
    ("-pflash /etc/passwd", "-pflash"),
    ("-device virtio-9p-device,fsdev=f,mount_tag=m", "-device virtio-9p-device"),
    ("-device virtio-9p-pci,fsdev=f,mount_tag=m", "-device virtio-9p-pci"),
    ("-device virtio-input-host-device,evdev=/dev/input/event0", "virtio-input-host-device"),
    ("-device virtio-input-host-pci,evdev=/dev/input/event0", "virtio-input-host-pci"),
    ("-device virtio-blk-device,drive=drive0", "-device virtio-blk-device"),
    ("-device virtio-serial-device", "-device virtio-serial-device"),
    ("-device virtio-crypto-device,cryptodev=c0", "-device virtio-crypto-device"),
    ("-device virtio-mem-pci,memdev=m0", "-device virtio-mem-pci"),
    ("-device virtio-net-device,netdev=gns3-0", "netdev"),
    ("-device virtio-gpu-device,romfile=/etc/passwd", "romfile"),
    ("-device vhost-vsock-device,guest-cid=3", "-device vhost-vsock-device"),
]
SAFE = [
    "", "-device virtio-rng-pci", "-cpu max,+avx2,-x2apic,kvm=off -smp 1,cores=1 -m 512M",
    "-machine pc,usb=off,smm=off -rtc base=utc,clock=host -nographic -no-reboot",
    "-device e1000,romfile=,mac=0e:00:00:00:00:01,id=x -device usb-tablet -usb",
    "-boot order=c,menu=off -vga std -display none -k en-us -watchdog-action poweroff",
    "-smbios 'type=1,manufacturer=ACME Labs,product=Router 9000,serial=XYZ-1'",
    "--no-shutdown -device i6300esb -overcommit mem-lock=off",
]
# What an arm64 appliance (qemu-system-aarch64 -machine virt) may legitimately add.
SAFE_ARM64 = [
    "-machine virt,gic-version=max -cpu max",  # the platform's own (minivm.platforms.ARM64)
    "-M virt,gic-version=3,its=on,highmem=on -cpu cortex-a72",
    "-machine virt,virtualization=on,secure=off,mte=off,iommu=smmuv3 -cpu cortex-a57",
    "-machine type=virt,gic-version=2,dtb-randomness=off,default-bus-bypass-iommu=off "
    "-cpu max,pauth-impdef=on,sve=off -m 256M",
    "-machine virt -cpu max -device virtio-rng-device -device virtio-balloon-device "
    "-device virtio-net-device,mac=0e:00:00:00:00:09 -device virtio-tablet-device "
    "-device virtio-keyboard-device -device virtio-mouse-device -device virtio-scsi-device",
    "-machine virt -cpu max -device virtio-rng-pci -device virtio-iommu-pci "
    "-device virtio-gpu-device -device qemu-xhci -device usb-kbd -device pcie-root-port,id=rp1",
]
# KVM only (the host's CPU): QEMU refuses it under TCG, an appliance may still name it
SAFE_ARM64_KVM = ["-machine virt,gic-version=host -cpu host"]


@pytest.mark.parametrize(("text", "named"), HOSTILE)
def test_hostile_options_are_refused_naming_the_option(text: str, named: str) -> None:
    with pytest.raises(MinivmError) as info:
        options.check(shlex.split(text), where="x.gns3a")
    message = str(info.value)
    assert message.startswith("x.gns3a: QEMU option ") and named in message
    assert "--allow-unsafe-options" in message and "\n" not in message
    options.check(shlex.split(text), where="x.gns3a", allow_unsafe=True)  # the user's call


@pytest.mark.parametrize("text", SAFE + SAFE_ARM64 + SAFE_ARM64_KVM)
def test_safe_options_pass(text: str) -> None:
    assert options.problem(shlex.split(text)) is None


def test_the_arm64_platform_options_pass() -> None:
    from minivm.platforms import ARM64

    assert options.problem(ARM64.machine_options) is None


def test_the_shipped_default_options_pass() -> None:
    import yaml

    defaults = yaml.safe_load((REPO / "appliances" / "defaults.yaml").read_text())
    assert options.problem(shlex.split(defaults["options"])) is None


@pytest.mark.boot
@pytest.mark.parametrize(("binary", "sets"), [("qemu-system-x86_64", SAFE[1:]),
                                              ("qemu-system-aarch64", SAFE_ARM64)],
                         ids=["x86_64", "aarch64"])
def test_qemu_accepts_every_safe_option_set(tmp_path: Path, binary: str,
                                            sets: list[str]) -> None:
    """QEMU itself takes each allowed set: started paused (-S) and daemonized (it returns once
    its devices are made, or fails naming the bad one), then stopped."""
    for i, text in enumerate(sets):
        words = tuple(w for w in shlex.split(text) if w != "-nographic")  # not with -daemonize
        pidfile = tmp_path / f"{i}.pid"
        m = qemu.Machine(name="n", node_id=NODE, ram=64, options=words, paused=True,
                         daemonize=True, pidfile=pidfile, qemu=binary)
        done = subprocess.run(qemu.command_line(m), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (text, done.stderr)
        pid = int(pidfile.read_text())
        os.kill(pid, 15)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


@pytest.mark.parametrize(("name", "ok"), [
    ("root.qcow2", True), ("minivm-6.1.0-vmlinuz", True), ("a..b", True),
    ("", False), ("../etc/passwd", False), ("/etc/passwd", False), ("a/b", False),
    ("..", False), (".", False), (".hidden", False), ("..qcow2", False), ("a\\b", False),
    ("a\x00b", False), ("a\nb", False), ("x" * 256, False),
])
def test_plain_file_names(name: str, ok: bool) -> None:
    assert (plain_name_problem(name) is None) is ok


@pytest.mark.parametrize("filename", ["../outside.qcow2", "/etc/passwd", "sub/x.qcow2",
                                      ".x.qcow2", "a\x00b"])
def test_reader_refuses_image_names_that_are_not_plain(tmp_path: Path, filename: str) -> None:
    path = make_appliance(tmp_path / "a")
    (tmp_path / "outside.qcow2").write_bytes(b"secret")
    data = json.loads(path.read_text())
    data["versions"][0]["images"]["hda_disk_image"] = filename
    data["images"].append({"filename": filename, "version": "1"})
    path.write_text(json.dumps(data))
    with pytest.raises(MinivmError, match=r"hda_disk_image .* (path separator|dot|control)"):
        reader.load(path)
    problems = appliance.model_problems(data)  # what `appliance --check` reports
    assert any(p.startswith(f"images[4].filename {filename!r}") for p in problems), problems


def test_a_symbolic_link_out_of_the_bundle_is_neither_read_nor_uploaded(tmp_path: Path) -> None:
    path = make_appliance(tmp_path / "a")
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"PRIVATE KEY")
    (tmp_path / "a" / "root.qcow2").unlink()
    (tmp_path / "a" / "root.qcow2").symlink_to(secret)
    with pytest.raises(MinivmError, match="symbolic link out of its folder"):
        reader.load(path)


@pytest.mark.parametrize(("edit", "named"), [
    (lambda d: d["qemu"].update(adapter_type="e1000,romfile=/etc/passwd"), "adapter_type"),
    (lambda d: d.update(name="r1\x1b]0;owned\x07"), "name"),
    (lambda d: d.update(name=["r1"]), "name"),
    (lambda d: d.update(versions=["x"]), "versions"),
    (lambda d: d.update(images="x"), "images"),
])
def test_appliance_fields_that_reach_the_command_line_or_terminal(tmp_path: Path, edit,
                                                                   named: str) -> None:
    path = make_appliance(tmp_path / "a")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    if named == "images":  # not listed: nothing to check the names against, still plain
        assert reader.load(path).disks
        return
    with pytest.raises(MinivmError, match=named):
        reader.load(path)


def test_machine_and_template_refuse_unless_allowed(tmp_path: Path) -> None:
    app = reader.load(make_appliance(tmp_path / "a", options="-serial file:/tmp/x"))
    disks = [Path("a"), Path("b")]
    with pytest.raises(MinivmError, match="-serial"):
        machine_from_appliance(app, name="n", node_id=NODE, disks=disks)
    m = machine_from_appliance(app, name="n", node_id=NODE, disks=disks,
                                    unsafe_options=True)
    assert qemu.command_line(m)[-2:] == ["-serial", "file:/tmp/x"]
    with pytest.raises(MinivmError, match="-serial"):
        push.push(None, app)  # type: ignore[arg-type]  # refused before any request


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIVM_GNS3")}
    return subprocess.run([*MINIVM, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def test_every_command_refuses_before_starting(tmp_path: Path) -> None:
    """run, lab up (local and --server), gns3 push and appliance --check: one line naming the
    option, exit 1, nothing started (no state, no QEMU, no server contacted)."""
    bundle = make_appliance(tmp_path / "a", options="-serial file:/tmp/minivm-pwned")
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(json.dumps({"nodes": {"r1": {"appliance": str(bundle)}}}))
    server = "--server=http://127.0.0.1:9"  # nothing listens: it must not be reached
    for args in (["run", bundle], ["lab", "up", lab_file], ["lab", "up", lab_file, server],
                 ["gns3", "push", bundle, server], ["appliance", "--check", bundle]):
        done = cli(*args)
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "option -serial is not allowed" in lines[0], (
            args, done.stderr)
        assert "--allow-unsafe-options" in lines[0]
    assert not (tmp_path / "lab.state" / "state.json").exists()
    assert not Path("/tmp/minivm-pwned").exists()
    printed = cli("run", bundle, "--print-command", "--allow-unsafe-options")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.split()[-2:] == ["-serial", "file:/tmp/minivm-pwned"]

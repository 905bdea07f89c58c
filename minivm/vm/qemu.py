"""The one QEMU command-line builder: boots an appliance the way GNS3 does.

Everything that starts a MiniVM (``minivm run``, ``minivm lab``, the appliance boot test, the
benchmarks) describes the VM as a :class:`Machine` and turns it into argv with
:func:`command_line`; nothing else assembles QEMU arguments. The order and the spelling follow
gns3-server 3.0 (``gns3server/compute/qemu/qemu_vm.py``):

    -name N -m RAMM -smp cpus=C,maxcpus=C,sockets=1 [accel] -boot order=c
    disks (linked-clone overlays, per interface as GNS3) -initrd -kernel -append
    -uuid ID  console  monitor  -net none  NICs behind i82801b11-bridge + pci-bridge
    -netdev socket,udp=RHOST:RPORT,localaddr=127.0.0.1:LPORT per connected adapter
    -display none   the appliance's options (last)

Differences, each for the local use only: a QMP socket (``-qmp``) for control; the monitor on
a Unix socket instead of a TCP port; the console may carry a ``logfile`` (boot logs), which
needs QEMU's ``-chardev`` spelling of GNS3's ``-serial telnet:127.0.0.1:PORT,server,nowait``.

Two local additions that GNS3 never gets (the appliance stays GNS3's): the control channel, a
virtio-serial port named ``org.minivm.control`` on a Unix socket that the guest's init serves
(``minivm lab exec`` and ``cp``, see :mod:`minivm.vm.control`); and published ports, one extra
user-mode NIC (``-netdev user``, with ``hostfwd`` rules bound to 127.0.0.1 only) placed after
the node's own adapters, with a fixed MAC the init recognises (it names it ``publish0`` and
gives it ``PUBLISH_GUEST``/24), so it never takes one of eth0..ethN.

This layer knows machines, not appliances: :mod:`minivm.gns3.machine` turns a .gns3a into a
Machine, and :mod:`minivm.vm.launch` starts one. Reuse (appliance boot test, say)::

    app = reader.load(bundle)
    disks = create_overlays(app.images, workdir)    # the appliance's images are never written
    m = machine_from_appliance(app, name="t", node_id=uuid.uuid4(), disks=disks,
                               console=Console(ConsoleKind.UNIX, path=workdir / "console.sock"),
                               qmp=workdir / "qmp.sock")
    argv = command_line(m)
"""

from __future__ import annotations

import re
import shlex
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from minivm.errors import MinivmError
from minivm.fsutil import atomic_path
from minivm.hostfacts import KVM_ARGS
from minivm.kinds import ConsoleKind
from minivm.run import run
from minivm.vm import options

QEMU = "qemu-system-x86_64"

# Disk interfaces this command line builds, as GNS3 names them.
DISK_INTERFACES = ("ide", "sata", "nvme", "scsi", "virtio")
NICS_PER_BRIDGE = 32
CONTROL_PORT = "org.minivm.control"
# The translation cache of the VMs minivm runs under TCG, in MiB. QEMU's default (up to 1 GiB,
# never flushed until full) keeps every block a boot translated: ~50 MiB of an idle node's
# RSS. 16 MiB is flushed a few times per boot and puts an idle node at ~113 MiB (64 MB guest).
TB_SIZE = 16
# Every kernel a MiniVM boots gets it (also appliances written before it was in their
# command line): the kernel's timer check panics the boot of a vCPU the host starves.
NO_TIMER_CHECK = "no_timer_check"
PUBLISH_MAC = "0e:6d:76:70:75:62"  # the init knows this one: the published ports' NIC
PUBLISH_NET = "100.127.255.0/24"   # the end of the shared address space: rarely a lab's own
PUBLISH_HOST = "100.127.255.2"
PUBLISH_GUEST = "100.127.255.15"


@dataclass(frozen=True)
class Publish:
    """A published port: 127.0.0.1:host_port on the host reaches guest_port in the guest."""

    host_port: int
    guest_port: int
    protocol: Literal["tcp", "udp"] = "tcp"

    @property
    def text(self) -> str:
        return f"127.0.0.1:{self.host_port}->{self.guest_port}/{self.protocol}"


def parse_publish(text: str, where: str) -> Publish:
    """``HOST_PORT:GUEST_PORT[/tcp|/udp]`` (Docker's ``-p``, on 127.0.0.1 only)."""
    m = re.fullmatch(r"(?:127\.0\.0\.1:)?(\d+):(\d+)(?:/(tcp|udp))?", text.strip())
    ports = [int(m[1]), int(m[2])] if m else []
    if not m or not all(0 < p < 65536 for p in ports):
        raise MinivmError(f"{where}: published port {text!r} is not "
                          "HOST_PORT:GUEST_PORT[/tcp|/udp]",
                          hint="e.g. 8080:80 or 5353:53/udp; ports 1-65535, host side on "
                               "127.0.0.1 only")
    return Publish(ports[0], ports[1], m[3] or "tcp")  # type: ignore[arg-type]


def check_publish(publish: Sequence[Publish], where: str) -> None:
    """Refuse a host port published twice."""
    seen: set[tuple[int, str]] = set()
    for p in publish:
        if (p.host_port, p.protocol) in seen:
            raise MinivmError(f"{where}: host port {p.host_port}/{p.protocol} is published twice")
        seen.add((p.host_port, p.protocol))


@dataclass(frozen=True)
class UdpTunnel:
    """One end of a GNS3 link: frames go to remote_host:remote_port, arrive on local_port."""

    local_port: int
    remote_host: str
    remote_port: int
    local_host: str = "127.0.0.1"


@dataclass(frozen=True)
class Console:
    """The serial console (the guest's ttyS0).

    ``telnet``: a telnet server on 127.0.0.1:port (what GNS3 users expect); ``unix``: a stream
    server socket at ``path``; ``stdio``: QEMU's stdin/stdout. ``log`` keeps everything the guest
    prints, connected client or not. ``wait``: QEMU waits for a client before the guest starts.
    """

    kind: ConsoleKind = ConsoleKind.TELNET
    port: int | None = None
    path: Path | None = None
    log: Path | None = None
    wait: bool = False


@dataclass(frozen=True)
class Drive:
    """A disk as QEMU opens it: ``path`` (an overlay) on a GNS3 interface name. ``format``
    (QEMU probes when None, as GNS3 lets it) and ``snapshot`` (writes discarded) serve tests
    and benches that boot one image several times."""

    path: Path
    interface: str = "scsi"
    format: str | None = None
    snapshot: bool = False


@dataclass(frozen=True)
class Machine:
    """Everything that decides a MiniVM's QEMU command line."""

    name: str
    node_id: uuid.UUID
    ram: int
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    cpus: int = 1
    accel: Literal["kvm", "tcg"] = "tcg"
    drives: tuple[Drive, ...] = ()
    adapter_type: str = "virtio-net-pci"
    adapters: tuple[UdpTunnel | None, ...] = ()  # one per adapter; None: a NIC with no backend
    console: Console = field(default_factory=lambda: Console(ConsoleKind.NONE))
    monitor: Path | None = None  # HMP on a Unix socket
    qmp: Path | None = None
    control: Path | None = None  # the control channel's Unix socket (QEMU listens)
    publish: tuple[Publish, ...] = ()
    options: tuple[str, ...] = ()  # the appliance's: checked against minivm.vm.options
    unsafe_options: bool = False  # --allow-unsafe-options: pass them unchecked
    paused: bool = False  # -S: the guest starts on QMP "cont"
    pidfile: Path | None = None
    daemonize: bool = False  # QEMU returns once its sockets are bound (errors come first)
    qemu: str = QEMU
    tb_size: int | None = None  # TCG's translation cache in MiB (None: QEMU's, up to 1 GiB)


def mac_address(node_id: uuid.UUID, adapter: int) -> str:
    """The MAC of a node's adapter: GNS3's scheme (3 bytes of the node id, then the adapter
    number), with the first byte 0e instead of GNS3's 0c so it is locally administered."""
    value = int(f"0e{node_id.hex[2:8]}0000", 16) + adapter
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def _chardev_path(value: Path | str) -> str:
    return str(value).replace(",", ",,")


def accel_args(accel: str, tb_size: int | None = None) -> list[str]:
    """QEMU's accelerator arguments, as GNS3 spells them for KVM."""
    if accel == "kvm":
        return list(KVM_ARGS)
    return ["-accel", "tcg" if tb_size is None else f"tcg,tb-size={tb_size}"]


def disk_args(drives: Sequence[Drive]) -> list[str]:
    """Per disk, exactly as GNS3's _disk_interface_options (QEMU >= 4.2)."""
    args: list[str] = []
    for i, d in enumerate(drives):
        disk = _chardev_path(d.path)
        disk += f",format={d.format}" if d.format else ""
        disk += ",snapshot=on" if d.snapshot else ""
        base = f"file={disk},if=none,id=drive{i},index={i},media=disk"
        if d.interface == "scsi":
            args += ["-device", f"virtio-scsi-pci,id=scsi{i}", "-drive", base,
                     "-device", f"scsi-hd,drive=drive{i}"]
        elif d.interface == "sata":
            args += ["-device", f"ahci,id=ahci{i}", "-drive", base,
                     "-device", f"ide-hd,drive=drive{i},bus=ahci{i}.0,id=drive{i}"]
        elif d.interface == "nvme":
            args += ["-drive", base, "-device", f"nvme,drive=drive{i},serial={i}"]
        elif d.interface in ("virtio", "ide"):
            args += ["-drive", f"file={disk},if={d.interface},index={i},media=disk,id=drive{i}"]
        else:
            raise MinivmError(f"disk interface {d.interface!r} is not supported",
                              hint="use scsi, virtio, ide, sata or nvme")
    return args


def _boot_args(m: Machine) -> list[str]:
    args: list[str] = []
    if m.initrd:
        args += ["-initrd", _chardev_path(m.initrd)]
    if m.kernel:
        args += ["-kernel", _chardev_path(m.kernel)]
        if m.append:
            args += ["-append", m.append]
    return args


def _console_args(c: Console) -> list[str]:
    if c.kind == "none":
        return ["-serial", "none"]
    if c.kind == "stdio":
        return ["-serial", "stdio"] if not c.log else [
            "-chardev", f"stdio,id=con0,signal=off,logfile={_chardev_path(c.log)},logappend=on",
            "-serial", "chardev:con0"]
    wait = "on" if c.wait else "off"
    if c.kind == "telnet":
        if c.port is None:
            raise ValueError("a telnet console needs a port")
        if not c.log and not c.wait:  # GNS3's own spelling
            return ["-serial", f"telnet:127.0.0.1:{c.port},server,nowait"]
        dev = f"socket,id=con0,host=127.0.0.1,port={c.port},telnet=on,server=on,wait={wait}"
    else:
        if c.path is None:
            raise ValueError("a unix console needs a path")
        dev = f"socket,id=con0,path={_chardev_path(c.path)},server=on,wait={wait}"
    if c.log:
        dev += f",logfile={_chardev_path(c.log)},logappend=on"
    return ["-chardev", dev, "-serial", "chardev:con0"]


def _control_args(m: Machine) -> list[str]:
    args = ["-monitor", "none"] if m.monitor is None else [
        "-monitor", f"unix:{_chardev_path(m.monitor)},server,nowait"]
    if m.qmp is not None:
        args += ["-qmp", f"unix:{_chardev_path(m.qmp)},server,nowait"]
    return args


def _control_channel_args(m: Machine) -> list[str]:
    if m.control is None:
        return []
    return ["-chardev", f"socket,id=minivm-control,path={_chardev_path(m.control)},"
                        "server=on,wait=off",
            "-device", "virtio-serial-pci,id=minivm-serial",
            "-device", f"virtserialport,bus=minivm-serial.0,chardev=minivm-control,"
                       f"name={CONTROL_PORT}"]


def _publish_netdev(publish: Sequence[Publish]) -> str:
    """A user-mode network that only forwards the published ports (``restrict=on``: the guest
    reaches neither the host nor the outside through it)."""
    spec = (f"user,id=minivm-publish,net={PUBLISH_NET},host={PUBLISH_HOST},"
            f"dhcpstart={PUBLISH_GUEST},restrict=on")
    for p in publish:
        spec += f",hostfwd={p.protocol}:127.0.0.1:{p.host_port}-{PUBLISH_GUEST}:{p.guest_port}"
    return spec


def _network_args(m: Machine) -> list[str]:
    """``-net none``, then each adapter behind a PCI bridge, as GNS3 3.0 does (and after them
    the published ports' NIC, when there are any)."""
    args = ["-net", "none"]
    bridges = 0
    nics: list[UdpTunnel | Publish | None] = list(m.adapters)
    if m.publish:
        nics.append(m.publish[0])
    for n, tunnel in enumerate(nics):
        bridge = 1 + n // NICS_PER_BRIDGE
        if bridge > bridges:
            args += ["-device", f"i82801b11-bridge,id=dmi_pci_bridge{bridge}",
                     "-device", f"pci-bridge,id=pci-bridge{bridge},bus=dmi_pci_bridge{bridge},"
                                f"chassis_nr=0x{bridge:x},addr=0x{bridge:x},shpc=off"]
            bridges = bridge
        slot = f",bus=pci-bridge{bridge},addr=0x{n % NICS_PER_BRIDGE:02x}"
        if isinstance(tunnel, Publish):
            args += ["-device", f"virtio-net-pci,mac={PUBLISH_MAC}{slot},netdev=minivm-publish",
                     "-netdev", _publish_netdev(m.publish)]
            continue
        device = f"{m.adapter_type},mac={mac_address(m.node_id, n)}"
        if m.adapter_type == "virtio-net-pci":
            device += ",speed=10000,duplex=full"
        device += slot
        if tunnel is None:
            args += ["-device", device]
        else:
            args += ["-device", f"{device},netdev=gns3-{n}",
                     "-netdev", f"socket,id=gns3-{n},udp={tunnel.remote_host}:"
                                f"{tunnel.remote_port},localaddr={tunnel.local_host}:"
                                f"{tunnel.local_port}"]
    return args


def command_line(m: Machine) -> list[str]:
    """The argv that boots ``m`` (program first), in GNS3's order."""
    options.check(m.options, where=m.name, allow_unsafe=m.unsafe_options)
    argv = [m.qemu, "-name", m.name.replace(",", ",,"), "-m", f"{m.ram}M",
            "-smp", f"cpus={m.cpus},maxcpus={m.cpus},sockets=1"]
    argv += accel_args(m.accel, m.tb_size)
    argv += ["-boot", "order=c"]
    argv += disk_args(m.drives)
    argv += _boot_args(m)
    argv += ["-uuid", str(m.node_id)]
    argv += _console_args(m.console)
    argv += _control_args(m)
    argv += _network_args(m)
    argv += _control_channel_args(m)
    argv += ["-display", "none"]
    if m.paused:
        argv += ["-S"]
    if m.pidfile is not None:
        argv += ["-pidfile", str(m.pidfile)]
    if m.daemonize:
        argv += ["-daemonize"]
    return argv + list(m.options)


def overlay_paths(images: Sequence[Path], workdir: Path) -> list[Path]:
    """Where a node's linked clones of ``images`` live: hda_disk.qcow2, hdb_disk.qcow2, ...
    (GNS3's names)."""
    return [workdir / f"hd{'abcd'[i]}_disk.qcow2" for i in range(len(images))]


def create_overlays(images: Sequence[Path], workdir: Path, *, reuse: bool = True) -> list[Path]:
    """A QCOW2 overlay per disk image, backed by the (never written) image.

    An existing overlay is kept when ``reuse`` (the node's disk persists, as in GNS3).
    """
    paths = overlay_paths(images, workdir)
    for image, path in zip(images, paths, strict=True):
        if reuse and path.exists():
            continue
        with atomic_path(path) as tmp:
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                 "-b", str(image.resolve()), str(tmp)], what=f"creating the overlay {path}")
    return paths


def with_kernel_arg(cmdline: str, arg: str) -> str:
    """``cmdline`` with the kernel argument ``arg`` unless it has it: put first, where no
    quote or ``--`` (after which the words go to init) can take it."""
    words = cmdline.split()
    if arg in (words[:words.index("--")] if "--" in words else words):
        return cmdline
    return f"{arg} {cmdline}".strip()


def shell_line(argv: Sequence[str]) -> str:
    """The argv as one shell-quoted line (for logs and --json)."""
    return shlex.join(argv)

"""Helpers for the init's tests and benches: build an image context into a root disk, boot it
with the kernel kit, power it down through QMP, check its filesystem."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from minivm.image import build
from minivm.kit import kernel
from minivm.ui import QUIET
from tests.ports import free_udp_ports
from tests.vm import VM, Disk, qemu_argv

BASE_APPEND = "console=ttyS0 root=LABEL=minivm-root rw quiet no_timer_check"


def write_context(folder: Path, files: dict[str, str], modes: dict[str, int] | None = None) -> Path:
    """Write a Docker build context (file name -> text, dedented)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        path.chmod((modes or {}).get(name, 0o755 if name.endswith(".sh") else 0o644))
    return folder


def build_disk(context: Path, output_dir: Path) -> build.BuildResult:
    """``minivm build`` of a context; returns its result (.qcow2 is the root disk)."""
    return build.build(str(context), reporter=QUIET, output_dir=output_dir)


def writable_copy(qcow2: Path, folder: Path) -> Path:
    """A copy of a root disk that a VM may write to (the build output stays untouched)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"run-{qcow2.name}"
    shutil.copyfile(qcow2, copy)
    return copy


def boot(kit: kernel.Kit, root: Path, *, append: str = "", snapshot: bool = False,
         qmp: Path | None = None, nics: list[str] | None = None, log: Path | None = None,
         interface: str = "scsi", extra: list[str] | None = None,
         nic_model: str = "virtio-net-pci") -> VM:
    """Start a VM from ``root`` with the kit; ``nics`` are QEMU -netdev specs (one adapter
    each, ``nic_model`` behind a PCI bridge as GNS3 attaches them); ``extra``: more
    arguments."""
    extra = list(extra or [])
    if qmp:
        extra += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    if nics:
        extra += ["-device", "i82801b11-bridge,id=dmi", "-device",
                  "pci-bridge,id=br1,bus=dmi,chassis_nr=1,addr=0x1,shpc=off"]
    for i, netdev in enumerate(nics or []):
        extra += ["-device", f"{nic_model},netdev=n{i},bus=br1,addr={i:#x},"
                  f"mac=52:54:00:12:34:{0x50 + i:02x}", "-netdev", f"{netdev},id=n{i}"]
    disks = [Disk(root, interface, snapshot=snapshot)]
    if kit.modules:
        disks.append(Disk(kit.modules, interface, snapshot=True))
    argv = qemu_argv(kernel=kit.kernel, initrd=kit.initrd, append=f"{BASE_APPEND} {append}",
                     disks=disks, extra=extra)
    return VM(argv, log=log)


def powerdown(qmp: Path) -> None:
    """Press the ACPI power button (what GNS3's stop does) through QMP."""
    monitor = QEMUMonitorProtocol(str(qmp))
    monitor.connect()
    try:
        monitor.cmd("system_powerdown")
    finally:
        monitor.close()


def fsck(qcow2: Path) -> subprocess.CompletedProcess[str]:
    """``e2fsck -fn`` on the ext4 inside a QCOW2 (converted to a raw scratch copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "root.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
        return subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True)


@contextmanager
def udp_link() -> Iterator[tuple[str, str]]:
    """-netdev specs of the two ends of one link (Ethernet frames in UDP, as GNS3 makes)."""
    a, b = free_udp_ports(2)
    yield (f"socket,udp=127.0.0.1:{b},localaddr=127.0.0.1:{a}",
           f"socket,udp=127.0.0.1:{a},localaddr=127.0.0.1:{b}")

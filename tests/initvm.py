"""For the init's tests and benches: build an image context into a root disk, boot it
with the kernel kit, power it down through QMP, check its filesystem."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from minivm.image import build
from minivm.kit import kernel
from minivm.ui import QUIET
from minivm.vm.qemu import UdpTunnel
from tests import vm
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
         qmp: Path | None = None, links: Sequence[UdpTunnel] = (), user_nics: int = 0,
         log: Path | None = None, interface: str = "scsi", extra: list[str] | None = None,
         nic_model: str = "virtio-net-pci") -> VM:
    """Start a VM from ``root`` with the kit, its command line from minivm's own builder:
    ``links`` are its adapters' UDP tunnels (GNS3's links, see ``udp_link``), ``user_nics``
    adapters on QEMU's user network instead, each a ``nic_model``; ``extra``: more
    arguments."""
    disks = [Disk(root, interface, snapshot=snapshot)]
    if kit.modules:
        disks.append(Disk(kit.modules, interface, snapshot=True))
    argv = qemu_argv(kernel=kit.kernel, initrd=kit.initrd, append=f"{BASE_APPEND} {append}",
                     disks=disks, adapters=links, adapter_type=nic_model, qmp=qmp,
                     extra=[*vm.user_nics(user_nics, nic_model), *(extra or [])])
    return VM(argv, log=log)


def fsck(qcow2: Path) -> subprocess.CompletedProcess[str]:
    """``e2fsck -fn`` on the ext4 inside a QCOW2 (converted to a raw scratch copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "root.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
        return subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True)


@contextmanager
def udp_link() -> Iterator[tuple[UdpTunnel, UdpTunnel]]:
    """The two ends of one link (Ethernet frames in UDP, as GNS3 makes)."""
    a, b = free_udp_ports(2)
    yield UdpTunnel(a, "127.0.0.1", b), UdpTunnel(b, "127.0.0.1", a)

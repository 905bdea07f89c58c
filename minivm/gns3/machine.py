"""An appliance as a machine: the QEMU :class:`~minivm.vm.qemu.Machine` of a node of a .gns3a.

The VM layer knows machines only; this is where an appliance's settings (RAM, CPUs, adapters,
disks and their interfaces, kernel, initrd, kernel arguments, extra options) become one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from minivm.errors import MinivmError
from minivm.gns3.reader import Appliance
from minivm.kinds import ConsoleKind
from minivm.platforms import host
from minivm.vm import options
from minivm.vm.qemu import NO_TIMER_CHECK, Console, Drive, Machine, UdpTunnel, with_kernel_arg


def machine_from_appliance(
    app: Appliance,
    *,
    name: str,
    node_id: uuid.UUID,
    disks: Sequence[Path],
    adapters: Sequence[UdpTunnel | None] | None = None,
    append: str = "",
    ram: int | None = None,
    cpus: int | None = None,
    accel: Literal["kvm", "tcg"] = "tcg",
    console: Console | None = None,
    qmp: Path | None = None,
    monitor: Path | None = None,
    unsafe_options: bool = False,
    **extra: object,
) -> Machine:
    """A Machine for a node of ``app``: its settings, the node's overlays (``disks``, from
    ``qemu.create_overlays(app.images, ...)``), the node's links (default: every adapter
    unconnected), and kernel arguments added after the appliance's own. The appliance's
    options pass the allow-list (:mod:`minivm.vm.options`) unless ``unsafe_options``."""
    if adapters is None:
        adapters = [None] * app.adapters
    if len(adapters) > app.adapters:
        raise MinivmError(f"{name}: {len(adapters)} adapters asked, the appliance "
                          f"{app.name} has {app.adapters}")
    if len(disks) != len(app.disks):
        raise ValueError("one overlay per appliance disk is needed")
    options.check(app.options, where=str(app.path), allow_unsafe=unsafe_options)
    cmdline = " ".join(part for part in (app.kernel_command_line, append) if part)
    if app.kernel is not None and app.arch == "x86_64":  # an x86 kernel's timer check
        cmdline = with_kernel_arg(cmdline, NO_TIMER_CHECK)
    if app.arch != host().qemu_arch:
        accel = "tcg"  # KVM runs guests of the host's architecture only
    m = Machine(
        name=name, node_id=node_id, ram=ram or app.ram, cpus=cpus or app.cpus, accel=accel,
        kernel=app.kernel, initrd=app.initrd, append=cmdline,
        drives=tuple(Drive(p, iface) for p, (_, iface) in zip(disks, app.disks, strict=True)),
        adapter_type=app.adapter_type, adapters=tuple(adapters),
        console=console or Console(ConsoleKind.NONE), qmp=qmp, monitor=monitor, options=app.options,
        unsafe_options=unsafe_options, qemu=f"qemu-system-{app.arch}",
    )
    return replace(m, **extra) if extra else m  # type: ignore[arg-type]


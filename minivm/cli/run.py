"""``minivm run``: boot one MiniVM with its console attached."""

from __future__ import annotations

import shlex
import socket
import subprocess
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from minivm.cli.common import AllowUnsafeOptions, Quiet, reporter, user_errors
from minivm.errors import MinivmError
from minivm.kinds import AccelChoice, ConsoleKind
from minivm.run import which

if TYPE_CHECKING:
    from minivm.ui import Reporter
    from minivm.vm.qemu import Machine


@user_errors
def run(
    name: Annotated[str, typer.Argument(
        help="A built appliance name (build/NAME/NAME.gns3a) or a .gns3a path.",
        show_default=False)],
    append: Annotated[list[str] | None, typer.Option(
        "--append", help="Kernel arguments added after the appliance's (repeatable), "
                         "e.g. --append single for the recovery shell.")] = None,
    accel: Annotated[AccelChoice, typer.Option(
        help="auto (probe KVM, fall back to TCG), kvm or tcg.")] = AccelChoice.AUTO,
    ram: Annotated[int | None, typer.Option(help="RAM in MB (default: the appliance's).")] = None,
    disk_dir: Annotated[Path | None, typer.Option(
        "--disk-dir", help="Keep the VM's disks (overlays) here and reuse them next time; "
                           "default: fresh disks, removed at exit.")] = None,
    publish: Annotated[list[str] | None, typer.Option(
        "--publish", "-p", help="HOST_PORT:GUEST_PORT[/tcp|/udp]: 127.0.0.1:HOST_PORT reaches "
                                "the guest's port (repeatable), as docker run -p.")] = None,
    print_command: Annotated[bool, typer.Option(
        "--print-command", help="Print the QEMU command line and exit.")] = False,
    allow_unsafe_options: AllowUnsafeOptions = False,
    quiet: Quiet = False,
) -> None:
    """Boot one MiniVM locally, console attached: Ctrl-] detaches and powers it off.

    Its adapters are not connected (use `minivm lab` for links); -p publishes ports on
    127.0.0.1. The appliance's images are never written: the VM writes to its own overlays.
    The control channel (see `minivm lab exec`) listens on DISK_DIR/control.sock.
    """
    from minivm.gns3 import reader
    from minivm.gns3.machine import machine_from_appliance
    from minivm.lab.ports import hold_port
    from minivm.platforms import host
    from minivm.vm import accel as accel_mod
    from minivm.vm import options, qemu

    rep = reporter(quiet=quiet)
    ports = tuple(qemu.parse_publish(p, "-p") for p in publish or [])
    qemu.check_publish(ports, "-p")
    app = reader.load(name)
    options.check(app.options, where=str(app.path), allow_unsafe=allow_unsafe_options)
    which(f"qemu-system-{app.arch}")
    with ExitStack() as stack:
        # published ports: refused before anything starts, held until QEMU listens on them
        held = [] if print_command else [stack.enter_context(hold_port(
            p.host_port, kind=socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM,
            what=f"published as {p.text}")) for p in ports]
        # KVM runs the host's architecture only: another one is TCG, with no probe.
        chosen = accel_mod.choose(accel, kvm_setting=app.kvm, reporter=rep,
                                  kernels=[app.kernel] if app.kernel else None) \
            if app.arch == host().qemu_arch else "tcg"
        if disk_dir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="minivm-run-")))
        else:
            workdir = disk_dir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        m = machine_from_appliance(
            app, name=app.name, node_id=uuid.uuid4(),
            disks=qemu.create_overlays(app.images, workdir), ram=ram, accel=chosen,
            append=" ".join(append or []), qmp=workdir / "qmp.sock", paused=True,
            console=qemu.Console(ConsoleKind.UNIX, path=workdir / "console.sock",
                                 log=workdir / "console.log"),
            control=workdir / "control.sock", publish=ports, tb_size=qemu.TB_SIZE,
            unsafe_options=allow_unsafe_options)
        if print_command:
            print(shlex.join(qemu.command_line(m)))
            return
        code = _boot(m, workdir, rep, held)
    if code:
        raise typer.Exit(code)


def _boot(m: Machine, workdir: Path, rep: Reporter, held: list[socket.socket]) -> int:
    """Start QEMU paused, attach the console, start the guest; stop it when detached.
    ``held``: published ports kept bound until QEMU shares them."""
    from minivm.vm import console, vmctl
    from minivm.vm.launch import launch

    assert m.qmp is not None and m.console.path is not None
    qmp = m.qmp
    with launch(m, log=workdir / "qemu.log", what=m.name, held=held) as vm:
        how = console.attach(f"unix:{m.console.path}", banner=not rep.quiet,
                             on_connect=lambda: vmctl.cont(qmp))
        if how == "detached":
            ended = vmctl.stop(vm.pid, qmp, timeout=10)
            rep.info("powered off" if ended == "acpi" else f"stopped ({ended})")
        try:
            return vm.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise MinivmError("QEMU did not exit 15 s after its console closed") from None

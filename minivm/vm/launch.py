"""The one place QEMU is started: ``with launch(machine, ...) as vm:``.

:func:`launch` turns a :class:`~minivm.vm.qemu.Machine` into argv, starts QEMU, waits until its
sockets exist, closes the ports held for it (QEMU shares them now) and yields the running VM.
When an exception leaves the block, the VM is killed. A daemonized machine (``lab up``) keeps
running after a block that ends normally; a foreground one (``minivm run``) is QEMU as a child,
waited for when the block ends (mkosi's ``spawn`` shape: no child outlives it).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from minivm.errors import MinivmError
from minivm.kinds import ConsoleKind
from minivm.run import run, spawn, stderr_tail
from minivm.vm import qemu, vmctl

SOCKET_TIMEOUT = 30.0  # seconds QEMU may take to create its sockets


@dataclass(frozen=True)
class Vm:
    """A started QEMU: its pid, the argv it runs and the Machine it was made from."""

    pid: int
    argv: tuple[str, ...]
    machine: qemu.Machine
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False)  # foreground

    def wait(self, timeout: float) -> int:
        """A foreground QEMU's exit code, waited for up to ``timeout`` s (TimeoutExpired)."""
        if self.process is None:
            raise ValueError("a daemonized QEMU is no child of minivm's")
        return self.process.wait(timeout=timeout)


def sockets(m: qemu.Machine) -> list[Path]:
    """The Unix sockets QEMU creates for ``m`` (QMP, monitor, console, control channel)."""
    console = m.console.path if m.console.kind == ConsoleKind.UNIX else None
    return [p for p in (m.qmp, m.monitor, console, m.control) if p is not None]


def _release(held: Sequence[socket.socket]) -> None:
    for port in held:
        port.close()  # QEMU listens on it now


@contextmanager
def launch(m: qemu.Machine, *, log: Path, what: str,
           held: Sequence[socket.socket] = ()) -> Iterator[Vm]:
    """Start QEMU for ``m`` (its stderr goes to ``log``); ``held``: ports kept bound until
    QEMU shares them, closed once it runs. ``what`` names the VM in errors."""
    argv = qemu.command_line(m)
    for stale in sockets(m):
        stale.unlink(missing_ok=True)
    if m.daemonize:
        vm = _daemon(m, argv, log=log, what=what)
        _release(held)
        try:
            yield vm
        except BaseException:
            vmctl.stop(vm.pid, None)  # no power-off on an error: the disks are not kept clean
            raise
        return
    with log.open("wb") as errlog, spawn(argv, stderr=errlog, new_session=True) as proc:
        for path in sockets(m):
            try:
                vmctl.wait_socket(path, pid=proc.pid, timeout=SOCKET_TIMEOUT, what=what)
            except MinivmError as e:
                tail = stderr_tail(log.read_bytes(), 1)
                raise MinivmError(f"{what}: QEMU failed to start: {tail}"
                                  if proc.poll() is not None else e.what) from None
        _release(held)
        yield Vm(proc.pid, tuple(argv), m, proc)


def _daemon(m: qemu.Machine, argv: list[str], *, log: Path, what: str) -> Vm:
    """QEMU with ``-daemonize`` returns once its sockets are bound, errors first."""
    if m.pidfile is None:
        raise ValueError("a daemonized machine needs a pidfile")
    m.pidfile.unlink(missing_ok=True)
    proc = run(argv, what=f"starting {what}", check=False)
    log.write_bytes(proc.stderr or b"")
    if proc.returncode != 0:
        raise MinivmError(f"{what}: QEMU failed to start: {stderr_tail(proc.stderr, 1)}")
    return Vm(int(m.pidfile.read_text().strip()), tuple(argv), m)

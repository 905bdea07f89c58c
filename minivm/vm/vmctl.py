"""Control a running QEMU over its QMP socket (``qemu.qmp``) and watch its process.

Every wait is bounded and says what it waited for when it gives up: process exits are waited
on with a pidfd (an event, for children and strangers alike), guest states with a short
``query-status`` poll, sockets with a short poll that also notices QEMU dying.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from pathlib import Path
from typing import Any

from minivm.errors import MinivmError

POLL = 0.05


async def _execute(sock: Path, commands: list[tuple[str, dict[str, Any] | None]],
                   timeout: float) -> list[Any]:
    import asyncio

    from qemu.qmp import QMPClient, QMPError

    client = QMPClient("minivm")
    try:
        await asyncio.wait_for(client.connect(str(sock)), timeout)
        return [await asyncio.wait_for(client.execute(cmd, args), timeout)
                for cmd, args in commands]
    finally:
        with contextlib.suppress(QMPError, OSError, TimeoutError, EOFError):
            await asyncio.wait_for(client.disconnect(), 2)


def qmp(sock: Path, command: str, args: dict[str, Any] | None = None, *,
        timeout: float = 5.0) -> Any:
    """Run one QMP command and return its result; a MinivmError if QEMU does not answer.
    (asyncio and the QMP client are imported here: `lab exec` starts without them.)"""
    import asyncio

    from qemu.qmp import QMPError

    try:
        return asyncio.run(_execute(sock, [(command, args)], timeout))[0]
    except (TimeoutError, QMPError, OSError, EOFError) as e:
        raise MinivmError(f"QMP {command} on {sock} failed: {type(e).__name__} {e}".strip()) from e


def query_status(sock: Path, *, timeout: float = 5.0) -> str:
    """The guest's run state (running, paused, shutdown, ...)."""
    return str(qmp(sock, "query-status", timeout=timeout)["status"])


def powerdown(sock: Path) -> None:
    """Press the ACPI power button (GNS3's ``on_close: shutdown_signal``)."""
    qmp(sock, "system_powerdown")


def quit_qemu(sock: Path) -> None:
    """Make QEMU exit now (like pulling the plug, but QEMU flushes its files)."""
    with contextlib.suppress(MinivmError):  # QEMU may close the socket before it answers
        qmp(sock, "quit", timeout=3)


def cont(sock: Path) -> None:
    """Start a guest created with ``-S``."""
    qmp(sock, "cont")


def wait_socket(path: Path, *, pid: int | None = None, timeout: float = 30.0,
                what: str = "QEMU") -> None:
    """Wait until a Unix socket QEMU creates exists (and QEMU still runs)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if pid is not None and not alive(pid):
            raise MinivmError(f"{what} exited before it created {path.name}")
        if time.monotonic() > deadline:
            raise MinivmError(f"{what} did not create {path} within {timeout:.0f} s")
        time.sleep(POLL)


def wait_running(sock: Path, *, timeout: float = 30.0, what: str = "the guest") -> None:
    """Poll ``query-status`` until the guest runs."""
    deadline = time.monotonic() + timeout
    status = "unknown"
    while time.monotonic() < deadline:
        status = query_status(sock, timeout=max(0.5, deadline - time.monotonic()))
        if status == "running":
            return
        time.sleep(POLL)
    raise MinivmError(f"{what} is not running after {timeout:.0f} s (state: {status})")


def alive(pid: int, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, given a marker, is the QEMU whose command line
    holds it (a recycled pid after a crash is not ours)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our child, just reaped
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return False
    return marker is None or marker in cmdline.split("\0") or marker in cmdline


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to end (pidfd event); True when it ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        deadline = time.monotonic() + timeout
        while alive(pid):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([fd], [], [], min(left, 0.5))
        return True
    finally:
        os.close(fd)


def stop(pid: int, sock: Path | None, *, timeout: float = 10.0) -> str:
    """Power a VM off: ACPI button and wait ``timeout`` s, then QMP quit (3 s), then SIGKILL.

    Returns how it ended: ``acpi``, ``quit``, ``killed`` or ``gone`` (was not running).
    """
    if not alive(pid):
        return "gone"
    if sock is not None and sock.exists():
        try:
            powerdown(sock)
            if wait_exit(pid, timeout):
                return "acpi"
        except MinivmError:
            pass
        quit_qemu(sock)
        if wait_exit(pid, 3):
            return "quit"
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "gone"
    wait_exit(pid, 5)
    return "killed"

"""A lab's segments on this machine: one VDE switch per network, the members' UDP tunnels
plugged into it.

Each node keeps GNS3's command line (``-netdev socket,udp=...`` per adapter, as on a GNS3
server where uBridge holds the other end), so the switch adapts to the nodes: per member a
``vde_plug`` (vdeplug4) joins a switch port to that member's UDP tunnel
(``udp://127.0.0.1:PLUG_PORT->127.0.0.1:QEMU_PORT``). An outside ``udp:HOST:RPORT:LPORT``
member is one more plug, to HOST:RPORT from LPORT on the address HOST reaches this machine
at (``ports.local_address``: 127.0.0.1 for a loopback HOST). ``vde_switch`` (vde2) learns MAC
addresses and floods broadcast, unknown unicast and multicast: ARP, DHCP and multicast work as
on a real switch.

Files, per network in the lab's state folder: ``net-NAME/sw/`` (the switch's control
socket), ``switch.pid``, ``plug-N.pid``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from minivm.errors import MinivmError
from minivm.lab.networks import Network, member_text
from minivm.lab.spec import LOOPBACK, External
from minivm.lab.state import SwitchRecord
from minivm.run import run, which
from minivm.vm import vmctl

SWITCH = "vde_switch"
PLUG = "vde_plug"
START_TIMEOUT = 20.0  # generous: the machine may be busy with booting VMs
MIN_PORTS = 32


def folder_of(state_dir: Path, network: str) -> Path:
    return state_dir / f"net-{network}"


def check_programs() -> None:
    which(SWITCH)
    which(PLUG)


def start_switch(net: Network, folder: Path) -> SwitchRecord:
    """Start the network's switch (a daemon); returns its state record."""
    sock = folder / "sw"
    pidfile = folder / "switch.pid"
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    # A switch killed hard leaves its control socket, and a new one on it fails silently;
    # the caller has stopped whatever switch this network had.
    shutil.rmtree(sock, ignore_errors=True)
    run([SWITCH, "-s", sock, "-d", "-p", pidfile, "-f", "/dev/null",
         "-n", str(max(MIN_PORTS, 2 * len(net.members)))],
        what=f"starting the switch of network {net.name}")
    deadline = time.monotonic() + START_TIMEOUT
    while not ((sock / "ctl").exists() and pidfile.is_file() and pidfile.read_text().strip()):
        if time.monotonic() > deadline:
            raise MinivmError(f"network {net.name}: the switch did not start within "
                              f"{START_TIMEOUT:.0f} s")
        time.sleep(0.02)
    return SwitchRecord(pid=int(pidfile.read_text().split()[0]), sock=str(sock))


def start_plug(net: Network, rec: SwitchRecord, member: Any, *, local_port: int,
               remote: tuple[str, int], folder: Path, local_host: str = LOOPBACK,
               holder: socket.socket | None = None) -> int:
    """Plug one member into the switch: frames from the switch go to ``remote``, frames
    arriving on ``local_host``:``local_port`` go to the switch. ``holder`` (the bound socket
    keeping the port) is closed just before the plug binds it. Returns the plug's pid.

    The plug is a daemon (``vde_plug -d``): it reports nothing once detached, so it counts as
    started when its pid runs and its port is bound."""
    what = f"network {net.name}: the plug of {member_text(member)}"
    pidfile = folder / f"plug-{len(rec.plugs)}.pid"
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    if holder is not None:
        holder.close()
    run([PLUG, "-d", "-p", pidfile, f"vde://{rec.sock}",
         f"udp://{local_host}:{local_port}->{remote[0]}:{remote[1]}"], what=what)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        pid = _pid(pidfile)
        if pid and _bound(local_host, local_port) and vmctl.alive(pid, marker=rec.sock):
            break
        if (pid and not vmctl.alive(pid)) or time.monotonic() > deadline:
            raise MinivmError(f"{what} did not start",
                              hint=f"is UDP port {local_port} on {local_host} free?")
        time.sleep(0.02)
    rec.plugs[member_text(member)] = pid
    return pid


def _pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def _bound(host: str, port: int) -> bool:
    """Whether someone holds UDP port ``port`` on ``host``."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((host, port))
    except OSError as e:
        return e.errno == errno.EADDRINUSE
    finally:
        probe.close()
    return False


def alive(rec: SwitchRecord | None) -> bool:
    """Whether a network's switch and every plug of it still run (None: it has none)."""
    if rec is None or not rec.sock:
        return False
    return all(pid and vmctl.alive(pid, marker=rec.sock) for pid in [rec.pid, *rec.plugs.values()])


def stop(rec: SwitchRecord | None) -> None:
    """End a network's plugs, then its switch (only processes whose command line names this
    network's socket: a recycled pid is left alone)."""
    if rec is None or not rec.sock:
        return
    for pid in [*rec.plugs.values(), rec.pid]:
        if pid and vmctl.alive(pid, marker=rec.sock):
            _kill(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not vmctl.wait_exit(pid, 3):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        vmctl.wait_exit(pid, 3)


def remote_of(member: Any, qemu_ports: dict[str, int]) -> tuple[str, int]:
    """Where a member's plug sends: the node's QEMU port, or the outside end's host:port."""
    if isinstance(member, External):
        return member.host, member.remote_port
    return LOOPBACK, qemu_ports[f"{member[0]}:eth{member[1]}"]

"""A lab's state folder: ``state.json`` (pids, ports, consoles), its ``lock``, and each node's
folder under ``nodes/`` (so that no node name can be one of the state's own files).

An older layout kept the node folders beside ``state.json``; :func:`migrate` moves them once,
when no node of the lab runs."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minivm.errors import MinivmError
from minivm.fsutil import atomic_write_bytes, remove
from minivm.lab.spec import Lab
from minivm.vm import vmctl


@dataclass(frozen=True)
class NodeRecord:
    """A started node, as ``state.json`` keeps it: its QEMU (pid, argv), sockets, console
    address, accelerator, MACs and published ports."""

    pid: int
    qmp: Path
    console: str  # telnet:HOST:PORT or unix:PATH
    monitor: Path
    accel: str
    started: float  # time.time() when started
    node_id: str
    argv: tuple[str, ...]
    control: Path | None = None  # None: started by a minivm without the control channel
    publish: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    status: str = "running"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "pid": self.pid, "qmp": str(self.qmp),
                "console": self.console, "monitor": str(self.monitor), "accel": self.accel,
                "started": self.started, "node_id": self.node_id, "argv": list(self.argv),
                "control": str(self.control) if self.control else None,
                "publish": list(self.publish), "macs": list(self.macs)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeRecord:
        """KeyError/TypeError/ValueError when ``data`` is not a node record."""
        control = data.get("control")
        return cls(pid=int(data["pid"]), qmp=Path(data["qmp"]), console=str(data["console"]),
                   monitor=Path(data["monitor"]), accel=str(data.get("accel") or ""),
                   started=float(data.get("started") or 0), node_id=str(data["node_id"]),
                   argv=tuple(map(str, data.get("argv") or ())),
                   control=Path(control) if control else None,
                   publish=tuple(map(str, data.get("publish") or ())),
                   macs=tuple(map(str, data.get("macs") or ())),
                   status=str(data.get("status", "running")))


@dataclass(frozen=True)
class SwitchRecord:
    """A network's switch, as ``state.json`` keeps it: the switch's pid and control socket,
    and each member's plug (member text -> pid; filled as the plugs start)."""

    pid: int
    sock: str
    plugs: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "sock": self.sock, "plugs": dict(self.plugs)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SwitchRecord:
        """A record with what ``data`` gives (a missing pid or socket reads as not running);
        TypeError/ValueError when it is not an object of numbers and text."""
        return cls(pid=int(data.get("pid") or 0), sock=str(data.get("sock") or ""),
                   plugs={str(k): int(v) for k, v in dict(data.get("plugs") or {}).items()})


@dataclass
class State:
    """What ``state.json`` records: the lab file and its digest, each link end's UDP port, and
    each started node."""

    lab: str = ""
    digest: str = ""
    ports: dict[str, int] = field(default_factory=dict)  # endpoint key -> local UDP port
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    networks: dict[str, SwitchRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"lab": self.lab, "digest": self.digest, "ports": self.ports,
                "nodes": {n: rec.to_json() for n, rec in self.nodes.items()},
                "networks": {n: rec.to_json() for n, rec in self.networks.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        """The state as ``state.json`` holds it (KeyError/TypeError when it is not one)."""
        return cls(lab=str(data["lab"]), digest=str(data.get("digest", "")),
                   ports={str(k): int(v) for k, v in dict(data.get("ports", {})).items()},
                   nodes={str(n): NodeRecord.from_json(rec)
                          for n, rec in dict(data.get("nodes", {})).items()},
                   networks={str(n): SwitchRecord.from_json(rec)
                             for n, rec in dict(data.get("networks", {})).items()})


def read_state(state_dir: Path) -> State:
    file = state_dir / "state.json"
    if not file.exists():
        return State()
    try:
        return State.from_json(json.loads(file.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise MinivmError(f"lab state {file} is unreadable ({e})",
                          hint=f"stop any QEMU of this lab and remove {state_dir}") from e


def write_state(state_dir: Path, state: State) -> None:
    atomic_write_bytes(state_dir / "state.json",
                       (json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n").encode())


def private_dir(folder: Path) -> None:
    """Make ``folder`` (and missing parents) reachable by its owner only (0700): a node's
    sockets give a root shell and its disks hold the node's data."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """One lab command at a time per lab (up, down)."""
    private_dir(state_dir)
    with (state_dir / "lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MinivmError(f"another minivm command is working on the lab {state_dir}",
                              hint="wait for it to finish") from None
        yield


NODES = "nodes"
SOCKETS = ("qmp.sock", "monitor.sock", "console.sock", "control.sock")
NODE_FILES = ("hda_disk.qcow2", "console.log", "qemu.log")  # what marks an old node folder


def node_dir(lab: Lab | Path, name: str) -> Path:
    """A node's folder in the state folder (``lab``: a Lab or its state folder)."""
    return (lab.state_dir if isinstance(lab, Lab) else lab) / NODES / name


def old_node_dirs(state_dir: Path) -> list[Path]:
    """Node folders of the older layout (``LAB.state/NAME/``), if any."""
    if not state_dir.is_dir():
        return []
    return sorted(p for p in state_dir.iterdir() if p.name != NODES and p.is_dir()
                  and not p.is_symlink() and any((p / f).exists() for f in NODE_FILES))


def migrate(state_dir: Path, state: State) -> list[str]:
    """Move the older layout's node folders under ``nodes/`` (call it holding the lock);
    refused while one of those nodes runs. Returns the names moved."""
    old = old_node_dirs(state_dir)
    if not old:
        return []
    if busy := sorted(n for n, rec in state.nodes.items() if running(rec)
                      and any(p.name == n for p in old)):
        raise MinivmError(f"{state_dir} has the older layout and {', '.join(busy)} still run "
                          "from it", hint="stop the lab (minivm lab down LAB), then up again")
    (state_dir / NODES).mkdir(exist_ok=True)
    for folder in old:
        target = state_dir / NODES / folder.name
        if target.exists():
            raise MinivmError(f"{state_dir}: node {folder.name} has a folder in both layouts "
                              f"({folder} and {target})", hint="keep one of them, remove the other")
        folder.rename(target)
    return [p.name for p in old]


def running(rec: NodeRecord) -> bool:
    """Whether the node's QEMU still runs (the pid is alive and its argv names its QMP)."""
    return bool(rec.pid) and vmctl.alive(rec.pid, marker=str(rec.qmp))


def clean_runtime(lab: Lab | Path, name: str) -> None:
    """Remove what a dead QEMU leaves: sockets and pid file (never the disks or logs)."""
    for leftover in (*SOCKETS, "qemu.pid"):
        remove(node_dir(lab, name) / leftover)



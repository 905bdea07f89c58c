"""The lab runner protocol: one shape for the local runner and the GNS3 runner.

``minivm lab`` picks a runner once (:class:`minivm.lab.control.LocalRunner`, QEMU processes
here; :class:`minivm.lab.gns3.Gns3Runner`, a project on a GNS3 server) and asks it the same
questions with the same arguments; the answers are the typed records below, turned into JSON
only at the edge (``--json``). ``up``, ``status`` and ``export`` take the loaded lab; ``down``,
``exec`` and ``cp`` take the lab file (they work from what ``up`` left, even when the lab
file changed since). A runner refuses, in one line, what it cannot do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from minivm.lab.spec import STOP_TIMEOUT, Lab
from minivm.ui import QUIET, Reporter

if TYPE_CHECKING:
    from minivm.gns3.push import Pushed

PUBLISH_NIC = "publish0"  # the name the init gives the published ports' NIC


@dataclass(frozen=True)
class NodeState:
    """One node as ``lab status`` reports it.

    ``status``: locally running, stopped or crashed (:class:`minivm.kinds.NodeStatus`); on a
    GNS3 server its own word (started, stopped, suspended), or absent. The local runner fills
    pid, accel, log, guest (QMP's run state), publish and the link ``ports`` per adapter; the
    GNS3 runner node_id and compute_id.
    """

    status: str
    console: str | None = None
    pid: int | None = None
    accel: str | None = None
    log: str | None = None
    guest: str | None = None
    publish: tuple[str, ...] = ()
    ports: Mapping[str, int | None] | None = None
    node_id: str | None = None
    compute_id: str | None = None
    addresses: Mapping[str, str] | None = None  # ethN -> ADDRESS/PREFIX on the lab's networks

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.pid is not None:
            out.update(pid=self.pid, console=self.console, accel=self.accel, log=self.log)
        if self.guest is not None:
            out["guest"] = self.guest
        if self.publish:
            out["publish"] = {"nic": PUBLISH_NIC, "ports": list(self.publish)}
        if self.node_id is not None:
            out.update(node_id=self.node_id, compute_id=self.compute_id, console=self.console)
        if self.ports is not None:
            out["ports"] = dict(self.ports)
        if self.addresses is not None:
            out["addresses"] = dict(self.addresses)
        return out


@dataclass(frozen=True)
class NetworkState:
    """One network (segment) as ``lab status`` reports it: locally its switch running or
    stopped; on a GNS3 server its ethernet_switch node's status (absent when missing)."""

    status: str
    subnet: str | None = None
    members: tuple[str, ...] = ()
    node_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "subnet": self.subnet,
                               "members": list(self.members)}
        if self.node_id is not None:
            out["node_id"] = self.node_id
        return out


@dataclass(frozen=True)
class LabStatus:
    """Every node of a lab, its links, and where the lab runs (a state folder here, or a
    project on a server)."""

    lab: Path
    nodes: dict[str, NodeState]
    links: tuple[str, ...]
    state: Path | None = None
    server: str | None = None
    project: str | None = None
    project_id: str | None = None
    networks: dict[str, NetworkState] = field(default_factory=dict)

    @property
    def crashed(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.status == "crashed"]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lab": str(self.lab)}
        if self.state is not None:
            out["state"] = str(self.state)
        if self.server is not None:
            out.update(server=self.server, project=self.project, project_id=self.project_id)
        return out | {"nodes": {n: s.to_json() for n, s in self.nodes.items()},
                      "links": list(self.links),
                      "networks": {n: s.to_json() for n, s in self.networks.items()}}


@dataclass(frozen=True)
class Made:
    """What one GNS3 ``up`` added to the server (the local runner makes nothing to undo)."""

    project: bool
    nodes: tuple[str, ...]
    links: tuple[str, ...]
    appliances: dict[str, Pushed] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"created_project": self.project, "created_nodes": list(self.nodes),
                "created_links": list(self.links),
                "appliances": {n: p.to_json() for n, p in self.appliances.items()}}


@dataclass(frozen=True)
class UpResult:
    """The lab after ``up``: the nodes this call started, the seconds each took to show the
    ``--wait`` pattern, what it made."""

    status: LabStatus
    started: tuple[str, ...]
    wait_seconds: dict[str, float]
    made: Made | None = None
    exec_codes: dict[str, list[int]] = field(default_factory=dict)  # each node's exec:

    def to_json(self) -> dict[str, Any]:
        out = {"started": list(self.started), "wait_seconds": self.wait_seconds,
               "exec_codes": self.exec_codes, **self.status.to_json()}
        return out | (self.made.to_json() if self.made else {})


@dataclass(frozen=True)
class DownResult:
    """How each node ended (acpi, quit, killed, gone; on GNS3: stopped) and whether the lab's
    disks or project were removed."""

    lab: Path
    stopped: dict[str, str]
    removed: bool = False
    project: str | None = None
    project_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lab": str(self.lab), "stopped": self.stopped,
                               "deleted": self.removed}
        if self.project is not None:
            out.update(project=self.project, project_id=self.project_id)
        return out


@dataclass(frozen=True)
class ExportResult:
    """A written portable project."""

    project: str
    project_id: str
    file: Path
    bytes: int
    images_added: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "project_id": self.project_id, "file": str(self.file),
                "bytes": self.bytes, "images_added": list(self.images_added)}


Write = Callable[[bytes], None]


def ignore(line: str) -> None:
    """A ``warn`` that drops what it is told."""


class Runner(Protocol):
    """What ``minivm lab`` asks of where a lab runs."""

    where: str  # "local" or the server's URL, for messages
    remove_option: str  # the ``lab down`` flag that also removes disks or project

    def up(self, lab: Lab, *, accel: str | None = None, start: bool = True,
           wait: str | None = None, timeout: float = 300.0,
           reporter: Reporter = QUIET, allow_unsafe_options: bool = False) -> UpResult:
        """Start every node not running (``start=False``: make them only); with ``wait``,
        until each started node's console shows that regex (``timeout`` s). The appliances'
        QEMU options pass the allow-list first, unless ``allow_unsafe_options``."""
        ...

    def status(self, lab: Lab) -> LabStatus:
        """Each node's state."""
        ...

    def down(self, lab_file: Path, *, timeout: float = STOP_TIMEOUT, remove: bool = False,
             reporter: Reporter = QUIET) -> DownResult:
        """Power every node off; ``remove``: also the disks (or the project)."""
        ...

    def exec(self, lab_file: Path, node: str, command: list[str], *,
             env: Mapping[str, str], user: str | None, workdir: str | None,
             stdin: BinaryIO | None, stdout: Write, stderr: Write, timeout: float) -> int:
        """Run a command in a running node; its exit code."""
        ...

    def cp(self, lab_file: Path, source: str, destination: str, *, timeout: float,
           archive: bool = False, warn: Callable[[str], None] = ignore) -> str:
        """Copy between the host and a node (``NODE:PATH`` on one side); what was written.
        Copying out, ``archive`` keeps the guest's owners and ``warn`` gets a line per entry
        skipped."""
        ...

    def export(self, lab: Lab, output: Path, *, reporter: Reporter = QUIET) -> ExportResult:
        """Write the lab as one portable file."""
        ...

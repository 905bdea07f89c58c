"""A lab on a GNS3 server: the same lab file, run as a GNS3 project through its REST API.

``up`` installs each appliance (images and template, :mod:`minivm.gns3.push`), creates (or
reuses) the project named after the lab file, one QEMU node per lab node on its compute, the
links, and starts the nodes. Node properties come from :func:`node_properties`, which reads
them off the local runner's own Machine (:func:`minivm.lab.control.node_machine`): RAM, CPUs,
adapters and their type, kernel arguments, disks and their interfaces cannot drift apart.

Nothing is left half-made: when a step fails, a project this call created is deleted again;
in a project that existed before, only the nodes and links this call added are removed.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from minivm import textsafe
from minivm.errors import MinivmError
from minivm.fsutil import atomic_path
from minivm.gns3 import push
from minivm.gns3.server import BadAnswer, Client, checks_answers
from minivm.lab.control import node_machine
from minivm.lab.networks import addresses_of, member_text
from minivm.lab.runner import (
    DownResult,
    ExportResult,
    LabStatus,
    Made,
    NetworkState,
    NodeState,
    UpResult,
    Write,
    ignore,
)
from minivm.lab.spec import STOP_TIMEOUT, External, Lab, check_options
from minivm.ui import QUIET, Reporter
from minivm.vm import console as console_mod

LOCAL_COMPUTE = "local"
ABSENT = "absent"  # a lab node the project lacks
ANY_ADDRESS = ("", "0.0.0.0", "::")
GRID = 4  # nodes per row on the canvas
MAX_PARALLEL_STARTS = 8
# GNS3 answers a start once the QEMU process exists: a QEMU that exits at once (an option or
# disk it refuses) reads "stopped" a moment later. A started node must still read "started"
# this many seconds after its start returned.
START_SETTLE = 2.0
START_POLL = 0.25
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
HOST = re.compile(r"[A-Za-z0-9.:_-]+|\[[0-9A-Fa-f:.]+\]")  # a name, IPv4 or IPv6 address


@dataclass(frozen=True)
class Gns3Node:
    """A node as the server describes it (the fields minivm reads; its JSON stays at the
    edge). ``console``: the telnet port, when the node has one."""

    node_id: str
    name: str
    node_type: str
    compute_id: str
    status: str
    console: int | None
    console_type: str
    console_host: str
    properties: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Gns3Node:
        """A MinivmError when the server's answer is not a node."""
        try:
            console = data.get("console")
            return cls(node_id=str(data["node_id"]), name=str(data.get("name")),
                       node_type=str(data.get("node_type")),
                       compute_id=str(data.get("compute_id")), status=str(data.get("status")),
                       console=int(console) if console else None,
                       console_type=str(data.get("console_type")),
                       console_host=str(data.get("console_host") or ""),
                       properties=dict(data.get("properties") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadAnswer(f"the GNS3 server answered a node that is not one "
                            f"({textsafe.shown(str(e))})") from e


def node_properties(lab: Lab, name: str, *, unsafe_options: bool = False) -> dict[str, Any]:
    """The GNS3 QEMU properties of a lab node, read from the Machine the local runner boots
    (whose options pass the allow-list unless ``unsafe_options``)."""
    app = lab.nodes[name].appliance
    m = node_machine(lab, name, disks=[image for image, _ in app.disks],
                     unsafe_options=unsafe_options)
    props: dict[str, Any] = {
        "ram": m.ram, "cpus": m.cpus, "adapters": len(m.adapters),
        "adapter_type": m.adapter_type, "kernel_command_line": m.append,
        "kernel_image": m.kernel.name if m.kernel else "",
        "initrd": m.initrd.name if m.initrd else "",
        "options": shlex.join(m.options), "console_type": app.console_type,
        "on_close": app.on_close, "platform": app.arch, "linked_clone": True,
        # GNS3 gives a node made without a template "low" (nice 5), its templates "normal":
        # normal, as the template minivm installs and as the local runner.
        "process_priority": "normal",
    }
    for letter, drive in zip("abcd", m.drives, strict=False):
        props[f"hd{letter}_disk_image"] = drive.path.name
        props[f"hd{letter}_disk_interface"] = drive.interface
    return props


def refuse_externals(lab: Lab) -> None:
    """GNS3 reaches the outside world through its own cloud nodes, not minivm's udp: ends
    nor the local runner's published ports."""
    for name, node in lab.nodes.items():
        if node.publish:
            raise MinivmError(f"{lab.path.name}: node {name} publishes ports, which only the "
                              "local runner does",
                              hint="use a GNS3 NAT or cloud node in the project instead, or "
                                   "run this lab locally (without --server)")
    for link in lab.links:
        if isinstance(link.b, External):
            raise MinivmError(f"{lab.path.name}: link {link.text!r} leaves the lab (udp:...), "
                              "which a GNS3 server cannot run",
                              hint="use a GNS3 cloud or NAT node in the project instead, or "
                                   "run this lab locally (without --server)")
    for net in lab.networks:
        if any(isinstance(m, External) for m in net.members):
            raise MinivmError(f"{lab.path.name}: network {net.name} has a member outside the "
                              "lab (udp:...), which a GNS3 server cannot run",
                              hint="use a GNS3 cloud node on its switch instead, or run this "
                                   "lab locally (without --server)")


def resolve_computes(client: Client, lab: Lab) -> dict[str, str]:
    """Each node's compute id (``compute:`` is a compute id or name; default: local)."""
    known = client.items("/computes")
    ids = {LOCAL_COMPUTE: LOCAL_COMPUTE}
    for c in known:
        ids[str(c["compute_id"])] = str(c["compute_id"])
        ids.setdefault(str(c.get("name")), str(c["compute_id"]))
    out = {}
    for name, node in lab.nodes.items():
        wanted = node.compute or LOCAL_COMPUTE
        if wanted not in ids:
            names = ", ".join([LOCAL_COMPUTE, *(str(c.get("name")) for c in known)])
            raise MinivmError(f"{lab.path.name}: node {name}: GNS3 has no compute {wanted!r}",
                              hint=f"computes on {client.creds.url}: {names}")
        out[name] = ids[wanted]
    return out


@dataclass(frozen=True)
class Gns3Project:
    """A project as the server describes it: id, name, opened or closed."""

    project_id: str
    name: str
    status: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Gns3Project:
        """A MinivmError when the server's answer is not a project."""
        try:
            return cls(str(data["project_id"]), str(data.get("name")), str(data.get("status")))
        except (KeyError, TypeError, AttributeError) as e:
            raise BadAnswer(f"the GNS3 server answered a project that is not one "
                            f"({textsafe.shown(str(e))})") from e


def find_project(client: Client, lab: Lab) -> Gns3Project | None:
    """The project named after the lab file, if the server has it."""
    return _find(client, project_name(lab))


def _find(client: Client, name: str) -> Gns3Project | None:
    for data in client.items("/projects"):
        project = Gns3Project.from_json(data)
        if project.name == name:
            return project
    return None


def project_name(lab: Lab) -> str:
    return lab.path.stem


def _open(client: Client, project: Gns3Project) -> str:
    if project.status != "opened":
        client.post(f"/projects/{project.project_id}/open",
                    what=f"opening the project {project.name}")
    return project.project_id


def _nodes(client: Client, pid: str) -> dict[str, Gns3Node]:
    nodes = [Gns3Node.from_json(n) for n in client.items(f"/projects/{pid}/nodes")]
    return {n.name: n for n in nodes}


def _link_key(ends: list[dict[str, Any]]) -> frozenset[tuple[str, int, int]]:
    return frozenset((str(e["node_id"]), int(e["adapter_number"]), int(e["port_number"]))
                     for e in ends)


@checks_answers("bringing the lab up")
def up(lab: Lab, client: Client, *, start: bool = True, wait: str | None = None,
       timeout: float = 300.0, reporter: Reporter = QUIET,
       allow_unsafe_options: bool = False) -> UpResult:
    """Install the appliances, make the project, nodes and links, start the nodes (and wait
    for ``wait`` on their consoles). Returns what the project holds and what this call did.
    Every appliance's options pass the allow-list first (unless ``allow_unsafe_options``)."""
    refuse_externals(lab)
    if skipped := [n for n, node in lab.nodes.items() if node.binds or node.exec]:
        reporter.warn(f"{', '.join(skipped)}: binds and exec are done by the local runner only "
                      "(over the control channel, which GNS3's QEMU nodes lack): not done here")
    check_options(lab, allow_unsafe=allow_unsafe_options)
    computes = resolve_computes(client, lab)
    pushed: dict[str, push.Pushed] = {}
    for app in {n.appliance.path: n.appliance for n in lab.nodes.values()}.values():
        pushed[app.name] = push.push(client, app, reporter=reporter,
                                     allow_unsafe_options=allow_unsafe_options)
    project = find_project(client, lab)
    created_project = project is None
    if project is None:
        project = Gns3Project.from_json(client.post(
            "/projects", {"name": project_name(lab)},
            what=f"creating the project {project_name(lab)}"))
    pid = _open(client, project)
    new_nodes: list[str] = []
    new_links: list[str] = []
    started: dict[str, str] = {}  # name -> node id, in start order
    try:
        with reporter.stage("nodes", f"Nodes and links in the GNS3 project {project_name(lab)}"):
            nodes = _make_nodes(lab, client, pid, computes, new_nodes,
                                unsafe_options=allow_unsafe_options)
            switches = _make_switches(lab, client, pid, computes, new_nodes)
            links = _make_links(lab, client, pid, nodes, new_links)
            links.update(_link_switches(lab, client, pid, nodes, switches, new_links))
        watch = _Watch(wait, timeout)
        if start:
            _start(client, pid, nodes, started, watch, reporter=reporter)
    except BaseException:
        _rollback(client, pid, created_project, new_nodes, new_links, started)
        raise
    # Like the local --wait: a node that does not show the pattern in time is an error, but
    # the lab stays up (its consoles tell why).
    waits = watch.result(list(started), reporter=reporter)
    made = Made(project=created_project,
                nodes=tuple(n for n in lab.nodes if nodes[n].node_id in new_nodes),
                links=tuple(link.text for link in lab.links if links[link.text] in new_links),
                appliances=pushed)
    return UpResult(status(lab, client), tuple(started), waits, made)


def _make_nodes(lab: Lab, client: Client, pid: str, computes: dict[str, str],
                new_nodes: list[str], *, unsafe_options: bool = False
                ) -> dict[str, Gns3Node]:
    have = _nodes(client, pid)
    out: dict[str, Gns3Node] = {}
    for i, name in enumerate(lab.nodes):
        app = lab.nodes[name].appliance
        props = node_properties(lab, name, unsafe_options=unsafe_options)
        node = have.get(name)
        if node is not None:
            if node.node_type != "qemu" or node.compute_id != computes[name]:
                raise MinivmError(f"project {project_name(lab)} has a node {name} of type "
                                  f"{node.node_type} on compute {node.compute_id}; "
                                  f"the lab wants a QEMU node on {computes[name]}",
                                  hint="delete that node, or the project (lab down --delete)")
            changed = {k: v for k, v in props.items() if node.properties.get(k) != v}
            if changed:
                node = Gns3Node.from_json(client.put(
                    f"/projects/{pid}/nodes/{node.node_id}", {"properties": changed},
                    what=f"updating node {name}"))
            out[name] = node
            continue
        body = {"name": name, "node_type": "qemu", "compute_id": computes[name],
                "properties": props, "port_name_format": app.port_name_format,
                "x": (i % GRID) * 160 - 240, "y": (i // GRID) * 140 - 70}
        node = Gns3Node.from_json(client.post(f"/projects/{pid}/nodes", body,
                                              what=f"creating node {name}", timeout=1200))
        new_nodes.append(node.node_id)
        if node.name != name:
            raise MinivmError(f"GNS3 named node {name} {node.name!r} instead")
        out[name] = node
    return out


def switch_ports(count: int) -> list[dict[str, Any]]:
    """An Ethernet switch's ports: ``count`` access ports in VLAN 1 (GNS3's default kind)."""
    return [{"name": f"Ethernet{i}", "port_number": i, "type": "access", "vlan": 1,
             "ethertype": "0x8100"} for i in range(count)]


def _make_switches(lab: Lab, client: Client, pid: str, computes: dict[str, str],
                   new_nodes: list[str]) -> dict[str, Gns3Node]:
    """One GNS3 Ethernet switch per network (named after it, on its first member's compute),
    with a port per member."""
    have = _nodes(client, pid)
    out: dict[str, Gns3Node] = {}
    for i, net in enumerate(lab.networks):
        compute = computes[net.node_members()[0][0]]
        node = have.get(net.name)
        ports = switch_ports(len(net.members))
        if node is not None:
            if node.node_type != "ethernet_switch":
                raise MinivmError(f"project {project_name(lab)} has a node {net.name} of type "
                                  f"{node.node_type}; the lab wants the Ethernet switch "
                                  f"of network {net.name} there",
                                  hint="delete that node, or the project (lab down --delete)")
            if len(node.properties.get("ports_mapping") or []) < len(ports):
                node = Gns3Node.from_json(client.put(
                    f"/projects/{pid}/nodes/{node.node_id}",
                    {"properties": {"ports_mapping": ports}},
                    what=f"updating the switch of network {net.name}"))
            out[net.name] = node
            continue
        body = {"name": net.name, "node_type": "ethernet_switch", "compute_id": compute,
                "properties": {"ports_mapping": ports},
                "x": (i % GRID) * 160 - 240, "y": -210 - (i // GRID) * 140}
        node = Gns3Node.from_json(client.post(
            f"/projects/{pid}/nodes", body, what=f"creating the switch of network {net.name}",
            timeout=300))
        new_nodes.append(node.node_id)
        out[net.name] = node
    return out


def _link_switches(lab: Lab, client: Client, pid: str, nodes: dict[str, Gns3Node],
                   switches: dict[str, Gns3Node], new_links: list[str]) -> dict[str, str]:
    """A link from each network member to its own port of the network's switch."""
    have = {_link_key(link["nodes"]): str(link["link_id"])
            for link in client.get(f"/projects/{pid}/links") or []}
    out: dict[str, str] = {}
    for net in lab.networks:
        for port, (name, adapter) in enumerate(net.node_members()):
            text = f"{name}:eth{adapter} -- {net.name}:{port}"
            ends = [{"node_id": nodes[name].node_id, "adapter_number": adapter,
                     "port_number": 0},
                    {"node_id": switches[net.name].node_id, "adapter_number": 0,
                     "port_number": port}]
            key = _link_key(ends)
            if key in have:
                out[text] = have[key]
                continue
            made = client.post(f"/projects/{pid}/links", {"nodes": ends},
                               what=f"joining {name}:eth{adapter} to network {net.name}")
            new_links.append(str(made["link_id"]))
            out[text] = str(made["link_id"])
    return out


def _make_links(lab: Lab, client: Client, pid: str, nodes: dict[str, Gns3Node],
                new_links: list[str]) -> dict[str, str]:
    have = {_link_key(link["nodes"]): str(link["link_id"])
            for link in client.items(f"/projects/{pid}/links")}
    out: dict[str, str] = {}
    for link in lab.links:
        assert not isinstance(link.b, External)
        ends = [{"node_id": nodes[n].node_id, "adapter_number": a, "port_number": 0}
                for n, a in (link.a, link.b)]
        key = _link_key(ends)
        if key in have:
            out[link.text] = have[key]
            continue
        made = client.post(f"/projects/{pid}/links", {"nodes": ends},
                           what=f"creating link {link.text}")
        new_links.append(str(made["link_id"]))
        out[link.text] = str(made["link_id"])
    return out


def console_address(client: Client, node: Gns3Node,
                    hosts: dict[str, str] | None = None) -> str | None:
    """``telnet:HOST:PORT`` of a node's console (None without a telnet console)."""
    if node.console_type != "telnet" or not node.console:
        return None
    host = node.console_host
    if host in ANY_ADDRESS:
        host = (hosts or {}).get(node.compute_id, "") or ""
    if host in ANY_ADDRESS:
        host = urlparse(client.creds.url).hostname or "127.0.0.1"
    if not HOST.fullmatch(host) or not 0 < node.console < 65536:  # the server's words
        raise MinivmError(f"GNS3 server {client.creds.url} gave node "
                          f"{textsafe.shown(node.name)} the console "
                          f"{textsafe.shown(f'{host}:{node.console}')!r}, which is no host "
                          "and port")
    return f"telnet:{host}:{node.console}"


def _compute_hosts(client: Client) -> dict[str, str]:
    return {str(c["compute_id"]): str(c.get("host", "")) for c in client.items("/computes")}


class _Watch:
    """Console watchers for --wait, each started right after its node (the telnet console
    keeps no history: output before the connection is lost)."""

    def __init__(self, pattern: str | None, timeout: float) -> None:
        self.pattern, self.timeout = pattern, timeout
        self.t0 = time.monotonic()
        self.threads: list[threading.Thread] = []
        self.seen: dict[str, float] = {}
        self.problems: dict[str, str] = {}

    def add(self, name: str, address: str) -> None:
        thread = threading.Thread(target=self._watch, args=(name, address), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _watch(self, name: str, address: str) -> None:
        try:
            with console_mod.Session(address, timeout=30) as s:
                s.expect(self.pattern or "",
                         timeout=max(1.0, self.timeout - (time.monotonic() - self.t0)))
            self.seen[name] = round(time.monotonic() - self.t0, 3)
        except (AssertionError, MinivmError, OSError) as e:
            text = " ".join(CONTROL.sub("", str(e)).split())
            head, _, tail = text.partition(" tail: ")
            last = f"; last output: ...{tail[-80:]}" if tail else ""
            self.problems[name] = head[:200].rstrip("; ") + last

    def result(self, names: list[str], *, reporter: Reporter) -> dict[str, float]:
        """Seconds from the first start until each node showed the pattern."""
        if not self.pattern or not self.threads:
            return {}
        with reporter.stage("wait", f"Waiting for {self.pattern!r} on {len(self.threads)} "
                                    "console(s)"):
            for thread in self.threads:
                thread.join(max(1.0, self.timeout - (time.monotonic() - self.t0)) + 5)
        missing = [n for n in names if n not in self.seen]
        if missing:
            why = "; ".join(f"{n}: {self.problems.get(n, 'no answer')}" for n in missing)
            raise MinivmError(f"{', '.join(missing)}: {self.pattern!r} not on the console "
                              f"within {self.timeout:.0f} s ({why})"[:600],
                              hint="the nodes stay up: see minivm lab status --server")
        return self.seen


def _start(client: Client, pid: str, nodes: dict[str, Gns3Node],
           started: dict[str, str], watch: _Watch, *, reporter: Reporter) -> None:
    """Start the nodes not running, all at once (as the local runner does); with a --wait
    pattern, each node's console is watched from the moment its start returns."""
    hosts = _compute_hosts(client)
    todo = {name: node for name, node in nodes.items() if node.status != "started"}
    addresses = {name: console_address(client, node, hosts) for name, node in todo.items()}
    if watch.pattern and (none := [n for n, a in addresses.items() if a is None]):
        raise MinivmError(f"{', '.join(none)}: no telnet console to --wait on")

    def start_one(name: str) -> None:
        node_id = todo[name].node_id
        client.post(f"/projects/{pid}/nodes/{node_id}/start", {}, what=f"starting node {name}",
                    timeout=300)
        started[name] = node_id
        if watch.pattern:  # at once: the console keeps no history
            watch.add(name, str(addresses[name]))
        confirm_started(client, pid, name, node_id)

    if not todo:
        return
    with reporter.stage("start", f"Starting {len(todo)} node(s)"), \
            ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_STARTS, len(todo))) as pool:
        futures = [pool.submit(start_one, name) for name in todo]
        errors = [e for f in futures if (e := f.exception()) is not None]
    if errors:
        first = errors[0]
        if isinstance(first, NotStarted):
            raise first
        if isinstance(first, MinivmError):
            raise MinivmError(first.what, hint="what this `up` made was removed again; "
                                               "--no-start makes the nodes and links without "
                                               "starting them") from first
        raise first


class NotStarted(MinivmError):
    """A node GNS3 said it started whose QEMU is gone again."""


def confirm_started(client: Client, pid: str, name: str, node_id: str, *,
                    settle: float = START_SETTLE, poll: float = START_POLL) -> None:
    """Poll the node until it has read "started" for ``settle`` seconds; a NotStarted error
    naming it (with the last line of its QEMU log) when it reads anything else."""
    deadline = time.monotonic() + settle
    while True:
        node = Gns3Node.from_json(client.get(f"/projects/{pid}/nodes/{node_id}",
                                             what=f"reading node {name}"))
        if node.status != "started":
            break
        if time.monotonic() >= deadline:
            return
        time.sleep(poll)
    last = _last_log_line(client, pid, node_id)
    how = ("its QEMU exited at once" if node.status == "stopped"
           else f"it reads {textsafe.shown(node.status)!r}")
    raise NotStarted(f"node {name} did not start: GNS3 said it started, but {how}"
                     + (f": {last}" if last else ""),
                     hint="GNS3's node log says why (qemu.log in the node's folder on its "
                          "compute, the GUI's log), and its console; the nodes this `up` "
                          "started were stopped again and what it made removed")


def _last_log_line(client: Client, pid: str, node_id: str) -> str:
    """The last line QEMU wrote to the node's qemu.log (GNS3 writes its command line first),
    made safe to show; empty when the server does not give it."""
    try:
        text = client.tail(f"/projects/{pid}/nodes/{node_id}/files/qemu.log",
                           what="reading the node's QEMU log", limit=4096)
    except MinivmError:
        return ""
    _, marker, output = text.rpartition("Execution log:")
    lines = [line.strip() for line in (output if marker else text).splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    return textsafe.shown(last)[:200]


def _rollback(client: Client, pid: str, created_project: bool, new_nodes: list[str],
              new_links: list[str], started: dict[str, str]) -> None:
    """Undo what one ``up`` did; errors while undoing do not hide the first one.

    The nodes it started are powered off, not shut down: a guest still booting ignores the
    power button, and GNS3 then waits two minutes before it kills QEMU. Each such node's
    ``on_close`` is set to ``power_off`` for the stop and given back afterwards."""
    for nid in started.values():
        with contextlib.suppress(MinivmError):
            _power_off(client, pid, nid)
    steps: list[tuple[str, str]] = []
    if not created_project:
        steps += [("DELETE", f"/projects/{pid}/links/{lid}") for lid in new_links]
        steps += [("DELETE", f"/projects/{pid}/nodes/{nid}") for nid in new_nodes]
    for method, path in steps:
        with contextlib.suppress(MinivmError):
            client.request(method, path, ok=(404,), timeout=300)
    if created_project:
        with contextlib.suppress(MinivmError):
            delete_project(client, pid)


def _power_off(client: Client, pid: str, nid: str) -> None:
    """Stop node ``nid`` at once (QEMU ended, no power button), its ``on_close`` unchanged."""
    node = f"/projects/{pid}/nodes/{nid}"
    answer = client.get(node, what="reading a node")
    properties = answer.get("properties") if isinstance(answer, dict) else None
    on_close = properties.get("on_close") if isinstance(properties, dict) else None
    if on_close != "power_off":
        client.put(node, {"properties": {"on_close": "power_off"}},
                   what="setting a node's close action")
    try:
        client.post(f"{node}/stop", ok=(404,), what="stopping a node", timeout=300)
    finally:
        if isinstance(on_close, str) and on_close != "power_off":
            client.put(node, {"properties": {"on_close": on_close}},
                       what="setting a node's close action")


def delete_project(client: Client, pid: str, *, attempts: int = 3) -> None:
    """DELETE a project; again after a second when a compute could not remove its folder yet
    (a compute still writing a node's image checksums answers "Directory not empty")."""
    for attempt in range(attempts):
        try:
            client.request("DELETE", f"/projects/{pid}", ok=(404,), what="deleting the project",
                           timeout=300)
            return
        except MinivmError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


@checks_answers("reading the lab's state")
def status(lab: Lab, client: Client) -> LabStatus:
    """Each lab node's state on the server (started, stopped, suspended; absent if missing)."""
    project = find_project(client, lab)
    links = tuple(link.text for link in lab.links)
    if project is None:
        return LabStatus(lab=lab.path, server=client.creds.url, project=project_name(lab),
                         nodes={n: NodeState(ABSENT) for n in lab.nodes}, links=links)
    pid = _open(client, project)
    have = _nodes(client, pid)
    hosts = _compute_hosts(client)
    nodes: dict[str, NodeState] = {}
    for name in lab.nodes:
        node = have.get(name)
        nodes[name] = NodeState(ABSENT) if node is None else NodeState(
            textsafe.shown(node.status), node_id=textsafe.shown(node.node_id),
            compute_id=textsafe.shown(node.compute_id),
            console=console_address(client, node, hosts),
            addresses=addresses_of(lab.networks, name))
    networks = {net.name: NetworkState(
        ABSENT if net.name not in have else textsafe.shown(have[net.name].status),
        subnet=str(net.subnet) if net.subnet else None,
        members=tuple(member_text(m) for m in net.members),
        node_id=textsafe.shown(have[net.name].node_id) if net.name in have else None)
        for net in lab.networks}
    return LabStatus(lab=lab.path, server=client.creds.url, project=project_name(lab),
                     project_id=pid, nodes=nodes, links=links, networks=networks)


@checks_answers("stopping the lab")
def down(lab_file: Path, client: Client, *, delete: bool = False,
         reporter: Reporter = QUIET) -> DownResult:
    """Stop every node (GNS3's stop: the ACPI power button); ``delete`` removes the project.
    Needs the lab file's name only (the project's)."""
    name = lab_file.stem
    project = _find(client, name)
    if project is None:
        reporter.info(f"GNS3 has no project {name}")
        return DownResult(lab_file.resolve(), {}, project=name)
    pid = _open(client, project)
    running = [n for n, node in _nodes(client, pid).items() if node.status != "stopped"]
    with reporter.stage("stop", f"Stopping {len(running)} node(s)"):
        client.post(f"/projects/{pid}/nodes/stop", what="stopping the nodes", timeout=300)
    if delete:
        delete_project(client, pid)
        reporter.info(f"project {name} deleted")
    return DownResult(lab_file.resolve(), dict.fromkeys(running, "stopped"), removed=delete,
                      project=name, project_id=pid)


@checks_answers("exporting the project")
def export(lab: Lab, client: Client, out: Path, *, reporter: Reporter = QUIET) -> ExportResult:
    """The project as a portable .gns3project (a zip with its images), written atomically."""
    project = find_project(client, lab)
    if project is None:
        raise MinivmError(f"GNS3 has no project {project_name(lab)}",
                          hint=f"create it first: minivm lab up {lab.path} --server ...")
    pid = _open(client, project)
    with reporter.bytes(f"exporting {project_name(lab)}") as advance, atomic_path(out) as tmp:
        client.download(f"/projects/{pid}/export?include_images=true&compression=zip",
                        tmp, what=f"exporting the project {project_name(lab)}", progress=advance)
        added = _add_missing_images(lab, tmp)
    return ExportResult(project_name(lab), pid, out, out.stat().st_size, tuple(added))


def _add_missing_images(lab: Lab, archive: Path) -> list[str]:
    """GNS3 3.0.6 exports only ``*_image`` files: the initrd is left out, and an importing
    server could not start the nodes. Add every bundle file the archive lacks."""
    try:
        with zipfile.ZipFile(archive, "a") as z:
            present = {Path(n).name for n in z.namelist() if n.startswith("images/")}
            added = []
            for app in {n.appliance.path: n.appliance for n in lab.nodes.values()}.values():
                for f in push.bundle_files(app):
                    if f.filename not in present:
                        z.write(f.path, f"images/QEMU/{f.filename}",
                                compress_type=zipfile.ZIP_STORED)
                        present.add(f.filename)
                        added.append(f.filename)
            return added
    except zipfile.BadZipFile as e:
        raise MinivmError(f"the GNS3 server's export of {project_name(lab)} is not a zip: "
                          f"{e}") from e


class Gns3Runner:
    """Labs run as projects on a GNS3 server (:class:`minivm.lab.runner.Runner`)."""

    remove_option = "--delete"

    def __init__(self, client: Client) -> None:
        self.client = client
        self.where = client.creds.url

    def up(self, lab: Lab, *, accel: str | None = None, start: bool = True,
           wait: str | None = None, timeout: float = 300.0,
           reporter: Reporter = QUIET, allow_unsafe_options: bool = False) -> UpResult:
        """``accel`` is the server's to choose (its templates' KVM setting)."""
        return up(lab, self.client, start=start, wait=wait, timeout=timeout, reporter=reporter,
                  allow_unsafe_options=allow_unsafe_options)

    def status(self, lab: Lab) -> LabStatus:
        return status(lab, self.client)

    def down(self, lab_file: Path, *, timeout: float = STOP_TIMEOUT, remove: bool = False,
             reporter: Reporter = QUIET) -> DownResult:
        """``timeout``: GNS3's own stop decides how long the power-off may take."""
        return down(lab_file, self.client, delete=remove, reporter=reporter)

    def exec(self, lab_file: Path, node: str, command: list[str], *,
             env: Mapping[str, str], user: str | None, workdir: str | None,
             stdin: BinaryIO | None, stdout: Write, stderr: Write, timeout: float) -> int:
        raise _local_only("exec")

    def cp(self, lab_file: Path, source: str, destination: str, *, timeout: float,
           archive: bool = False, warn: Callable[[str], None] = ignore) -> str:
        raise _local_only("cp")

    def export(self, lab: Lab, output: Path, *, reporter: Reporter = QUIET) -> ExportResult:
        return export(lab, self.client, output, reporter=reporter)


def _local_only(command: str) -> MinivmError:
    return MinivmError(f"lab {command} reaches a node through minivm's control channel, which "
                       "only the local runner gives its nodes",
                       hint="use the node's console on the GNS3 server")

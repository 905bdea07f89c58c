"""Labs: several MiniVMs described in a YAML file, linked by GNS3-style UDP tunnels.

A lab file::

    accel: auto                  # auto | kvm | tcg (the command line's --accel wins)
    console: telnet              # telnet (127.0.0.1:PORT, as GNS3) | unix
    nodes:
      r1:
        appliance: alpine-minivm # a built appliance name, or a path to a .gns3a
        ram: 256                 # MB (default: the appliance's)
        append: ip=10.0.0.1/24::::r1:eth0   # kernel arguments after the appliance's
        adapters: 2              # default: the appliance's; never more
      r2: {appliance: ./out/debian-minivm/debian-minivm.gns3a}
    links:
      - r1:eth0 -- r2:eth0
      - r1:eth1 -- udp:127.0.0.1:40001:40000  # send to 127.0.0.1:40001, listen on 40000

A link is two UDP tunnels on 127.0.0.1: each end listens on its own port and sends to the
other's, as GNS3 wires QEMU to uBridge. Ports come from the kernel (bind to port 0) and the
bound sockets are held, with SO_REUSEADDR, until the QEMU that shares the port (QEMU binds
with SO_REUSEADDR too) has started: no other port-0 allocation can get them in between.

The lab's state lives in ``<lab>.state/`` beside the lab file: ``state.json`` (pids, ports,
consoles), and per node its overlays (``hda_disk.qcow2``...: the node's disks, kept across
``down``/``up``), ``console.log`` (boot logs), ``qemu.log``, ``qmp.sock``, ``monitor.sock``.
A node recorded as running whose QEMU is gone (a crash, a kill -9) is reported as such and
started again by the next ``up``, on the same link ports so its peers still reach it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from minivm import accel as accel_mod
from minivm import gns3a, qemu, vmctl
from minivm.errors import MinivmError
from minivm.fsutil import atomic_write_bytes, remove
from minivm.run import run, stderr_tail, which
from minivm.ui import QUIET, Reporter

NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ENDPOINT = re.compile(r"^(?P<node>[^:\s]+):(?P<port>[^:\s]+)$")
EXTERNAL = re.compile(r"^udp:(?P<host>[^:\s]+):(?P<rport>\d+):(?P<lport>\d+)$")
NODE_KEYS = {"appliance", "ram", "cpus", "append", "adapters"}
STOP_TIMEOUT = 10.0
SOCKET_PATH_MAX = 107
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Node:
    name: str
    appliance: gns3a.Appliance
    ram: int
    cpus: int
    append: str
    adapters: int


@dataclass(frozen=True)
class External:
    """A link end outside the lab: frames go to host:remote_port, arrive on local_port."""

    host: str
    remote_port: int
    local_port: int


@dataclass(frozen=True)
class Link:
    text: str
    a: tuple[str, int]
    b: tuple[str, int] | External


@dataclass(frozen=True)
class Lab:
    path: Path
    nodes: dict[str, Node]
    links: tuple[Link, ...]
    accel: str
    console: str
    digest: str

    @property
    def state_dir(self) -> Path:
        return state_dir_of(self.path)


def state_dir_of(lab_file: Path) -> Path:
    """The state folder of a lab file: ``<stem>.state`` beside it."""
    lab_file = lab_file.resolve()
    return lab_file.with_name(f"{lab_file.stem}.state")


def endpoint_key(node: str, adapter: int) -> str:
    return f"{node}:eth{adapter}"


# --- reading the lab file -------------------------------------------------------------------

def load(path: Path) -> Lab:
    """Read and check a lab file: every error is one line naming the file and the item."""
    path = path.resolve()
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except OSError as e:
        raise MinivmError(f"cannot read the lab file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise MinivmError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    where = path.name
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict) or not data["nodes"]:
        raise MinivmError(f"{where}: no 'nodes' mapping", hint="see: minivm lab --help")
    unknown = set(data) - {"nodes", "links", "accel", "console"}
    if unknown:
        raise MinivmError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    appliances: dict[str, gns3a.Appliance] = {}
    nodes: dict[str, Node] = {}
    for name, spec in data["nodes"].items():
        name = str(name)
        if not NODE_NAME.match(name):
            raise MinivmError(f"{where}: node name {name!r} is not valid",
                              hint="letters, digits, '.', '_' and '-'")
        spec = spec or {}
        if not isinstance(spec, dict) or "appliance" not in spec:
            raise MinivmError(f"{where}: node {name} has no 'appliance'")
        if extra := set(spec) - NODE_KEYS:
            raise MinivmError(f"{where}: node {name}: unknown key(s) {', '.join(sorted(extra))}")
        ref = str(spec["appliance"])
        if "/" in ref or ref.endswith(".gns3a"):
            ref = str((path.parent / ref).resolve())
        app = appliances.get(ref) or gns3a.load(ref)
        appliances[ref] = app
        adapters = _int(spec.get("adapters", app.adapters), where, f"{name}.adapters")
        if adapters > app.adapters:
            raise MinivmError(f"{where}: node {name} asks for {adapters} adapters, the "
                              f"appliance {app.name} has {app.adapters}")
        nodes[name] = Node(name=name, appliance=app,
                           ram=_int(spec.get("ram", app.ram), where, f"{name}.ram"),
                           cpus=_int(spec.get("cpus", app.cpus), where, f"{name}.cpus"),
                           append=str(spec.get("append", "") or ""), adapters=adapters)
    links = _links(data.get("links") or [], nodes, where)
    accel = str(data.get("accel", "auto"))
    console = str(data.get("console", "telnet"))
    if console not in ("telnet", "unix"):
        raise MinivmError(f"{where}: console {console!r} is neither telnet nor unix")
    return Lab(path=path, nodes=nodes, links=links, accel=accel, console=console,
               digest=hashlib.sha256(raw).hexdigest()[:16])


def _int(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MinivmError(f"{where}: {what} must be a whole number, not {value!r}")
    return value


def _links(items: Any, nodes: dict[str, Node], where: str) -> tuple[Link, ...]:
    if not isinstance(items, list):
        raise MinivmError(f"{where}: 'links' must be a list of 'a:eth0 -- b:eth0'")
    used: dict[str, str] = {}
    local_ports: set[int] = set()
    links = []
    for item in items:
        text = " ".join(str(item).split())
        parts = [p.strip() for p in text.split("--")]
        if len(parts) != 2:
            raise MinivmError(f"{where}: link {text!r} is not 'a:eth0 -- b:eth0'")
        ends: list[tuple[str, int] | External] = []
        for part in parts:
            if ext := EXTERNAL.match(part):
                end: tuple[str, int] | External = External(
                    ext["host"], int(ext["rport"]), int(ext["lport"]))
                assert isinstance(end, External)
                if end.local_port in local_ports or not 0 < end.local_port < 65536:
                    raise MinivmError(f"{where}: link {text!r}: local UDP port "
                                      f"{end.local_port} is invalid or used twice")
                local_ports.add(end.local_port)
            else:
                end = _endpoint(part, text, nodes, where)
                key = endpoint_key(*end)
                if key in used:
                    raise MinivmError(f"{where}: adapter {key} is used twice "
                                      f"(in {used[key]!r} and {text!r})")
                used[key] = text
            ends.append(end)
        a, b = ends
        if isinstance(a, External):
            a, b = b, a
        if isinstance(a, External):
            raise MinivmError(f"{where}: link {text!r} has no lab node")
        links.append(Link(text=text, a=a, b=b))
    return tuple(links)


def _endpoint(part: str, text: str, nodes: dict[str, Node], where: str) -> tuple[str, int]:
    m = ENDPOINT.match(part)
    if not m:
        raise MinivmError(f"{where}: link end {part!r} in {text!r} is not NODE:ethN or "
                          "udp:HOST:REMOTE_PORT:LOCAL_PORT")
    name, port = m["node"], m["port"]
    if name not in nodes:
        raise MinivmError(f"{where}: link {text!r} names an unknown node {name!r}",
                          hint=f"nodes: {', '.join(nodes)}")
    node = nodes[name]
    num = re.search(r"(\d+)$", port)
    names = {node.appliance.port_name(i): i for i in range(node.adapters)}
    index = names.get(port, int(num.group(1)) if num else -1)
    if not 0 <= index < node.adapters:
        raise MinivmError(f"{where}: link {text!r}: {name} has no adapter {port} "
                          f"({node.adapters} adapter(s): eth0..eth{node.adapters - 1})")
    return name, index


# --- state ----------------------------------------------------------------------------------

@dataclass
class State:
    """What ``state.json`` records; ``nodes[name]`` holds pid, console, qmp, ports, ..."""

    lab: str = ""
    digest: str = ""
    ports: dict[str, int] = field(default_factory=dict)  # endpoint key -> local UDP port
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)


def _read_state(state_dir: Path) -> State:
    file = state_dir / "state.json"
    if not file.exists():
        return State()
    try:
        data = json.loads(file.read_text())
        return State(lab=data["lab"], digest=data.get("digest", ""),
                     ports=dict(data.get("ports", {})), nodes=dict(data.get("nodes", {})))
    except (OSError, ValueError, KeyError) as e:
        raise MinivmError(f"lab state {file} is unreadable ({e})",
                          hint=f"stop any QEMU of this lab and remove {state_dir}") from e


def _write_state(state_dir: Path, state: State) -> None:
    data = {"lab": state.lab, "digest": state.digest, "ports": state.ports,
            "nodes": state.nodes}
    atomic_write_bytes(state_dir / "state.json",
                       (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One lab command at a time per lab (up, down)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MinivmError(f"another minivm command is working on the lab {state_dir}",
                              hint="wait for it to finish") from None
        yield


def node_dir(lab: Lab | Path, name: str) -> Path:
    """A node's folder in the state folder (``lab``: a Lab or its state folder)."""
    return (lab.state_dir if isinstance(lab, Lab) else lab) / name


def _running(rec: dict[str, Any]) -> bool:
    return bool(rec.get("pid")) and vmctl.alive(int(rec["pid"]), marker=rec.get("qmp"))


def _clean_runtime(lab: Lab | Path, name: str) -> None:
    """Remove what a dead QEMU leaves: sockets and pid file (never the disks or logs)."""
    for leftover in ("qmp.sock", "monitor.sock", "console.sock", "qemu.pid"):
        remove(node_dir(lab, name) / leftover)


# --- ports ----------------------------------------------------------------------------------

def hold_port(port: int = 0, *, kind: int = socket.SOCK_DGRAM, what: str = "") -> socket.socket:
    """A bound socket holding a 127.0.0.1 port (0: a free one) until QEMU shares it.

    A fixed port is first bound without SO_REUSEADDR, so a port anyone holds is refused.
    """
    if port:
        probe = socket.socket(socket.AF_INET, kind)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as e:
            raise MinivmError(f"port {port} ({what or 'UDP'}) on {LOOPBACK} is taken",
                              hint="free it or pick another port") from e
        finally:
            probe.close()
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as e:
        sock.close()
        raise MinivmError(f"port {port} ({what or 'UDP'}) on {LOOPBACK} is taken") from e
    return sock


def _tunnels(lab: Lab, ports: dict[str, int], name: str) -> list[qemu.UdpTunnel | None]:
    """The UDP tunnel of each adapter of ``name`` (None when unconnected)."""
    out: list[qemu.UdpTunnel | None] = [None] * lab.nodes[name].adapters
    for link in lab.links:
        for here, there in ((link.a, link.b), (link.b, link.a)):
            if isinstance(here, External) or here[0] != name:
                continue
            local = ports[endpoint_key(*here)]
            if isinstance(there, External):
                out[here[1]] = qemu.UdpTunnel(local, there.host, there.remote_port)
            else:
                out[here[1]] = qemu.UdpTunnel(local, LOOPBACK, ports[endpoint_key(*there)])
    return out


def _endpoints(lab: Lab) -> Iterator[tuple[str, int, int]]:
    """(node, adapter, fixed local port or 0) of every connected adapter."""
    for link in lab.links:
        fixed = link.b.local_port if isinstance(link.b, External) else 0
        yield link.a[0], link.a[1], fixed
        if not isinstance(link.b, External):
            yield link.b[0], link.b[1], 0


# --- up / status / down ---------------------------------------------------------------------

def node_id(lab: Lab, name: str) -> uuid.UUID:
    """A node's stable id (also its QEMU -uuid and the base of its MAC addresses)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"minivm-lab:{lab.path}:{name}")


def up(lab: Lab, *, accel: str | None = None, reporter: Reporter = QUIET) -> list[str]:
    """Start every node that is not running; returns the names started.

    Nothing is left half-way: when a node fails to start, the nodes this call started are
    stopped again and the overlays it created removed, and the error is raised.
    """
    which("qemu-system-x86_64")
    which("qemu-img")
    with _locked(lab.state_dir):
        state = _read_state(lab.state_dir)
        alive = {n for n, rec in state.nodes.items() if _running(rec)}
        for name in sorted(set(state.nodes) - alive):
            if state.nodes[name].get("status") == "running":
                reporter.warn(f"{name}: its QEMU is gone (crash or kill); starting it again")
            _clean_runtime(lab, name)
            del state.nodes[name]
        if alive and state.digest != lab.digest:
            raise MinivmError(f"{lab.path.name} changed while its lab runs "
                              f"({', '.join(sorted(alive))})",
                              hint=f"run: minivm lab down {lab.path}")
        if stray := alive - set(lab.nodes):
            raise MinivmError(f"nodes {', '.join(sorted(stray))} run but are not in the lab")
        if not alive:
            state.ports = {}
        todo = [n for n in lab.nodes if n not in alive]
        if not todo:
            reporter.info("every node is running already")
            return []
        chosen = accel_mod.choose(accel or lab.accel, reporter=reporter)
        for name in todo:
            for sock in ("qmp.sock", "monitor.sock", "console.sock"):
                path = node_dir(lab, name) / sock
                if len(str(path)) > SOCKET_PATH_MAX:
                    raise MinivmError(f"socket path {path} is too long for a Unix socket",
                                      hint="move the lab file to a shorter path")
        state.lab, state.digest = str(lab.path), lab.digest
        started: list[str] = []
        created: list[Path] = []
        try:
            with ExitStack() as holders:
                held: dict[str, socket.socket] = {}
                for node, adapter, fixed in _endpoints(lab):
                    if node not in todo:
                        continue
                    key = endpoint_key(node, adapter)
                    port = state.ports.get(key, fixed)
                    sock = holders.enter_context(hold_port(port, what=f"link end {key}"))
                    held[key] = sock
                    state.ports[key] = sock.getsockname()[1]
                consoles: dict[str, socket.socket] = {}
                if lab.console == "telnet":
                    for name in todo:
                        consoles[name] = holders.enter_context(
                            hold_port(0, kind=socket.SOCK_STREAM, what="console"))
                for name in todo:
                    with reporter.stage(f"start:{name}", f"Starting {name}"):
                        rec = _start_node(lab, state, name, chosen, consoles.get(name), created)
                    state.nodes[name] = rec
                    started.append(name)
                    for key in [k for k in held if k.startswith(f"{name}:")]:
                        held.pop(key).close()  # QEMU has the port now
                    if name in consoles:
                        consoles.pop(name).close()
            _write_state(lab.state_dir, state)
        except BaseException:
            _rollback(lab, state, started, created)
            raise
        return started


def _start_node(lab: Lab, state: State, name: str, chosen: accel_mod.Accel,
                console_hold: socket.socket | None, created: list[Path]) -> dict[str, Any]:
    node = lab.nodes[name]
    workdir = node_dir(lab, name)
    workdir.mkdir(parents=True, exist_ok=True)
    new = [p for p in qemu.overlay_paths(node.appliance, workdir) if not p.exists()]
    disks = qemu.create_overlays(node.appliance, workdir)
    created += new
    if console_hold is not None:
        port = console_hold.getsockname()[1]
        console = qemu.Console("telnet", port=port, log=workdir / "console.log")
        address = f"telnet:{LOOPBACK}:{port}"
    else:
        console = qemu.Console("unix", path=workdir / "console.sock", log=workdir / "console.log")
        address = f"unix:{workdir / 'console.sock'}"
    qmp = workdir / "qmp.sock"
    m = qemu.machine_from_appliance(
        node.appliance, name=name, node_id=node_id(lab, name), disks=disks,
        adapters=_tunnels(lab, state.ports, name), append=node.append, ram=node.ram,
        cpus=node.cpus, accel=chosen, console=console, qmp=qmp,
        monitor=workdir / "monitor.sock", pidfile=workdir / "qemu.pid", daemonize=True)
    argv = qemu.command_line(m)
    _clean_runtime(lab, name)
    (workdir / "console.log").open("ab").write(
        f"\n--- minivm lab up {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
    started = time.time()
    proc = run(argv, what=f"starting node {name}", check=False)
    (workdir / "qemu.log").write_bytes(proc.stderr or b"")
    if proc.returncode != 0:
        raise MinivmError(f"node {name}: QEMU failed to start: {stderr_tail(proc.stderr, 1)}")
    pid = int((workdir / "qemu.pid").read_text().strip())
    return {"status": "running", "pid": pid, "qmp": str(qmp), "console": address,
            "monitor": str(workdir / "monitor.sock"), "accel": chosen, "started": started,
            "node_id": str(m.node_id), "argv": argv,
            "macs": [qemu.mac_address(m.node_id, i) for i in range(node.adapters)]}


def _rollback(lab: Lab, state: State, started: list[str], created: list[Path]) -> None:
    for name in started:
        rec = state.nodes.pop(name, {})
        if rec.get("pid"):
            vmctl.stop(int(rec["pid"]), Path(rec["qmp"]), timeout=0)
        _clean_runtime(lab, name)
    for path in created:
        remove(path)
    if not any(_running(rec) for rec in state.nodes.values()):
        state.ports = {}
    if state.nodes:
        _write_state(lab.state_dir, state)
    else:
        remove(lab.state_dir / "state.json")


def status(lab: Lab) -> dict[str, Any]:
    """What runs: per node its state (running, stopped, crashed), pid, console, QMP status."""
    state = _read_state(lab.state_dir)
    nodes: dict[str, Any] = {}
    for name in lab.nodes:
        rec = state.nodes.get(name)
        info: dict[str, Any] = {"status": "stopped"}
        if rec:
            running = _running(rec)
            info = {"status": "running" if running else "crashed", "pid": rec["pid"],
                    "console": rec["console"], "accel": rec.get("accel"),
                    "log": str(node_dir(lab, name) / "console.log")}
            if running:
                try:
                    info["guest"] = vmctl.query_status(Path(rec["qmp"]), timeout=3)
                except MinivmError:
                    info["guest"] = "not answering"
        info["ports"] = {f"eth{i}": t.local_port if t else None
                         for i, t in enumerate(_tunnels_or_none(lab, state.ports, name))}
        nodes[name] = info
    return {"lab": str(lab.path), "state": str(lab.state_dir), "nodes": nodes,
            "links": [link.text for link in lab.links]}


def _tunnels_or_none(lab: Lab, ports: dict[str, int], name: str) -> list[qemu.UdpTunnel | None]:
    try:
        return _tunnels(lab, ports, name)
    except KeyError:  # not started: no ports yet
        return [None] * lab.nodes[name].adapters


def down(lab_file: Path, *, timeout: float = STOP_TIMEOUT, clean: bool = False,
         reporter: Reporter = QUIET) -> dict[str, str]:
    """Power every node off (ACPI, all at once, ``timeout`` s), then quit or kill what remains.

    Needs only the state folder (works when the lab file or its appliances changed or went).
    Returns how each node ended (acpi, quit, killed, gone). With ``clean`` the state folder,
    disks included, is removed.
    """
    state_dir = state_dir_of(lab_file)
    if not state_dir.exists():
        reporter.info("the lab is not running")
        return {}
    with _locked(state_dir):
        state = _read_state(state_dir)
        results: dict[str, str] = {}

        def stop_one(name: str, rec: dict[str, Any]) -> None:
            results[name] = vmctl.stop(int(rec["pid"]), Path(rec["qmp"]), timeout=timeout)

        threads = [threading.Thread(target=stop_one, args=(n, r)) for n, r in state.nodes.items()
                   if _running(r)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in state.nodes:
            results.setdefault(name, "gone")
        for name, how in sorted(results.items()):
            _clean_runtime(state_dir, name)
            if how in ("quit", "killed"):
                reporter.warn(f"{name}: did not power off within {timeout:.0f} s ({how})")
            else:
                reporter.info(f"{name}: {'powered off' if how == 'acpi' else 'was not running'}")
        state.nodes, state.ports = {}, {}
        _write_state(state_dir, state)
    if clean:
        shutil.rmtree(state_dir, ignore_errors=True)
    return results


def console_address(lab_file: Path, name: str) -> str:
    """Where a running node's console listens (from the state folder alone)."""
    rec = _read_state(state_dir_of(lab_file)).nodes.get(name)
    if not rec or not _running(rec):
        raise MinivmError(f"node {name} of {lab_file.name} is not running",
                          hint=f"see: minivm lab status {lab_file}")
    return str(rec["console"])


def wait_console(lab: Lab, pattern: str, *, timeout: float, names: list[str] | None = None,
                 since: dict[str, int] | None = None) -> dict[str, float]:
    """Wait until every node's console log (after byte offset ``since[name]``) matches
    ``pattern``; returns the seconds each took. Bounded poll of the log files."""
    regex = re.compile(pattern.encode())
    names = names or list(lab.nodes)
    start = time.monotonic()
    deadline = start + timeout
    seen: dict[str, float] = {}
    while True:
        for name in names:
            if name in seen:
                continue
            log = node_dir(lab, name) / "console.log"
            data = log.read_bytes()[(since or {}).get(name, 0):] if log.exists() else b""
            if regex.search(data):
                seen[name] = time.monotonic() - start
        if len(seen) == len(names):
            return seen
        if time.monotonic() > deadline:
            missing = ", ".join(n for n in names if n not in seen)
            raise MinivmError(f"{missing}: {pattern!r} not on the console within "
                              f"{timeout:.0f} s", hint=f"see {lab.state_dir}/*/console.log")
        time.sleep(0.1)

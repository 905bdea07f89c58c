"""The lab file: nodes, links and settings, read and checked (one line per error)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minivm import yamlfile
from minivm.errors import MinivmError
from minivm.gns3 import reader
from minivm.kinds import ConsoleKind
from minivm.vm import options, qemu

NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # a whole name: fullmatch
ENDPOINT = re.compile(r"(?P<node>[^:\s]+):(?P<port>[^:\s]+)")  # fullmatch
EXTERNAL = re.compile(r"udp:(?P<host>[^:\s]+):(?P<rport>\d+):(?P<lport>\d+)")  # fullmatch
NODE_KEYS = {"appliance", "ram", "cpus", "append", "adapters", "publish", "compute", "console"}
CONSOLES = (ConsoleKind.UNIX, ConsoleKind.TELNET)  # a lab node's: unix (default) or telnet
STOP_TIMEOUT = 10.0
SOCKET_PATH_MAX = 107
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Node:
    name: str
    appliance: reader.Appliance
    ram: int
    cpus: int
    append: str
    adapters: int
    publish: tuple[qemu.Publish, ...] = ()  # host ports forwarded to the node (127.0.0.1)
    compute: str | None = None  # a GNS3 compute (id or name); the local runner ignores it
    # unix: a socket only its user reaches (`minivm lab console`); telnet: 127.0.0.1:PORT, open
    # to every local user, for tools that need it. A GNS3 server keeps its own consoles.
    console: ConsoleKind = ConsoleKind.UNIX


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
    console: ConsoleKind  # the nodes' default
    digest: str

    @property
    def state_dir(self) -> Path:
        return state_dir_of(self.path)


def state_dir_of(lab_file: Path) -> Path:
    """The state folder of a lab file: ``<stem>.state`` beside it."""
    lab_file = lab_file.resolve()
    return lab_file.with_name(f"{lab_file.stem}.state")


def check_options(lab: Lab, *, allow_unsafe: bool = False) -> None:
    """Every node's appliance options against the allow-list (:mod:`minivm.vm.options`)."""
    for node in lab.nodes.values():
        options.check(node.appliance.options, where=str(node.appliance.path),
                      allow_unsafe=allow_unsafe)


def endpoint_key(node: str, adapter: int) -> str:
    return f"{node}:eth{adapter}"




def load(path: Path) -> Lab:
    """Read and check a lab file: every error is one line naming the file and the item."""
    path = path.resolve()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MinivmError(f"cannot read the lab file {path}: {e.strerror}") from e
    data = yamlfile.load(raw, where=str(path))
    where = path.name
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict) or not data["nodes"]:
        raise MinivmError(f"{where}: no 'nodes' mapping", hint="see: minivm lab --help")
    unknown = set(data) - {"nodes", "links", "accel", "console"}
    if unknown:
        raise MinivmError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    console = _console(data.get("console", ConsoleKind.UNIX), where)
    appliances: dict[str, reader.Appliance] = {}
    nodes: dict[str, Node] = {}
    for name, spec in data["nodes"].items():
        name = str(name)
        if not NODE_NAME.fullmatch(name):
            raise MinivmError(f"{where}: node name {name!r} is not valid",
                              hint="1 to 63 letters, digits, '.', '_' and '-', starting with a "
                                   "letter or digit")
        if name in nodes:
            raise MinivmError(f"{where}: node {name} is given twice")
        spec = spec or {}
        if not isinstance(spec, dict) or "appliance" not in spec:
            raise MinivmError(f"{where}: node {name} has no 'appliance'")
        if extra := set(spec) - NODE_KEYS:
            raise MinivmError(f"{where}: node {name}: unknown key(s) {', '.join(sorted(extra))}")
        ref = str(spec["appliance"])
        if "/" in ref or ref.endswith(".gns3a"):
            ref = str((path.parent / ref).resolve())
        app = appliances.get(ref) or reader.load(ref)
        appliances[ref] = app
        adapters = _int(spec.get("adapters", app.adapters), where, f"{name}.adapters")
        if adapters > app.adapters:
            raise MinivmError(f"{where}: node {name} asks for {adapters} adapters, the "
                              f"appliance {app.name} has {app.adapters}")
        nodes[name] = Node(name=name, appliance=app,
                           ram=_int(spec.get("ram", app.ram), where, f"{name}.ram"),
                           cpus=_int(spec.get("cpus", app.cpus), where, f"{name}.cpus"),
                           append=with_hostname(name, str(spec.get("append", "") or "")),
                           adapters=adapters, publish=_publish(spec.get("publish"), where, name),
                           compute=str(spec["compute"]) if spec.get("compute") else None,
                           console=_console(spec.get("console", console), f"{where}: {name}"))
    qemu.check_publish([p for n in nodes.values() for p in n.publish], where)
    links = _links(data.get("links") or [], nodes, where)
    accel = str(data.get("accel", "auto"))
    return Lab(path=path, nodes=nodes, links=links, accel=accel, console=console,
               digest=hashlib.sha256(raw).hexdigest()[:16])


def _console(value: Any, where: str) -> ConsoleKind:
    if value not in CONSOLES:
        raise MinivmError(f"{where}: console {value!r} is neither unix nor telnet",
                          hint="unix (the default: `minivm lab console LAB NODE`) or telnet")
    return ConsoleKind(value)


def _publish(value: Any, where: str, name: str) -> tuple[qemu.Publish, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MinivmError(f"{where}: node {name}: 'publish' must be a list such as "
                          "[\"8080:80\", \"2222:22/tcp\"]")
    return tuple(qemu.parse_publish(str(item), f"{where}: node {name}") for item in value)


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
            if ext := EXTERNAL.fullmatch(part):
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
    m = ENDPOINT.fullmatch(part)
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


def with_hostname(name: str, append: str) -> str:
    """The node's kernel arguments, naming the guest after the node (``hostname=NAME``) unless
    they name it already (``hostname=``, or the hostname field of an ``ip=`` argument)."""
    for word in append.split():
        if word.startswith("hostname="):
            return append
        if word.startswith("ip="):
            fields = word[3:].split(":")
            if len(fields) > 4 and fields[4]:
                return append
    return f"hostname={name} {append}".strip()


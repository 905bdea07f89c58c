"""The lab file: nodes, links and settings, read and checked (one line per error)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from minivm import yamlfile
from minivm.errors import MinivmError
from minivm.gns3 import reader
from minivm.kinds import ConsoleKind
from minivm.lab import clab, images
from minivm.lab import networks as networks_mod
from minivm.lab.networks import Network
from minivm.vm import options, qemu

NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # a whole name: fullmatch
ENDPOINT = re.compile(r"(?P<node>[^:\s]+):(?P<port>[^:\s]+)")  # fullmatch
EXTERNAL = re.compile(r"udp:(?P<host>[^:\s]+):(?P<rport>\d+):(?P<lport>\d+)")  # fullmatch
NODE_KEYS = {"appliance", "image", "ram", "cpus", "append", "adapters", "publish", "compute",
             "console", "ip", "env", "exec", "binds"}
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
    image: str | None = None  # the source ``lab up`` builds the appliance from
    env: tuple[tuple[str, str], ...] = ()  # for the main process and lab exec
    exec: tuple[str, ...] = ()  # commands run once the node has booted (lab up)
    binds: tuple[str, ...] = ()  # HOST:GUEST[:MODE] copied in once the node has booted


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
    networks: tuple[Network, ...] = ()
    notes: tuple[str, ...] = ()  # what a containerlab file asks that is not honoured
    name: str = ""  # the lab's name (a containerlab topology's), else the file's stem

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
    notes: list[str] = []
    if clab.is_clab(path, data):
        data, notes = clab.to_lab(data, where)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict) or not data["nodes"]:
        raise MinivmError(f"{where}: no 'nodes' mapping", hint="see: minivm lab --help")
    unknown = set(data) - {"name", "nodes", "links", "networks", "accel", "console"}
    if unknown:
        raise MinivmError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    console = _console(data.get("console", ConsoleKind.UNIX), where)
    appliances: dict[str, reader.Appliance] = {}
    nodes: dict[str, Node] = {}
    own_ips: dict[str, dict[str, str]] = {}
    for name, spec in data["nodes"].items():
        name = str(name)
        if not NODE_NAME.fullmatch(name):
            raise MinivmError(f"{where}: node name {name!r} is not valid",
                              hint="1 to 63 letters, digits, '.', '_' and '-', starting with a "
                                   "letter or digit")
        if name in nodes:
            raise MinivmError(f"{where}: node {name} is given twice")
        spec = spec or {}
        if not isinstance(spec, dict) or ("appliance" in spec) == ("image" in spec):
            raise MinivmError(f"{where}: node {name} needs either 'appliance' (a built "
                              "appliance) or 'image' (a source to build)")
        if extra := set(spec) - NODE_KEYS:
            raise MinivmError(f"{where}: node {name}: unknown key(s) {', '.join(sorted(extra))}")
        ref = _appliance_ref(spec, path, name)
        app = appliances.get(ref) or reader.load(ref)
        appliances[ref] = app
        adapters = _int(spec.get("adapters", app.adapters), where, f"{name}.adapters")
        if adapters > app.adapters and "image" not in spec:
            raise MinivmError(f"{where}: node {name} asks for {adapters} adapters, the "
                              f"appliance {app.name} has {app.adapters}")
        if adapters > app.adapters:  # built for this lab: its NIC count is the lab's
            app = replace(app, adapters=adapters)
        nodes[name] = Node(name=name, appliance=app,
                           ram=_int(spec.get("ram", app.ram), where, f"{name}.ram"),
                           cpus=_int(spec.get("cpus", app.cpus), where, f"{name}.cpus"),
                           append=str(spec.get("append", "") or ""),  # completed below
                           adapters=adapters, publish=_publish(spec.get("publish"), where, name),
                           compute=str(spec["compute"]) if spec.get("compute") else None,
                           console=_console(spec.get("console", console), f"{where}: {name}"),
                           image=images.source_text(spec, path),
                           env=_env(spec.get("env"), where, name),
                           exec=_strings(spec.get("exec"), where, f"node {name}: exec"),
                           binds=_strings(spec.get("binds"), where, f"node {name}: binds"))
        own_ips[name] = _own_ips(spec.get("ip"), where, name)
    qemu.check_publish([p for n in nodes.values() for p in n.publish], where)
    ends = _Ends(nodes, where)
    links = _links(data.get("links") or [], ends, where)
    networks = networks_mod.parse(data.get("networks"), where, nodes=nodes, member=ends.parse,
                                  own_ips=own_ips)
    nodes = {name: _with_kernel_args(node, networks, where) for name, node in nodes.items()}
    accel = str(data.get("accel", "auto"))
    return Lab(path=path, nodes=nodes, links=links, accel=accel, console=console,
               digest=hashlib.sha256(raw).hexdigest()[:16], networks=networks,
               notes=tuple(notes), name=str(data.get("name") or path.name.split(".")[0]))


def _env(value: Any, where: str, name: str) -> tuple[tuple[str, str], ...]:
    """``env:``, passed as ``KEY=value`` kernel arguments: names as the init reads them
    (upper case, digits, ``_``), values without double quotes."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise MinivmError(f"{where}: node {name}: 'env' must map names to values")
    out = []
    for key, val in value.items():
        key, val = str(key), "" if val is None else str(val)
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key) or '"' in val or "\n" in val:
            raise MinivmError(f"{where}: node {name}: env {key}: the kernel command line "
                              "passes only upper-case names and values without '\"' or "
                              "newlines")
        out.append((key, val))
    return tuple(out)


def _strings(value: Any, where: str, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MinivmError(f"{where}: {what} must be a list of strings")
    return tuple(value)


def _appliance_ref(spec: dict[str, Any], path: Path, name: str) -> str:
    """The appliance a node boots: its ``appliance:`` (a name, or a .gns3a path beside the
    lab file), or the bundle ``lab up`` built from its ``image:``."""
    if "image" in spec:
        src = images.resolve(spec["image"], path, state_dir_of(path), f"{path.name}: node {name}")
        if not src.bundle.is_file():
            raise MinivmError(f"{path.name}: node {name}: its image {src.text} is not built yet",
                              hint=f"minivm lab up {path} builds it")
        return str(src.bundle)
    ref = str(spec["appliance"])
    if "/" in ref or ref.endswith(".gns3a"):
        ref = str((path.parent / ref).resolve())
    return ref


def _own_ips(value: Any, where: str, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MinivmError(f"{where}: node {name}: 'ip' must map a network to an address",
                          hint="e.g. ip: {lan: 10.77.0.50}")
    return {str(k): v for k, v in value.items()}


def _with_kernel_args(node: Node, networks: tuple[Network, ...], where: str) -> Node:
    """The node's kernel arguments: its name, its segment addresses and its peers' names, then
    its own ``append`` (so that an ``ip=`` of its own wins)."""
    extra = networks_mod.kernel_args(networks, node.name)
    extra += "".join(f' {k}="{v}"' if re.search(r"\s", v) else f" {k}={v}" for k, v in node.env)
    append = with_hostname(node.name, f"{extra.strip()} {node.append}".strip())
    room = networks_mod.KERNEL_COMMAND_LINE_MAX - len(node.appliance.kernel_command_line) - 1
    if extra and len(append) > room:
        raise MinivmError(f"{where}: node {node.name}: its kernel arguments with the "
                          f"networks' addresses and names take {len(append)} bytes, more "
                          f"than the {room} the kernel command line has left",
                          hint="fewer or shorter node names on its networks")
    return replace(node, append=append)


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


class _Ends:
    """Parses link ends and network members: a node's adapter (each used once in the whole
    lab) or an outside ``udp:HOST:REMOTE_PORT:LOCAL_PORT`` end (each local port once)."""

    def __init__(self, nodes: dict[str, Node], where: str) -> None:
        self.nodes, self.where = nodes, where
        self.used: dict[str, str] = {}
        self.local_ports: set[int] = set()

    def parse(self, part: str, text: str) -> tuple[str, int] | External:
        if ext := EXTERNAL.fullmatch(part):
            end = External(ext["host"], int(ext["rport"]), int(ext["lport"]))
            if end.local_port in self.local_ports or not 0 < end.local_port < 65536:
                raise MinivmError(f"{self.where}: {text}: local UDP port "
                                  f"{end.local_port} is invalid or used twice")
            self.local_ports.add(end.local_port)
            return end
        node_end = _endpoint(part, text, self.nodes, self.where)
        key = endpoint_key(*node_end)
        if key in self.used:
            raise MinivmError(f"{self.where}: adapter {key} is used twice "
                              f"(in {self.used[key]} and {text})")
        self.used[key] = text
        return node_end


def _links(items: Any, ends: _Ends, where: str) -> tuple[Link, ...]:
    if not isinstance(items, list):
        raise MinivmError(f"{where}: 'links' must be a list of 'a:eth0 -- b:eth0'")
    links = []
    for item in items:
        text = " ".join(str(item).split())
        parts = [p.strip() for p in text.split("--")]
        if len(parts) != 2:
            raise MinivmError(f"{where}: link {text!r} is not 'a:eth0 -- b:eth0'")
        a, b = (ends.parse(part, f"link {text!r}") for part in parts)
        if isinstance(a, External):
            a, b = b, a
        if isinstance(a, External):
            raise MinivmError(f"{where}: link {text!r} has no lab node")
        links.append(Link(text=text, a=a, b=b))
    return tuple(links)


def _endpoint(part: str, text: str, nodes: dict[str, Node], where: str) -> tuple[str, int]:
    m = ENDPOINT.fullmatch(part)
    if not m:
        raise MinivmError(f"{where}: {part!r} in {text} is not NODE:ethN or "
                          "udp:HOST:REMOTE_PORT:LOCAL_PORT")
    name, port = m["node"], m["port"]
    if name not in nodes:
        raise MinivmError(f"{where}: {text} names an unknown node {name!r}",
                          hint=f"nodes: {', '.join(nodes)}")
    node = nodes[name]
    num = re.search(r"(\d+)$", port)
    names = {node.appliance.port_name(i): i for i in range(node.adapters)}
    index = names.get(port, int(num.group(1)) if num else -1)
    if not 0 <= index < node.adapters:
        raise MinivmError(f"{where}: {text}: {name} has no adapter {port} "
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


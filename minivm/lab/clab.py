"""containerlab topology files (``*.clab.yml``) as labs, and labs written back as one.

Reading turns a topology into the lab file's own form (:func:`to_lab`), which
:func:`minivm.lab.spec.load` then checks like any lab file:

* ``topology.nodes`` of ``kind: linux`` with ``image`` become ``image:`` nodes (built by ``lab
  up``); ``defaults``, ``kinds`` and ``groups`` are inherited as containerlab does (scalars: the
  most specific level wins; ``env`` merged; ``exec`` and ``binds`` joined). ``image`` may also
  be a context folder or an archive beside the file; a node labelled ``minivm.appliance``
  boots that built appliance instead.
* ``env`` goes to the node's main process and ``lab exec`` (kernel arguments, as ``-e``),
  ``binds`` are copied in once the node has booted (``lab cp``: a copy, not a mount), ``exec``
  commands run after the copies, split into words as containerlab does (no shell).
* Interfaces keep their names: containerlab's ``ethN`` is adapter N, named ``ethN`` in the
  guest; ``eth0`` is the management NIC, which stays unconnected (``mgmt`` is not honoured).
* ``topology.links`` (brief ``endpoints: ["a:eth1", "b:eth1"]`` or ``type: veth``) become
  links; a node of ``kind: bridge`` becomes a network (``networks:``) whose members are the
  interfaces linked to it (a ``minivm.subnet`` label gives it a subnet); ``ipv4`` on a link end
  becomes that interface's address.

Everything else is named in one line each (a note), never silently dropped; a kind other than
``linux`` and ``bridge`` is an error. :func:`export` writes a lab back in this form, so that
export then import gives the same lab.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from minivm.errors import MinivmError

KINDS = ("linux", "bridge")
MERGED_MAPS = ("env", "labels")
JOINED_LISTS = ("exec", "binds")
SCALARS = ("kind", "image", "memory", "cpu", "group")
HONOURED = {*SCALARS, *MERGED_MAPS, *JOINED_LISTS}
BRIEF = re.compile(r"^(?P<node>[^:\s]+):(?P<iface>\S+)$")
ETH = re.compile(r"^eth(\d+)$")
SPECIAL_ENDS = ("host", "mgmt-net", "macvlan")
APPLIANCE_LABEL = "minivm.appliance"
SUBNET_LABEL = "minivm.subnet"
ADAPTERS_LABEL = "minivm.adapters"
MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?$", re.IGNORECASE)


def is_clab(path: Path, data: Any) -> bool:
    """A containerlab file: named ``*.clab.yml``/``*-clab.yml``, or a ``topology`` mapping
    at its top (a minivm lab file has ``nodes`` there)."""
    name = path.name.lower()
    return (name.endswith((".clab.yml", ".clab.yaml", "-clab.yml", "-clab.yaml"))
            or (isinstance(data, dict) and "topology" in data and "nodes" not in data))


def to_lab(data: Any, where: str) -> tuple[dict[str, Any], list[str]]:
    """A topology as a minivm lab file's data, and one note per thing not honoured."""
    notes: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("topology"), dict):
        raise MinivmError(f"{where}: not a containerlab topology (no 'topology' mapping)")
    for key in sorted(set(data) - {"name", "topology"}):
        notes.append(f"{key}: not honoured" + (" (eth0, the management NIC, stays "
                                               "unconnected)" if key == "mgmt" else ""))
    topo = data["topology"]
    for key in sorted(set(topo) - {"nodes", "links", "defaults", "kinds", "groups"}):
        notes.append(f"topology.{key}: not honoured")
    if not isinstance(topo.get("nodes"), dict) or not topo["nodes"]:
        raise MinivmError(f"{where}: topology.nodes is missing or empty")
    nodes: dict[str, Any] = {}
    bridges: dict[str, dict[str, Any]] = {}
    for name, raw in topo["nodes"].items():
        name = str(name)
        spec = _inherit(topo, raw or {}, where, name)
        kind = spec.get("kind")
        if kind not in KINDS:
            raise MinivmError(f"{where}: node {name}: kind {kind!r} is not supported",
                              hint="minivm runs kind: linux nodes (and kind: bridge as a "
                                   "network)")
        for key in sorted(set(spec) - HONOURED):
            notes.append(f"node {name}: {key}: not honoured")
        if kind == "bridge":
            bridges[name] = spec
            continue
        nodes[name] = _node(spec, where, name, notes)
    networks = {b: {"members": [], **({"subnet": str(s["labels"][SUBNET_LABEL])}
                                      if SUBNET_LABEL in s.get("labels", {}) else {})}
                for b, s in bridges.items()}
    links = _links(topo.get("links") or [], nodes, networks, where, notes)
    for net_name, net in networks.items():
        if len(net["members"]) < 2:
            notes.append(f"bridge {net_name}: fewer than two members, left out")
    out: dict[str, Any] = {"name": str(data.get("name") or ""), "nodes": nodes, "links": links,
                           "networks": {n: v for n, v in networks.items()
                                        if len(v["members"]) >= 2}}
    return out, notes


def _inherit(topo: dict[str, Any], node: Any, where: str, name: str) -> dict[str, Any]:
    """A node's settings after containerlab's inheritance: node, group, kind, defaults."""
    if not isinstance(node, dict):
        raise MinivmError(f"{where}: node {name} is not a mapping")
    defaults = topo.get("defaults") or {}
    group = (topo.get("groups") or {}).get(node.get("group") or defaults.get("group")) or {}
    kind_name = node.get("kind") or group.get("kind") or defaults.get("kind")
    kind = (topo.get("kinds") or {}).get(kind_name) or {}
    levels = [defaults, kind, group, node]  # least specific first
    out: dict[str, Any] = {}
    for level in levels:
        if not isinstance(level, dict):
            raise MinivmError(f"{where}: node {name}: a level it inherits is not a mapping")
        for key, value in level.items():
            if key in MERGED_MAPS:
                out[key] = {**out.get(key, {}), **dict(value or {})}
            elif key in JOINED_LISTS:
                out[key] = [*out.get(key, []), *[v for v in (value or [])
                                                 if v not in out.get(key, [])]]
            else:
                out[key] = value
    out["kind"] = kind_name
    return out


def _node(spec: dict[str, Any], where: str, name: str, notes: list[str]) -> dict[str, Any]:
    labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
    node: dict[str, Any] = {}
    if APPLIANCE_LABEL in labels:
        node["appliance"] = labels[APPLIANCE_LABEL]
    elif spec.get("image"):
        node["image"] = str(spec["image"])
    else:
        raise MinivmError(f"{where}: node {name} has no image")
    if spec.get("env"):
        node["env"] = {str(k): str(v) for k, v in spec["env"].items()}
    for key in JOINED_LISTS:
        if spec.get(key):
            node[key] = [str(v) for v in spec[key]]
    if spec.get("memory"):
        node["ram"] = _megabytes(str(spec["memory"]), where, name)
    if spec.get("cpu"):
        node["cpus"] = max(1, math.ceil(float(spec["cpu"])))
    if labels.get(ADAPTERS_LABEL, "").isdigit():
        node["adapters"] = int(labels[ADAPTERS_LABEL])
    for key in sorted(k for k in labels if not k.startswith("minivm.")):
        notes.append(f"node {name}: label {key}: not honoured")
    return node


def _megabytes(text: str, where: str, name: str) -> int:
    m = MEMORY.match(text.strip())
    if not m:
        raise MinivmError(f"{where}: node {name}: memory {text!r} is not a size such as 512mb")
    unit = (m[2] or "b").lower().rstrip("b").rstrip("i")
    factor = {"": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024}[unit]
    return max(1, int(float(m[1]) * factor))


def _ends(link: dict[str, Any], where: str) -> list[tuple[str, str]] | None:
    """The two (node, interface) ends of a link, or None for a kind minivm cannot run."""
    ends = link.get("endpoints")
    if link.get("type") not in (None, "veth") or not isinstance(ends, list) or len(ends) != 2:
        return None
    out = []
    for end in ends:
        if isinstance(end, dict) and "node" in end and "interface" in end:
            out.append((str(end["node"]), str(end["interface"])))
        elif isinstance(end, str) and (m := BRIEF.match(end)):
            out.append((m["node"], m["iface"]))
        else:
            raise MinivmError(f"{where}: link end {end!r} is not NODE:INTERFACE")
    return out


def _links(items: Any, nodes: dict[str, Any], networks: dict[str, Any], where: str,
           notes: list[str]) -> list[str]:
    if not isinstance(items, list):
        raise MinivmError(f"{where}: topology.links must be a list")
    links = []
    for i, link in enumerate(items):
        if not isinstance(link, dict):
            raise MinivmError(f"{where}: topology.links[{i}] is not a mapping")
        ends = _ends(link, where)
        if ends is None or any(n in SPECIAL_ENDS for n, _ in ends):
            notes.append(f"link {i + 1} ({link.get('type') or 'brief'}, "
                         f"{link.get('endpoints') or link.get('endpoint')}): not honoured")
            continue
        for key in sorted(set(link) - {"endpoints", "type", "ipv4"}):
            notes.append(f"link {i + 1}: {key}: not honoured")
        addresses = list(link.get("ipv4") or [])
        for (node, iface), address in zip(ends, addresses + ["", ""], strict=False):
            if node not in nodes and node not in networks:
                raise MinivmError(f"{where}: link {i + 1} names an unknown node {node!r}")
            if node in nodes and not ETH.match(iface):
                raise MinivmError(f"{where}: link {i + 1}: interface {node}:{iface} is not "
                                  "named ethN", hint="minivm names a node's adapters eth0, "
                                                     "eth1, ... (eth0: management)")
            if node in nodes and address:
                _address(nodes[node], iface, str(address), ends, networks)
        bridged = [(n, f) for n, f in ends if n in networks]
        if len(bridged) == 2:
            notes.append(f"link {i + 1}: between two bridges, not honoured")
        elif bridged:
            member = next(f"{n}:{f}" for n, f in ends if n not in networks)
            networks[bridged[0][0]]["members"].append(member)
        else:
            links.append(f"{ends[0][0]}:{ends[0][1]} -- {ends[1][0]}:{ends[1][1]}")
    for name, node in nodes.items():
        used = [int(m[1]) for link in links for end in link.split(" -- ")
                if end.startswith(f"{name}:") and (m := ETH.match(end.split(":", 1)[1]))]
        used += [int(m[1]) for net in networks.values() for end in net["members"]
                 if end.startswith(f"{name}:") and (m := ETH.match(end.split(":", 1)[1]))]
        node["adapters"] = max(node.get("adapters", 0), max(used, default=0) + 1)
    return links


def _address(node: dict[str, Any], iface: str, address: str,
             ends: list[tuple[str, str]], networks: dict[str, Any]) -> None:
    """A link end's ``ipv4``: the node's address on the bridge it joins, else a kernel
    argument for that interface."""
    bridge = next((n for n, _ in ends if n in networks), None)
    if bridge:
        node.setdefault("ip", {})[bridge] = address
    else:
        node["append"] = f"{node.get('append', '')} ip={address}:::::{iface}:off".strip()


def export(lab: Any, target: Path) -> dict[str, Any]:
    """A lab as containerlab topology data (paths relative to ``target``'s folder)."""
    def rel(path: str) -> str:
        p = Path(path) if Path(path).is_absolute() else lab.path.parent / path
        return os.path.relpath(p, target.resolve().parent) if p.exists() else path

    nodes: dict[str, Any] = {}
    for name, node in lab.nodes.items():
        spec: dict[str, Any] = {"kind": "linux"}
        labels = {ADAPTERS_LABEL: str(node.adapters)}
        if node.image:
            spec["image"] = rel(node.image)
        else:
            spec["image"] = node.appliance.name
            labels[APPLIANCE_LABEL] = rel(str(node.appliance.path))
        spec["labels"] = labels
        if node.env:
            spec["env"] = dict(node.env)
        for key in JOINED_LISTS:
            if getattr(node, key):
                spec[key] = list(getattr(node, key))
        nodes[name] = spec
    links: list[dict[str, Any]] = []
    for link in lab.links:
        if not isinstance(link.b, tuple):
            continue
        links.append({"endpoints": [f"{link.a[0]}:eth{link.a[1]}",
                                    f"{link.b[0]}:eth{link.b[1]}"]})
    for net in lab.networks:
        nodes[net.name] = {"kind": "bridge"}
        if net.subnet:
            nodes[net.name]["labels"] = {SUBNET_LABEL: str(net.subnet)}
        for port, (node_name, adapter) in enumerate(net.node_members(), start=1):
            entry: dict[str, Any] = {"endpoints": [f"{node_name}:eth{adapter}",
                                                   f"{net.name}:eth{port}"]}
            if (node_name, adapter) in net.addresses:
                entry["ipv4"] = [str(net.addresses[(node_name, adapter)]), ""]
            links.append(entry)
    topo: dict[str, Any] = {"nodes": nodes}
    if links:
        topo["links"] = links
    return {"name": re.sub(r"[^a-zA-Z0-9-._]", "-", lab.name) or "lab", "topology": topo}


def dump(data: dict[str, Any]) -> str:
    """YAML that containerlab reads the same (strings quoted where YAML 1.1 would not)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)

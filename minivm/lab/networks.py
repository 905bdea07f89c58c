"""Named L2 segments of a lab file (``networks:``), their addresses and the names they give.

::

    networks:
      lan: {subnet: 10.77.0.0/24, members: [a:eth0, b:eth0, c:eth0, udp:HOST:RPORT:LPORT]}
    nodes:
      c: {appliance: ..., ip: {lan: 10.77.0.50}}   # its own address on lan

A segment is a switch every member joins (locally a VDE switch, on a GNS3 server its built-in
Ethernet switch). With a ``subnet:`` each node member gets an address: the node's own ``ip:``
for that network, else the next free host address in member order. The addresses and the
names reach the guest as kernel arguments its init reads (``ip=ADDR/PREFIX:::::ethN:off`` per
interface, ``add_host=NAME:ADDR,...`` for every node it shares a network with), so the GNS3
runner passes the same arguments as the local one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from minivm.errors import MinivmError

NETWORK_KEYS = {"members", "subnet"}
# x86's COMMAND_LINE_SIZE: the kernel cuts a longer command line, the init would lose words.
KERNEL_COMMAND_LINE_MAX = 2047

Address = ipaddress.IPv4Interface


@dataclass(frozen=True)
class Network:
    """A segment: its member interfaces ((node, adapter) or an outside ``udp:`` end) and,
    with a subnet, the address of each node member."""

    name: str
    members: tuple[Any, ...]  # (node, adapter) | spec.External
    subnet: ipaddress.IPv4Network | None = None
    addresses: dict[tuple[str, int], Address] = field(default_factory=dict)

    def node_members(self) -> list[tuple[str, int]]:
        return [m for m in self.members if isinstance(m, tuple)]

    @property
    def text(self) -> str:
        return f"{self.name}: {', '.join(member_text(m) for m in self.members)}"


def member_text(member: Any) -> str:
    if isinstance(member, tuple):
        return f"{member[0]}:eth{member[1]}"
    return f"udp:{member.host}:{member.remote_port}:{member.local_port}"


def parse(data: Any, where: str, *, nodes: Iterable[str],
          member: Callable[[str, str], Any],
          own_ips: dict[str, dict[str, str]]) -> tuple[Network, ...]:
    """The ``networks:`` mapping. ``member(text, context)`` parses one member (a node
    interface or an outside ``udp:`` end) and refuses an interface used twice; ``own_ips``
    holds each node's ``ip:`` mapping (network name -> address)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MinivmError(f"{where}: 'networks' must be a mapping such as "
                          "lan: {subnet: 10.77.0.0/24, members: [a:eth0, b:eth0]}")
    node_names = set(nodes)
    out = []
    for name, spec in data.items():
        name = str(name)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
            raise MinivmError(f"{where}: network name {name!r} is not valid",
                              hint="letters, digits, '.', '_' and '-'")
        if name in node_names:
            raise MinivmError(f"{where}: network {name} has the name of a node",
                              hint="give the network another name")
        if not isinstance(spec, dict) or not isinstance(spec.get("members"), list):
            raise MinivmError(f"{where}: network {name} has no 'members' list",
                              hint="e.g. members: [a:eth0, b:eth0]")
        if extra := set(spec) - NETWORK_KEYS:
            raise MinivmError(f"{where}: network {name}: unknown key(s) "
                              f"{', '.join(sorted(map(str, extra)))}")
        members = tuple(member(" ".join(str(m).split()), f"network {name}")
                        for m in spec["members"])
        if len(members) < 2:
            raise MinivmError(f"{where}: network {name} has {len(members)} member(s)",
                              hint="a segment joins two or more interfaces")
        joined = [m[0] for m in members if isinstance(m, tuple)]
        if twice := sorted({n for n in joined if joined.count(n) > 1}):
            raise MinivmError(f"{where}: node {twice[0]} joins network {name} twice",
                              hint="one interface per node and network")
        subnet = _subnet(spec.get("subnet"), where, name)
        net = Network(name=name, members=members, subnet=subnet)
        out.append(Network(name=name, members=members, subnet=subnet,
                           addresses=_addresses(net, own_ips, where)))
    for node, ips in own_ips.items():
        for net_name in ips:
            if not any(n.name == net_name and node in {m[0] for m in n.node_members()}
                       for n in out):
                raise MinivmError(f"{where}: node {node}: ip for {net_name!r}, a network it "
                                  "is not a member of",
                                  hint="add the node's interface to that network's members")
    return tuple(out)


def _subnet(value: Any, where: str, name: str) -> ipaddress.IPv4Network | None:
    if value is None:
        return None
    try:
        subnet = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as e:
        raise MinivmError(f"{where}: network {name}: subnet {value!r} is not an IPv4 "
                          f"network ({e})", hint="e.g. 10.77.0.0/24") from e
    if subnet.prefixlen > 30:
        raise MinivmError(f"{where}: network {name}: subnet {subnet} has no room for hosts",
                          hint="use a /30 or larger")
    return subnet


def _addresses(net: Network, own_ips: dict[str, dict[str, str]],
               where: str) -> dict[tuple[str, int], Address]:
    """Each node member's address: its ``ip:`` for this network, else the next free host."""
    chosen: dict[tuple[str, int], Address] = {}
    for node, adapter in net.node_members():
        text = own_ips.get(node, {}).get(net.name)
        if text is None:
            continue
        try:
            given = ipaddress.IPv4Interface(text if "/" in text or net.subnet is None
                                            else f"{text}/{net.subnet.prefixlen}")
        except ValueError as e:
            raise MinivmError(f"{where}: node {node}: ip {text!r} for {net.name} is not an "
                              "IPv4 address") from e
        if net.subnet is None and "/" not in text:
            raise MinivmError(f"{where}: node {node}: ip {text!r} for {net.name} needs a "
                              "prefix length (the network has no subnet)",
                              hint="e.g. 10.88.0.1/24")
        if net.subnet is not None and (given.network != net.subnet
                                       or given.ip in (net.subnet.network_address,
                                                       net.subnet.broadcast_address)):
            raise MinivmError(f"{where}: node {node}: ip {text} is not a host address of "
                              f"{net.name}'s subnet {net.subnet}")
        if given.ip in {a.ip for a in chosen.values()}:
            raise MinivmError(f"{where}: network {net.name}: address {given.ip} is given "
                              "twice")
        chosen[(node, adapter)] = given
    if net.subnet is None:
        return chosen
    taken = {a.ip for a in chosen.values()}
    free = (h for h in net.subnet.hosts() if h not in taken)
    for node, adapter in net.node_members():
        if (node, adapter) in chosen:
            continue
        host = next(free, None)
        if host is None:
            raise MinivmError(f"{where}: network {net.name}: subnet {net.subnet} has no "
                              f"address left for {node}", hint="use a larger subnet")
        chosen[(node, adapter)] = ipaddress.IPv4Interface(f"{host}/{net.subnet.prefixlen}")
    return {m: chosen[m] for m in net.node_members() if m in chosen}


def addresses_of(networks: Iterable[Network], node: str) -> dict[str, str]:
    """A node's addresses: ``ethN`` -> ``ADDR/PREFIX``."""
    return {f"eth{a}": str(addr) for net in networks for (n, a), addr in net.addresses.items()
            if n == node}


def hosts_of(networks: Iterable[Network], node: str) -> dict[str, str]:
    """The names a node resolves: every other node on a network it shares, at its address
    on the first such network (in the order of the lab file)."""
    names: dict[str, str] = {}
    for net in networks:
        if node not in {n for n, _ in net.addresses}:
            continue
        for (peer, _), addr in net.addresses.items():
            if peer != node:
                names.setdefault(peer, str(addr.ip))
    return names


def kernel_args(networks: Iterable[Network], node: str) -> str:
    """The kernel arguments that give a node its segment addresses and its peers' names."""
    networks = list(networks)
    words = [f"ip={addr}:::::{dev}:off"
             for dev, addr in addresses_of(networks, node).items()]
    names = hosts_of(networks, node)
    if names:
        words.append("add_host=" + ",".join(f"{peer}:{ip}" for peer, ip in names.items()))
    return " ".join(words)

"""Link ports: UDP tunnels between nodes, and ports held until QEMU shares them."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator

from minivm.errors import MinivmError
from minivm.lab.networks import member_text
from minivm.lab.spec import LOOPBACK, External, Lab, endpoint_key
from minivm.vm import qemu


def hold_port(port: int = 0, *, kind: int = socket.SOCK_DGRAM, what: str = "",
              host: str = LOOPBACK) -> socket.socket:
    """A bound socket holding a port of ``host`` (0: a free one) until QEMU shares it.

    A fixed port is first bound without SO_REUSEADDR, so a port anyone holds is refused.
    """
    if port:
        probe = socket.socket(socket.AF_INET, kind)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise MinivmError(f"port {port} ({what or 'UDP'}) on {host} is taken",
                              hint="free it or pick another port") from e
        finally:
            probe.close()
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise MinivmError(f"port {port} ({what or 'UDP'}) on {host} is taken") from e
    return sock


def local_address(host: str) -> str:
    """Where the lab's end of a tunnel to an outside ``host`` listens: 127.0.0.1 when
    ``host`` is a loopback address, else the address this machine sends from to reach
    ``host`` (the kernel's route; no packet is sent), so that ``host`` can send back."""
    try:
        address = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
    except (OSError, IndexError) as e:
        raise MinivmError(f"outside end udp:{host}: no IPv4 address for {host}") from e
    if ipaddress.IPv4Address(address).is_loopback:
        return LOOPBACK
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))  # UDP: only picks the route and source address
        except OSError as e:
            raise MinivmError(f"outside end udp:{host}: no route to {address} "
                              f"({e.strerror})") from e
        return str(probe.getsockname()[0])


def outside_ends(lab: Lab) -> dict[str, External]:
    """The outside end of each link that has one, by its node end's key."""
    return {endpoint_key(*link.a): link.b for link in lab.links
            if isinstance(link.b, External)}


def tunnels(lab: Lab, ports: dict[str, int], name: str, *,
            bind: Callable[[str], str] = local_address) -> list[qemu.UdpTunnel | None]:
    """The UDP tunnel of each adapter of ``name`` (None when unconnected); an adapter linked
    to an outside end listens on ``bind(its host)``."""
    out: list[qemu.UdpTunnel | None] = [None] * lab.nodes[name].adapters
    for link in lab.links:
        for here, there in ((link.a, link.b), (link.b, link.a)):
            if isinstance(here, External) or here[0] != name:
                continue
            local = ports[endpoint_key(*here)]
            if isinstance(there, External):
                out[here[1]] = qemu.UdpTunnel(local, there.host, there.remote_port,
                                              bind(there.host))
            else:
                out[here[1]] = qemu.UdpTunnel(local, LOOPBACK, ports[endpoint_key(*there)])
    for net in lab.networks:
        for node, adapter in net.node_members():
            if node == name:  # the other end is the member's plug on the network's switch
                out[adapter] = qemu.UdpTunnel(ports[endpoint_key(node, adapter)], LOOPBACK,
                                              ports[plug_key(net.name, (node, adapter))])
    return out


def plug_key(network: str, member: tuple[str, int] | External) -> str:
    """The port key of a network member's plug (its UDP port on the switch side)."""
    return f"{network}/{member_text(member)}"


def endpoints(lab: Lab) -> Iterator[tuple[str, int, int]]:
    """(node, adapter, fixed local port or 0) of every connected adapter."""
    for link in lab.links:
        fixed = link.b.local_port if isinstance(link.b, External) else 0
        yield link.a[0], link.a[1], fixed
        if not isinstance(link.b, External):
            yield link.b[0], link.b[1], 0
    for net in lab.networks:
        for node, adapter in net.node_members():
            yield node, adapter, 0


def tunnels_or_none(lab: Lab, ports: dict[str, int], name: str) -> list[qemu.UdpTunnel | None]:
    """The tunnels' ports, for status (no address looked up)."""
    try:
        return tunnels(lab, ports, name, bind=lambda _host: LOOPBACK)
    except KeyError:  # not started: no ports yet
        return [None] * lab.nodes[name].adapters

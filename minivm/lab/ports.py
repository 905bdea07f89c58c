"""Link ports: UDP tunnels between nodes, and ports held until QEMU shares them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from minivm.errors import MinivmError
from minivm.lab.networks import member_text
from minivm.lab.spec import LOOPBACK, External, Lab, endpoint_key
from minivm.vm import qemu


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


def tunnels(lab: Lab, ports: dict[str, int], name: str) -> list[qemu.UdpTunnel | None]:
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
    try:
        return tunnels(lab, ports, name)
    except KeyError:  # not started: no ports yet
        return [None] * lab.nodes[name].adapters

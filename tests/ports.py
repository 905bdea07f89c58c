"""Free ports for the tests' servers and links (UDP ones held by the product's `hold_port`)."""

from __future__ import annotations

import socket

from minivm.lab.ports import hold_port


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``host`` now (bound, read, released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_ports(count: int) -> list[int]:
    """``count`` distinct free UDP ports on 127.0.0.1 (all held until every one is found)."""
    held = [hold_port() for _ in range(count)]
    try:
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()

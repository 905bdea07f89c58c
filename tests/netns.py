"""Another host for the tests: a network namespace reached over a veth pair, with addresses
that are not loopback ones (the tests run as root). Its UDP ends run as small Python programs
inside the namespace (``ip netns exec``)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# frames to a UDP port until one holds MARKER: prints "ready" once bound, "got" on it
RECEIVE = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[4]))
print("ready", flush=True)
while sys.argv[3].encode() not in s.recv(65536):
    pass
print("got", flush=True)
"""
SEND = """\
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes.fromhex(sys.argv[3]),
                                                        (sys.argv[1], int(sys.argv[2])))
"""


def frame(marker: str) -> bytes:
    """An Ethernet broadcast frame (a local experimental EtherType) carrying ``marker``."""
    return b"\xff" * 6 + b"\x02\x00\x5e\x10\x00\x01" + b"\x88\xb5" + marker.encode().ljust(46)


@dataclass(frozen=True)
class Peer:
    """The namespace ``name``: it is at ``address``, this machine at ``here``."""

    name: str
    address: str
    here: str

    def receive(self, port: int, marker: str, timeout: float = 60) -> subprocess.Popen[str]:
        """A receiver on ``address:port`` in the namespace, bound when this returns; it exits
        0 once a datagram holding ``marker`` came."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, "-c",
                                 RECEIVE, self.address, str(port), marker, str(timeout)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        """One datagram from the namespace."""
        subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", SEND, to[0],
                        str(to[1]), data.hex()], check=True, timeout=30)


@contextmanager
def peer() -> Iterator[Peer]:
    """A namespace on a /30 of 198.18.0.0/15 (the benchmarking range) picked by the process
    id, so that parallel runs do not meet; removed (with its veth pair) afterwards."""
    pid = os.getpid()
    name, veth = f"minivm-peer-{pid}", f"mvpeer{pid}"[:15]
    net = ipaddress.IPv4Network("198.18.0.0/15")
    here, there = (str(net.network_address + (pid % 32768) * 4 + i) for i in (1, 2))
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name],
                    ["addr", "add", f"{here}/30", "dev", veth],
                    ["link", "set", veth, "up"],
                    ["-n", name, "addr", "add", f"{there}/30", "dev", "eth0"],
                    ["-n", name, "link", "set", "eth0", "up"]):
            subprocess.run(["ip", *cmd], check=True)
        yield Peer(name, there, here)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)

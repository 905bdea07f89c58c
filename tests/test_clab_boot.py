"""A containerlab topology run for real: three linux nodes from a local context, two links,
env, binds and exec as containerlab gives them (MiniVMs under TCG)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from minivm.kit import kernel
from minivm.ui import QUIET
from tests.cli import cli
from tests.imagefactory import alpine_lookalike
from tests.labs import sh

TOPOLOGY = """\
name: trio
mgmt:
  network: trio-mgmt
topology:
  defaults:
    kind: linux
    image: ./node
    env: {SITE: lab}
  nodes:
    client:
      binds: ["./files/motd:/etc/motd-lab:ro"]
      exec: ["ip addr add 192.0.2.1/30 dev eth1",
             "ip route add 198.51.100.0/30 via 192.0.2.2"]
    router:
      env: {ROLE: "the router"}
      exec: ["sysctl -w net.ipv4.ip_forward=1", "ip addr add 192.0.2.2/30 dev eth1",
             "ip addr add 198.51.100.1/30 dev eth2"]
    server:
      exec: ["ip addr add 198.51.100.2/30 dev eth1",
             "ip route add 192.0.2.0/30 via 198.51.100.1"]
  links:
    - endpoints: ["client:eth1", "router:eth1"]
    - type: veth
      endpoints:
        - {node: router, interface: eth2}
        - {node: server, interface: eth1}
"""


@pytest.mark.engine
@pytest.mark.boot
def test_three_linux_nodes_two_links(tmp_path: Path) -> None:
    kernel.current() or kernel.build(reporter=QUIET)
    shutil.copytree(alpine_lookalike(tmp_path / "src"), tmp_path / "node")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "motd").write_text("bound by the topology\n")
    path = tmp_path / "trio.clab.yml"
    path.write_text(TOPOLOGY)
    up = cli("lab", "up", path, "--wait", r"Welcome to .*a MiniVM", "--json", timeout=900)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    assert info["images"] == {"node": "built"}
    assert info["exec_codes"] == {"client": [0, 0], "router": [0, 0, 0], "server": [0, 0]}
    assert "trio.clab.yml: mgmt: not honoured" in up.stderr
    try:
        assert " 0% packet loss" in sh(path, "client", "ping -c 2 -W 5 192.0.2.2")
        assert " 0% packet loss" in sh(path, "router", "ping -c 2 -W 5 198.51.100.2")
        routed = sh(path, "client", "ping -c 2 -W 5 198.51.100.2")
        assert "ttl=63" in routed  # through the router, across both links
        assert sh(path, "client", "cat /etc/motd-lab") == "bound by the topology\n"
        assert sh(path, "router", 'echo "$SITE/$ROLE"') == "lab/the router\n"
        assert "eth1" in sh(path, "server", "ip -o addr show dev eth1")
    finally:
        down = cli("lab", "down", path)
    assert down.returncode == 0, down.stderr

"""containerlab topologies: read into the lab's own form, notes for what is not honoured,
errors in one line, and export then import giving the same lab (no VM; see test_clab_boot.py
for one that runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from minivm import lab
from minivm.errors import MinivmError
from minivm.lab import clab
from tests.fakeproject import fake_lab

TRIO = """\
name: trio
mgmt:
  network: trio-mgmt
  ipv4-subnet: 10.99.0.0/24
topology:
  defaults:
    kind: linux
    image: alpine:3.20
    env: {SITE: lab}
    exec: ["echo defaults-first"]
  nodes:
    client:
      mgmt-ipv4: 10.99.0.11
      env: {ROLE: client, GREETING: "hello there"}
      exec: ["ip addr add 192.0.2.1/30 dev eth1"]
      binds: ["./files:/srv/files:ro"]
    router:
      memory: 512mb
      cpu: 1.5
      exec: ["sysctl -w net.ipv4.ip_forward=1"]
    server:
      image: nginx:alpine
      ports: ["8080:80"]
  links:
    - endpoints: ["client:eth1", "router:eth1"]
    - type: veth
      mtu: 1500
      endpoints:
        - {node: router, interface: eth2}
        - {node: server, interface: eth1}
    - endpoints: ["server:eth2", "host:srv-eth2"]
"""


def test_trio_becomes_a_lab_with_notes() -> None:
    data, notes = clab.to_lab(yaml.safe_load(TRIO), "trio.clab.yml")
    client, router, server = (data["nodes"][n] for n in ("client", "router", "server"))
    assert client["image"] == "alpine:3.20" and server["image"] == "nginx:alpine"
    assert client["env"] == {"SITE": "lab", "ROLE": "client", "GREETING": "hello there"}
    assert client["exec"] == ["echo defaults-first", "ip addr add 192.0.2.1/30 dev eth1"]
    assert client["binds"] == ["./files:/srv/files:ro"]
    assert router["ram"] == 512 and router["cpus"] == 2 and router["adapters"] == 3
    assert client["adapters"] == 2 and server["adapters"] == 2  # the host link is left out
    assert data["links"] == ["client:eth1 -- router:eth1", "router:eth2 -- server:eth1"]
    assert "mgmt: not honoured (eth0, the management NIC, stays unconnected)" in notes
    assert "node client: mgmt-ipv4: not honoured" in notes
    assert "node server: ports: not honoured" in notes
    assert "link 2: mtu: not honoured" in notes
    assert any(n.startswith("link 3 (brief") and "host:srv-eth2" in n for n in notes)


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\ntopology:\n  nodes:\n    r1: {kind: nokia_srlinux, image: srl}\n",
     "node r1: kind 'nokia_srlinux' is not supported"),
    ("name: x\ntopology:\n  nodes:\n    r1: {kind: linux}\n", "node r1 has no image"),
    ("name: x\ntopology:\n  nodes:\n    r1: {kind: linux, image: a}\n  links:\n"
     "    - endpoints: [r1:eth1, r9:eth1]\n", "unknown node 'r9'"),
    ("name: x\ntopology:\n  nodes:\n    r1: {kind: linux, image: a}\n    r2: {kind: linux, "
     "image: a}\n  links:\n    - endpoints: [r1:e1-1, r2:eth1]\n", "r1:e1-1 is not named ethN"),
    ("name: x\n", "no 'topology' mapping"),
])
def test_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.clab.yml"
    path.write_text(text)
    with pytest.raises(MinivmError, match=message) as e:
        lab.load(path)
    assert "\n" not in str(e.value)


ROUND = """\
nodes:
  a: {appliance: app/t.gns3a, env: {ROLE: edge}, exec: ["ip link"], binds: ["./f:/f"]}
  b: {appliance: app/t.gns3a, ip: {lan: 10.77.0.9}}
  c: {appliance: app/t.gns3a}
links:
  - a:eth1 -- b:eth1
networks:
  lan: {subnet: 10.77.0.0/24, members: [a:eth0, b:eth0, c:eth0]}
"""


def same(one: lab.Lab, two: lab.Lab) -> None:
    assert one.nodes.keys() == two.nodes.keys()
    for name, node in one.nodes.items():
        other = two.nodes[name]
        for field in ("appliance", "append", "adapters", "env", "exec", "binds", "ram", "cpus"):
            assert getattr(node, field) == getattr(other, field), (name, field)
    assert [(k.a, k.b) for k in one.links] == [(k.a, k.b) for k in two.links]
    assert [(n.name, n.subnet, n.members, n.addresses) for n in one.networks] == \
           [(n.name, n.subnet, n.members, n.addresses) for n in two.networks]


def test_export_then_import_gives_the_same_lab(tmp_path: Path) -> None:
    first = lab.load(fake_lab(tmp_path, ROUND))
    out = tmp_path / "sub" / "round.clab.yml"
    out.parent.mkdir()
    out.write_text(clab.dump(clab.export(first, out)))
    data = yaml.safe_load(out.read_text())
    assert data["name"] == "lab" and data["topology"]["nodes"]["lan"]["kind"] == "bridge"
    assert data["topology"]["nodes"]["a"]["labels"] == {"minivm.adapters": "2",
                                                         "minivm.appliance": "../app/t.gns3a"}
    second = lab.load(out)
    same(first, second)
    again = tmp_path / "sub" / "again.clab.yml"
    again.write_text(clab.dump(clab.export(second, again)))
    assert again.read_text() == out.read_text()


def test_a_minivm_lab_file_is_not_taken_for_a_topology(tmp_path: Path) -> None:
    assert not clab.is_clab(tmp_path / "lab.yaml", {"nodes": {}})
    assert clab.is_clab(tmp_path / "lab.yaml", {"name": "x", "topology": {}})
    assert clab.is_clab(tmp_path / "x.clab.yml", None)

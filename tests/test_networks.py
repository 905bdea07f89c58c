"""The lab file's ``networks:``: segments, their addresses, the names each node resolves, and
the tunnels each member gets (no VM booted here; see test_segments.py for real ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from minivm import lab
from minivm.errors import MinivmError
from minivm.lab import networks
from minivm.lab import ports as lab_ports
from minivm.vm import qemu
from tests.fakeproject import fake_lab

NODES = """\
nodes:
  a: {appliance: app/t.gns3a}
  b: {appliance: app/t.gns3a}
  c: {appliance: app/t.gns3a, ip: {lan: 10.77.0.50}}
"""


def test_subnet_gives_addresses_in_order_and_own_ip(tmp_path: Path) -> None:
    lab_ = lab.load(fake_lab(tmp_path, NODES + """\
networks:
  lan: {subnet: 10.77.0.0/24, members: [c:eth0, a:eth0, b:eth0]}
  back: {subnet: 192.168.5.0/29, members: [b:eth1, a:eth1]}
links:
  - c:eth1 -- udp:127.0.0.1:40001:40000
"""))
    lan, back = lab_.networks
    assert lan.addresses == {("c", 0): networks.Address("10.77.0.50/24"),
                             ("a", 0): networks.Address("10.77.0.1/24"),
                             ("b", 0): networks.Address("10.77.0.2/24")}
    assert back.addresses[("b", 1)] == networks.Address("192.168.5.1/29")
    assert networks.addresses_of(lab_.networks, "b") == {"eth0": "10.77.0.2/24",
                                                        "eth1": "192.168.5.1/29"}
    # b resolves a at its address on lan, the first network they share
    assert networks.hosts_of(lab_.networks, "b") == {"c": "10.77.0.50", "a": "10.77.0.1"}
    assert networks.hosts_of(lab_.networks, "c") == {"a": "10.77.0.1", "b": "10.77.0.2"}
    words = lab_.nodes["b"].append.split()
    assert words[0] == "hostname=b"
    assert "ip=10.77.0.2/24:::::eth0:off" in words and "ip=192.168.5.1/29:::::eth1:off" in words
    assert "add_host=c:10.77.0.50,a:10.77.0.1" in words


def test_own_append_comes_last_so_it_wins(tmp_path: Path) -> None:
    lab_ = lab.load(fake_lab(tmp_path, """\
nodes:
  a: {appliance: app/t.gns3a, append: "ip=10.9.9.9/24:::::eth0:off hostname=alpha"}
  b: {appliance: app/t.gns3a}
networks:
  lan: {subnet: 10.77.0.0/24, members: [a:eth0, b:eth0]}
"""))
    words = lab_.nodes["a"].append.split()
    assert words.index("ip=10.77.0.1/24:::::eth0:off") < words.index("ip=10.9.9.9/24:::::eth0:off")
    assert "hostname=a" not in words and "hostname=alpha" in words


def test_network_without_subnet_has_no_addresses(tmp_path: Path) -> None:
    lab_ = lab.load(fake_lab(tmp_path, NODES.replace(", ip: {lan: 10.77.0.50}", "") + """\
networks:
  lan: {members: [a:eth0, b:eth0, c:eth0, "udp:127.0.0.1:40001:40000"]}
"""))
    (lan,) = lab_.networks
    assert lan.addresses == {} and lab_.nodes["a"].append == "hostname=a"
    assert lan.members[-1] == lab.External("127.0.0.1", 40001, 40000)
    ports = {"a:eth0": 1000, "lan/a:eth0": 1500}
    assert lab_ports.tunnels(lab_, ports, "a") == [qemu.UdpTunnel(1000, "127.0.0.1", 1500), None]
    assert ("a", 0, 0) in set(lab_ports.endpoints(lab_))


@pytest.mark.parametrize(("text", "message"), [
    ("networks: {lan: {members: [a:eth0]}}", "network lan has 1 member"),
    ("networks: {lan: {members: [a:eth0, a:eth1]}}", "node a joins network lan twice"),
    ("networks: {lan: {members: [a:eth0, b:eth0]}}\nlinks: ['a:eth0 -- b:eth1']",
     "adapter a:eth0 is used twice"),
    ("networks: {lan: {members: [a:eth0, z:eth0]}}", "unknown node 'z'"),
    ("networks: {lan: {members: [a:eth0, b:eth5]}}", "b has no adapter eth5"),
    ("networks: {a: {members: [b:eth0, c:eth0]}}", "network a has the name of a node"),
    ("networks: {lan: {subnet: 10.77.0.1/24, members: [a:eth0, b:eth0]}}",
     "subnet '10.77.0.1/24' is not an IPv4 network"),
    ("networks: {lan: {subnet: 10.77.0.0/31, members: [a:eth0, b:eth0]}}", "no room"),
    ("networks: {lan: {subnet: 10.77.0.48/30, members: [a:eth0, b:eth0, c:eth0]}}",
     "no address left for b"),
    ("networks: {lan: {subnet: 10.78.0.0/24, members: [a:eth0, c:eth0]}}",
     "ip 10.77.0.50 is not a host address of lan's subnet"),
    ("networks: {lan: {members: [a:eth0, c:eth0]}}", "needs a prefix length"),
    ("networks: {lan: {members: [a:eth0, b:eth0]}}", "ip for 'lan', a network it is not"),
    ("networks: {lan: {subnet: 10.77.0.0/24, members: [a:eth0, b:eth0], vlan: 3}}",
     "unknown key"),
    ("networks: [lan]", "'networks' must be a mapping"),
    ("networks: {lan: {members: [a:eth0, 'udp:h:1:2', 'udp:h:3:2']}}", "used twice"),
])
def test_network_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MinivmError, match=message) as e:
        lab.load(fake_lab(tmp_path, NODES + text + "\n"))
    assert "\n" not in str(e.value)


def test_too_many_names_for_the_kernel_command_line(tmp_path: Path) -> None:
    names = [f"node-with-a-rather-long-name-{i:03d}" for i in range(60)]
    text = "nodes:\n" + "".join(f"  {n}: {{appliance: app/t.gns3a}}\n" for n in names)
    text += ("networks:\n  lan: {subnet: 10.0.0.0/16, members: [" +
             ", ".join(f"{n}:eth0" for n in names) + "]}\n")
    with pytest.raises(MinivmError, match=r"more than the .* the kernel command line has left"):
        lab.load(fake_lab(tmp_path, text))

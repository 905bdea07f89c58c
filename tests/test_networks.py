"""The lab file's ``networks:``: segments, their addresses, the names each node resolves, the
tunnels each member gets, and outside members on another host (no VM booted here; see
test_segments.py for real ones)."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from minivm import lab
from minivm.errors import MinivmError
from minivm.lab import networks, switch
from minivm.lab import ports as lab_ports
from minivm.vm import qemu
from tests import netns
from tests.fakeproject import fake_lab
from tests.ports import free_udp_ports

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


def test_outside_end_listens_where_its_host_reaches_this_machine(tmp_path: Path) -> None:
    """127.0.0.1 for a loopback host; else the source address of the kernel's route to the
    host (here a documentation address: the default route's, or no route at all)."""
    for host in ("127.0.0.1", "127.0.0.2", "localhost"):
        assert lab_ports.local_address(host) == "127.0.0.1"
    route = subprocess.run(["ip", "-4", "route", "get", "192.0.2.7"], capture_output=True,
                           text=True)
    if route.returncode == 0:
        src = re.search(r"\bsrc (\S+)", route.stdout)
        assert src and lab_ports.local_address("192.0.2.7") == src[1]
    else:
        with pytest.raises(MinivmError, match=r"no route to 192\.0\.2\.7"):
            lab_ports.local_address("192.0.2.7")
    # a node linked to an outside end listens on that address (QEMU's localaddr=)
    lab_ = lab.load(fake_lab(tmp_path, NODES.replace(", ip: {lan: 10.77.0.50}", "")
                             + "links: ['a:eth1 -- udp:192.0.2.7:40001:40000']\n"))
    tunnels = lab_ports.tunnels(lab_, {"a:eth1": 40000}, "a",
                                bind={"192.0.2.7": "198.51.100.1"}.__getitem__)
    assert tunnels == [None, qemu.UdpTunnel(40000, "192.0.2.7", 40001, "198.51.100.1")]
    assert lab_ports.outside_ends(lab_) == {"a:eth1": lab.External("192.0.2.7", 40001, 40000)}


def test_frames_cross_to_an_outside_member_on_another_host(tmp_path: Path,
                                                           peer: netns.Peer) -> None:
    """A segment with an outside member on another host (``udp:PEER:...``) and one on this
    host: the first's plug listens on the address the peer reaches this machine at (not
    127.0.0.1), and a frame crosses the switch each way (real vde_switch and plugs)."""
    rport, lport, lo_remote, lo_local = free_udp_ports(4)
    far = lab.External(peer.address, rport, lport)
    near = lab.External("127.0.0.1", lo_remote, lo_local)
    net = networks.Network("lan", (far, near))
    assert lab_ports.local_address(peer.address) == peer.here
    rec = switch.start_switch(net, tmp_path / "net-lan")
    try:
        for m in (far, near):
            switch.start_plug(net, rec, m, local_port=m.local_port, folder=tmp_path / "net-lan",
                              local_host=lab_ports.local_address(m.host),
                              remote=(m.host, m.remote_port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as here:
            here.bind(("127.0.0.1", lo_remote))
            here.settimeout(30)
            peer.send(netns.frame("from the peer"), (peer.here, lport))
            while b"from the peer" not in here.recv(65536):
                pass
            there = peer.receive(rport, "to the peer")
            here.sendto(netns.frame("to the peer"), ("127.0.0.1", lo_local))
            assert there.wait(60) == 0
    finally:
        switch.stop(rec)


def test_switch_records_round_trip_through_the_state_file(tmp_path: Path) -> None:
    from minivm.lab.state import State, SwitchRecord, read_state, write_state

    rec = SwitchRecord(pid=4242, sock=str(tmp_path / "net-lan" / "sw"), plugs={"a:eth0": 4243})
    write_state(tmp_path, State(lab="lab.yaml", networks={"lan": rec}))
    assert read_state(tmp_path).networks == {"lan": rec}
    assert not switch.alive(rec)  # no such processes: not running, and stop leaves them be
    switch.stop(rec)
    assert not switch.alive(None) and not switch.alive(SwitchRecord.from_json({}))

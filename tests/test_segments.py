"""Lab networks for real: MiniVMs under TCG on VDE switches (``networks:`` in the lab file).

The appliance is alpine-minivm's look-alike (busybox userland), which ships its own
/etc/hosts: the init keeps its entries and adds the lab's names in a marked block. Three VMs
at most run at once (2 shared cores).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from minivm.kit import kernel
from minivm.lab import state as lab_state
from minivm.ui import QUIET
from minivm.vm import vmctl
from tests import netns
from tests.cli import cli
from tests.imagefactory import alpine_lookalike
from tests.labs import sh
from tests.ports import free_udp_ports

REPO = Path(__file__).resolve().parent.parent
READY = r"Welcome to .*a MiniVM"
MCAST = REPO / "tests" / "mcast" / "mcast.c"


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpine-minivm's look-alike (busybox userland, its own /etc/hosts) with two adapters and
    tests/mcast (``mcast``), as a build context for ``image:`` nodes."""
    kernel.current() or kernel.build(reporter=QUIET)
    folder = tmp_path_factory.mktemp("segctx") / "segnode"
    shutil.copytree(alpine_lookalike(folder.parent / "src"), folder)
    # a multicast listener and sender (static: the busybox userland has no libc to link)
    subprocess.run(["gcc", "-static", "-Os", "-o", str(folder / "mcast"), str(MCAST)],
                   check=True)
    dockerfile = folder / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "COPY mcast /bin/mcast\n"
                          "LABEL minivm.appliance.adapters=2\n")
    return folder


def write_lab(folder: Path, spec: dict[str, object]) -> Path:
    path = folder / "lab.yaml"
    path.write_text(json.dumps({"accel": "tcg", **spec}))  # JSON is YAML
    return path


@pytest.mark.engine
@pytest.mark.boot
def test_three_nodes_on_a_segment_names_dhcp_multicast(context: Path, tmp_path: Path,
                                                       peer: netns.Peer) -> None:
    """a, b and c on lan with an outside member on another host (``peer``, a network
    namespace), and on dhcpnet."""
    rport, lport = free_udp_ports(2)
    outside = f"udp:{peer.address}:{rport}:{lport}"
    path = write_lab(tmp_path, {
        "nodes": {"a": {"image": str(context), "ip": {"dhcpnet": "10.88.0.1/24"}},
                  "b": {"image": str(context)}, "c": {"image": str(context)}},
        "networks": {"lan": {"subnet": "10.77.0.0/24",
                             "members": ["a:eth0", "b:eth0", "c:eth0", outside]},
                     "dhcpnet": {"members": ["a:eth1", "b:eth1", "c:eth1"]}}})
    up = cli("lab", "up", path, "--wait", READY, "--json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    assert info["nodes"]["c"]["addresses"] == {"eth0": "10.77.0.3/24"}
    assert info["networks"]["lan"]["status"] == "running"
    status = cli("lab", "status", path)
    assert re.search(r"^a .*eth0 10\.77\.0\.1/24 eth1 10\.88\.0\.1/24", status.stdout, re.M)
    assert f"network lan (running 10.77.0.0/24): a:eth0, b:eth0, c:eth0, {outside}" \
        in status.stdout
    switches = lab_state.read_state(tmp_path / "lab.state").networks
    try:
        for here, there in (("a", "b"), ("a", "c"), ("b", "c"), ("c", "a")):
            out = sh(path, here, f"ping -c 2 -W 5 {there}")
            assert f"({info['nodes'][there]['addresses']['eth0'].split('/')[0]})" in out
        hosts = sh(path, "b", "cat /etc/hosts")
        assert "127.0.1.1\talpine-minivm" in hosts  # the image's own entries are kept
        assert "10.77.0.1\ta\n" in hosts and "10.77.0.3\tc\n" in hosts

        # DHCP: a serves on dhcpnet, b and c ask (their eth1 has no address until then)
        sh(path, "a", "printf 'start 10.88.0.100\\nend 10.88.0.110\\ninterface eth1\\n"
                      "lease_file /tmp/leases\\n' > /tmp/udhcpd.conf && touch /tmp/leases && "
                      "/.minivm/bin/udhcpd /tmp/udhcpd.conf")
        for node in ("b", "c"):
            sh(path, node, "/.minivm/bin/udhcpc -i eth1 -n -q -t 10 -T 2 "
                           "-s /.minivm/udhcpc.script", timeout=120)
            assert re.search(r"inet 10\.88\.0\.1(0[0-9]|10)/24",
                             sh(path, node, "ip -4 addr show dev eth1"))

        # multicast: b and c join 239.1.2.3 on lan (mcast listen returns once joined and
        # waits in the background), a sends one datagram there: the switch floods it to both
        # and to the outside member, whose plug the peer reaches at this machine's address
        for node in ("b", "c"):
            sh(path, node, "mcast listen 239.1.2.3 5004 eth0 > /tmp/mcast.out 2>&1")
        outside_end = peer.receive(rport, "hello-lan")
        for _ in range(10):  # UDP all the way: a datagram lost on the way out is sent again
            sh(path, "a", "mcast send 239.1.2.3 5004 eth0 hello-lan")
            with contextlib.suppress(subprocess.TimeoutExpired):
                outside_end.wait(3)
            if outside_end.returncode is not None:
                break
        for node in ("b", "c"):
            got = sh(path, node, "for i in $(seq 100); do [ -s /tmp/mcast.out ] && break; "
                                 "sleep 0.1; done; cat /tmp/mcast.out")
            assert got == "hello-lan\n", f"{node}: {got!r}"
        assert outside_end.wait(30) == 0

        # a switch killed hard: status says so, the next up starts it again on the same
        # ports, and the running nodes reach each other through it again
        os.kill(switches["lan"].pid, signal.SIGKILL)
        assert vmctl.wait_exit(switches["lan"].pid, 10)
        assert "network lan (stopped" in cli("lab", "status", path).stdout
        again = cli("lab", "up", path)
        assert again.returncode == 0, again.stderr
        assert "network lan: its switch is gone" in again.stderr
        assert "(10.77.0.3)" in sh(path, "a", "ping -c 2 -W 5 c")
        switches = lab_state.read_state(tmp_path / "lab.state").networks
    finally:
        down = cli("lab", "down", path, "--json")
    assert down.returncode == 0, down.stderr
    for rec in switches.values():  # the switches and plugs are gone with the lab
        for pid in [rec.pid, *rec.plugs.values()]:
            assert not vmctl.alive(pid, marker=rec.sock)
    assert "network lan (stopped" in cli("lab", "status", path).stdout


@pytest.mark.engine
@pytest.mark.boot
def test_two_subnets_names_on_both_image_nodes_build_once(context: Path,
                                                            tmp_path: Path) -> None:
    """x is on both networks, y only on front, z only on back: each resolves the others it
    shares a network with, at their address on that network. The nodes come from a source
    (``image:``, a path beside the lab file): the first ``up`` builds it once for the three,
    the second builds nothing."""
    shutil.copytree(context, tmp_path / "node-image")
    image = {"image": "node-image"}
    path = write_lab(tmp_path, {
        "nodes": {"x": image, "y": image, "z": {**image, "ip": {"back": "10.72.0.9"}}},
        "networks": {"front": {"subnet": "10.71.0.0/24", "members": ["x:eth0", "y:eth0"]},
                     "back": {"subnet": "10.72.0.0/24", "members": ["x:eth1", "z:eth0"]}}})
    refused = cli("lab", "up", path, "--no-build")
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "not built, and --no-build forbids building it" in refused.stderr
    up = cli("lab", "up", path, "--wait", READY, "--json", timeout=900)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["images"] == {"node-image": "built"}
    try:
        assert "(10.71.0.2)" in sh(path, "x", "ping -c 1 -W 5 y")
        assert "(10.72.0.9)" in sh(path, "x", "ping -c 1 -W 5 z")
        assert "(10.71.0.1)" in sh(path, "y", "ping -c 1 -W 5 x")
        assert "(10.72.0.1)" in sh(path, "z", "ping -c 1 -W 5 x")
        hosts = sh(path, "y", "cat /etc/hosts")
        assert "127.0.1.1\talpine-minivm" in hosts and "\tz\n" not in hosts
    finally:
        down = cli("lab", "down", path)
    assert down.returncode == 0, down.stderr
    again = cli("lab", "up", path, "--wait", READY, "--json")
    try:
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["images"] == {"node-image": "cached"}
        # the second boot replaced the block of the first instead of adding another
        assert sh(path, "x", "grep -c '^# minivm: add_host' /etc/hosts").strip() == "1"
    finally:
        down = cli("lab", "down", path)
    assert down.returncode == 0, down.stderr

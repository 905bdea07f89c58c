"""Start a container the way GNS3 3.0.6 starts a Docker node (compute/docker/docker_vm.py).

GNS3 creates the container with networking disabled, a tty and open stdin, ``GNS3_MAX_ETHERNET``
(the last adapter) in the environment, starts it, then moves each adapter in (uBridge's
``docker move_to_ns``: a host interface into the container's network namespace, renamed
ethN). Here the adapter is one end of a veth pair, the other end stays on the host with an
address, so the test can ping the node. With ``gns3_init``, the container also runs GNS3's own
``/gns3/init.sh`` (from the gns3-server package, with the host's static busybox, as GNS3
installs it) before the image's entrypoint, with /etc/network as GNS3's per-node volume.
GNS3 runs nodes privileged; this machine refuses some capabilities, so the node gets the two
GNS3's init needs (NET_ADMIN for addresses, SYS_ADMIN for the volume's bind mount).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests import gns3_env

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static, what GNS3 copies into /gns3/bin


def gns3_resources(target: Path) -> Path:
    """GNS3's /gns3 folder: init.sh, run-cmd.sh, udhcpc script from gns3-server 3.0.6, and a
    static busybox."""
    python = gns3_env.ensure()
    found = subprocess.run(
        [str(python), "-c", "import gns3server, pathlib; print(pathlib.Path(gns3server.__file__)"
                            ".parent / 'compute' / 'docker' / 'resources')"],
        capture_output=True, text=True, check=True).stdout.strip()
    if not target.is_dir():
        shutil.copytree(found, target)
        shutil.copy2(BUSYBOX, target / "bin" / "busybox")
    return target


def network_volume(folder: Path, interfaces: str) -> Path:
    """What GNS3 keeps per node for /etc/network (docker_vm.py, _create_network_config)."""
    for sub in ("if-up.d", "if-down.d", "if-pre-up.d", "if-post-down.d", "interfaces.d"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / ".gns3_perms").touch()
    (folder / "interfaces").write_text(interfaces)
    return folder


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def ping(address: str) -> bool:
    """One ping from the host (busybox's: the host has no iputils)."""
    tool = shutil.which("ping") or str(BUSYBOX)
    argv = [tool, "-c1", "-W1", address] if tool != str(BUSYBOX) else \
        [tool, "ping", "-c1", "-W1", address]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


@dataclass
class Node:
    api: object
    id: str
    veths: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return int(self.api.inspect_container(self.id)["State"]["Pid"])

    def add_adapter(self, index: int, host_address: str) -> str:
        """A veth pair: one end moved into the node as eth<index>, the other on the host with
        ``host_address`` (a/prefix), up. Returns the host end's name."""
        tag = uuid.uuid4().hex[:8]
        host, inner = f"mvh{tag}", f"mvc{tag}"
        ip("link", "add", host, "type", "veth", "peer", "name", inner)
        self.veths.append(host)
        ip("link", "set", inner, "netns", str(self.pid))
        subprocess.run(["nsenter", "-t", str(self.pid), "-n", "ip", "link", "set", inner,
                        "name", f"eth{index}"], check=True, capture_output=True)
        ip("addr", "add", host_address, "dev", host)
        ip("link", "set", host, "up")
        return host

    def logs(self) -> str:
        return self.api.logs(self.id).decode(errors="replace")

    def wait_log(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (out := self.logs()):
                return out
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the node's output: {self.logs()[-2000:]}")

    def stop(self) -> int:
        """GNS3's stop (``docker stop``: SIGTERM, SIGKILL when the grace runs out, here a
        generous 30 s); the exit code: 0 when the entry point ended on SIGTERM, 137 when it
        had to be killed."""
        self.api.stop(self.id, timeout=30)
        return int(self.api.inspect_container(self.id)["State"]["ExitCode"])

    def remove(self) -> None:
        self.api.remove_container(self.id, force=True)
        for host in self.veths:
            subprocess.run(["ip", "link", "del", host], capture_output=True, check=False)


def start_node(api, image: str, *, adapters: int = 1, network: Path | None = None,
               resources: Path | None = None, env: dict[str, str] | None = None) -> Node:
    """Create and start a node of ``image`` as GNS3 does (see the module docstring).

    ``network``: a folder for /etc/network (GNS3's volume); ``resources``: GNS3's /gns3 folder,
    whose init.sh then runs first."""
    info = api.inspect_image(image)["Config"]
    entrypoint = list(info.get("Entrypoint") or [])
    environment = {"container": "docker", "GNS3_MAX_ETHERNET": f"eth{adapters - 1}",
                   **(env or {})}
    mounts = []
    if resources is not None:
        entrypoint.insert(0, "/gns3/init.sh")
        mounts.append(f"{resources}:/gns3:ro")
        if network is not None:
            environment["GNS3_VOLUMES"] = "/etc/network"
            mounts.append(f"{network}:/gns3volumes/etc/network")
    elif network is not None:
        mounts.append(f"{network}:/etc/network")
    host_config = api.create_host_config(
        network_mode="none", cap_add=["NET_ADMIN", "SYS_ADMIN"], binds=mounts,
        security_opt=["apparmor=unconfined"])
    created = api.create_container(
        image, hostname="node1", tty=True, stdin_open=True, network_disabled=True,
        entrypoint=entrypoint, command=list(info.get("Cmd") or []),
        environment=environment, host_config=host_config)
    node = Node(api, created["Id"])
    api.start(node.id)
    return node


class DhcpServer:
    """busybox udhcpd on a host interface, offering one address."""

    def __init__(self, interface: str, address: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "udhcpd.conf"
        conf.write_text(f"start {address}\nend {address}\ninterface {interface}\n"
                        f"max_leases 1\nlease_file {folder / 'leases'}\n"
                        f"pidfile {folder / 'udhcpd.pid'}\noption subnet 255.255.255.252\n")
        (folder / "leases").touch()
        self.proc = subprocess.Popen([str(BUSYBOX), "udhcpd", "-f", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> DhcpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

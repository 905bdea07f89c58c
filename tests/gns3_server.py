"""Real GNS3 servers for the tests: a controller and a second ``gns3server`` as a remote compute.

Each server gets its own folder (config, database, images, projects), a free TCP port, and its
own console and UDP port ranges, so that two servers on one host never hand out the same ports.
The ``gns3server`` binary comes from the separate venv made by ``tests/gns3_env.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests import gns3_env
from tests.cli import MINIVM, REPO
from tests.ports import free_port

USER = "admin"
PASSWORD = "minivm-test-password"
COMPUTE_USER = "compute"
COMPUTE_PASSWORD = "minivm-compute-password"
START_TIMEOUT = 90.0
# GNS3 runs its built-in Ethernet switch in Dynamips, which no Debian package ships: without
# a real one, this stand-in lets the server create switches and their links (no frames pass).
DYNAMIPS_STANDIN = Path(__file__).resolve().parent / "dynamips-standin" / "dynamips"
# GNS3 starts every QEMU node through uBridge; where none is installed, the stand-in (control
# protocol only: nodes start and boot, links carry no frames)
UBRIDGE = shutil.which("ubridge") or str(Path(__file__).with_name("ubridge-standin") / "ubridge")


@dataclass(frozen=True)
class Server:
    """A running gns3server: its URL, folders and process."""

    url: str
    host: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def images(self) -> Path:
        return self.folder / "images"

    @property
    def projects(self) -> Path:
        return self.folder / "projects"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"


def _config(folder: Path, host: str, port: int, ranges: tuple[int, int, int, int],
            ubridge: str) -> Path:
    console_start, console_end, udp_start, udp_end = ranges
    conf = folder / "gns3_server.conf"
    conf.write_text(f"""[Server]
host = {host}
port = {port}
images_path = {folder / 'images'}
projects_path = {folder / 'projects'}
appliances_path = {folder / 'appliances'}
symbols_path = {folder / 'symbols'}
configs_path = {folder / 'configs'}
secrets_dir = {folder / 'secrets'}
report_errors = False
ubridge_path = {ubridge}
console_start_port_range = {console_start}
console_end_port_range = {console_end}
vnc_console_start_port_range = {console_start + 6000}
vnc_console_end_port_range = {console_end + 6000}
udp_start_port_range = {udp_start}
udp_end_port_range = {udp_end}
compute_username = {COMPUTE_USER}
compute_password = {COMPUTE_PASSWORD}

[Controller]
default_admin_username = {USER}
default_admin_password = {PASSWORD}

[Qemu]
enable_hardware_acceleration = False
require_hardware_acceleration = False

[Dynamips]
dynamips_path = {shutil.which("dynamips") or DYNAMIPS_STANDIN}
""")
    return conf


@contextmanager
def running(folder: Path, *, host: str, ranges: tuple[int, int, int, int],
            ubridge: str = UBRIDGE) -> Iterator[Server]:
    """A gns3server on ``host`` (a loopback address) with its files in ``folder``, until the
    block ends (always stopped, even on failure); it starts nodes through ``ubridge``.

    GNS3 joins two computes by a UDP tunnel between their addresses, and refuses when one of
    them is 127.0.0.1 (``get_ip_on_same_subnet`` in ``controller/compute.py``): the tests give
    each server its own loopback address (127.0.0.2, 127.0.0.3, ...) so links across them work
    with nothing leaving the host."""
    for sub in ("images", "projects", "appliances", "symbols", "configs", "secrets", "home"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    conf = _config(folder, host, port, ranges, ubridge)
    binary = gns3_env.venv_dir() / "bin" / "gns3server"
    env = {**os.environ, "HOME": str(folder / "home")}
    with (folder / "server.log").open("ab") as log:
        proc = subprocess.Popen([str(binary), "--config", str(conf), "--host", host,
                                 "--port", str(port), "--local"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                start_new_session=True)
    server = Server(url=f"http://{host}:{port}", host=host, port=port, folder=folder,
                    process=proc)
    try:
        _wait_ready(server)
        yield server
    finally:
        stop(server)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gns3server exited ({server.process.returncode}):\n"
                               f"{server.log.read_text()[-3000:]}")
        try:
            if requests.get(f"{server.url}/v3/version", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"gns3server did not answer within {START_TIMEOUT:.0f} s:\n"
                       f"{server.log.read_text()[-3000:]}")


def stop(server: Server) -> None:
    """SIGTERM the server's process group, SIGKILL after 15 s."""
    if server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)


def token(server: Server) -> str:
    r = requests.post(f"{server.url}/v3/access/users/authenticate",
                      json={"username": USER, "password": PASSWORD}, timeout=10)
    r.raise_for_status()
    return str(r.json()["access_token"])


def api(server: Server, method: str, path: str, **kwargs: object) -> requests.Response:
    """One authenticated call to the controller (for test set-up and checks)."""
    headers = {"Authorization": f"Bearer {token(server)}"}
    return requests.request(method, f"{server.url}/v3{path}", headers=headers, timeout=60,
                            **kwargs)  # type: ignore[arg-type]


def add_compute(controller: Server, compute: Server, name: str,
                host: str | None = None) -> dict[str, object]:
    """Register ``compute`` with the controller as a remote compute named ``name``
    (reached at ``host``, by default the compute's own address)."""
    r = api(controller, "POST", "/computes?connect=true",
            json={"protocol": "http", "host": host or compute.host, "port": compute.port,
                  "user": COMPUTE_USER, "password": COMPUTE_PASSWORD, "name": name})
    r.raise_for_status()
    return dict(r.json())


def minivm(*args: str | Path, password: str = PASSWORD,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``minivm ARGS...`` with the test servers' credentials in its environment."""
    env = {**os.environ, "MINIVM_GNS3_USER": USER, "MINIVM_GNS3_PASSWORD": password}
    env.pop("MINIVM_GNS3_URL", None)
    return subprocess.run([*MINIVM, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)

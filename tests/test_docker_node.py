"""The same image as a GNS3 Docker node: the Docker appliance (written, validated by GNS3's own
code, checked) and the shipped images started the way GNS3 starts a Docker node (networking
disabled, adapters moved in after the start, GNS3_MAX_ETHERNET, SIGTERM to stop).

The alpine-minivm image cannot be built here (no Alpine mirror): its look-alike (its etc/ on a
busybox base, tests/imagefactory.py) stands in for it, with images/debian-minivm.
"""

from __future__ import annotations

import json
import random
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from minivm.errors import MinivmError
from minivm.gns3 import appliance, docker_node
from minivm.image import engine
from minivm.paths import images_dir
from minivm.ui import QUIET
from tests import gns3_env, imagefactory
from tests.cli import cli
from tests.fakeproject import make_build
from tests.gns3node import DhcpServer, gns3_resources, network_volume, ping, start_node
from tests.marks import fixture

REPO = Path(__file__).resolve().parent.parent
OK = {"server": None, "gui": None, "strict": None}


@pytest.fixture(scope="module")
def busybox_id(docker_api) -> str:
    return docker_api.inspect_image("minivm-test/busybox:latest")["Id"]


@pytest.fixture
def untag(docker_api):
    """References a test makes the engine hold; untagged afterwards (the image stays)."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        engine.remove_image(docker_api, ref)


# --- the appliance -------------------------------------------------------------------------------

def test_docker_appliance_beside_the_qemu_one(project, busybox_id, docker_api, untag):
    folder = make_build(project, "r1", image_id=busybox_id)
    qemu = appliance.write_bundle("r1", reporter=QUIET)
    node = docker_node.write_appliance("r1", reporter=QUIET, archive=True)
    assert node is not None
    ref = f"minivm/r1:{busybox_id.split(':')[1][:12]}"
    untag.append(ref)
    data = json.loads((folder / "r1-docker.gns3a").read_text())
    assert node.path == folder / "r1-docker.gns3a"
    assert data["docker"] == {"adapters": 1, "image": ref, "console_type": "telnet"}
    assert docker_api.inspect_image(ref)["Id"] == busybox_id  # the reference is in the engine
    for key in ("name", "description", "category", "vendor_name", "maintainer", "symbol",
                "port_name_format", "registry_version"):
        assert data[key] == json.loads(qemu.path.read_text())[key], key
    assert data["appliance_id"] == node.appliance_id != qemu.appliance_id
    assert node.docker_image == ref and node.name == data["name"]
    assert "qemu" not in data and "images" not in data
    archive = folder / f"r1-docker-{busybox_id.split(':')[1][:12]}.tar"
    assert f"docker load -i {archive.name}" in data["usage"]
    assert docker_node.archive_tags(archive) == {ref}  # `docker load` restores the reference
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()
    assert gns3_env.validate([qemu.path, node.path]) == {str(qemu.path): OK, str(node.path): OK}
    checked = cli("appliance", "--check", str(node.path))
    assert checked.returncode == 0 and "Docker node" in checked.stdout, checked.stderr
    assert appliance.check_bundle(node.path) == node


def test_rewrite_keeps_the_archive_and_json(project, busybox_id, untag):
    folder = make_build(project, "r1", image_id=busybox_id)
    untag.append(f"minivm/r1:{busybox_id.split(':')[1][:12]}")
    first = cli("appliance", "r1", "--docker-archive", "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    archive = folder / out["docker_appliance"]["files"][0]["filename"]
    inode = archive.stat().st_ino
    again = json.loads(cli("appliance", "r1", "--docker-archive", "--json").stdout)
    assert archive.stat().st_ino == inode  # same image, same reference: not saved again
    assert again["docker_appliance"]["gns3a"].endswith("r1/r1-docker.gns3a")
    assert not list(folder.glob(".*tmp*"))  # nothing half-written left


@pytest.mark.engine
def test_image_not_in_engine_gives_no_docker_appliance_but_the_qemu_one(project, capsys):
    """A build from an archive on a host whose engine lacks the image (here: an id no engine
    has): the QEMU bundle is written, the Docker appliance is not, with a note saying why."""
    from minivm.ui import Reporter
    folder = make_build(project, "r1")
    assert docker_node.after_build("r1", folder=folder, reporter=Reporter()) is None
    err = capsys.readouterr().err
    assert "no GNS3 Docker appliance for r1" in err and "docker load" in err
    result = cli("appliance", "r1", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["docker_appliance"] is None and Path(out["gns3a"]).is_file()
    assert not (folder / "r1-docker.gns3a").exists()


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d["docker"].update(bogus=1), "'bogus'"),
    (lambda d: d["docker"].update(console_type="spice"), "docker.console_type"),
    (lambda d: d["docker"].update(image="Not A Ref"), "not a Docker image reference"),
    (lambda d: d["docker"].pop("image"), "lacks 'image'"),
    (lambda d: d["docker"].update(image="minivm/nosuch:000000000000"), "in no archive"),
    (lambda d: d.update(images=[]), "'images'"),
])
def test_check_applies_gns3_rules_to_docker_appliances(project, busybox_id, untag,
                                                       edit, words):
    make_build(project, "r1", image_id=busybox_id)
    untag.append(f"minivm/r1:{busybox_id.split(':')[1][:12]}")
    node = docker_node.write_appliance("r1", reporter=QUIET)
    data = json.loads(node.path.read_text())
    edit(data)
    node.path.write_text(json.dumps(data))
    with pytest.raises(MinivmError, match=words):
        appliance.check_bundle(node.path)
    result = cli("appliance", "--check", str(node.path))
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_gns3_validators_reject_an_unknown_docker_key(project, busybox_id, untag):
    make_build(project, "r1", image_id=busybox_id)
    untag.append(f"minivm/r1:{busybox_id.split(':')[1][:12]}")
    node = docker_node.write_appliance("r1", reporter=QUIET)
    data = json.loads(node.path.read_text())
    bad = node.path.with_name("bad.gns3a")
    bad.write_text(json.dumps({**data, "docker": {**data["docker"], "ram": 256}}))
    assert "ram" in gns3_env.validate([bad])[str(bad)]["strict"]


def test_shipped_images_carry_one_container_script():
    copies = {p.read_bytes() for p in images_dir().glob("*/etc/minivm/container.sh")}
    assert len(copies) == 1 and len(list(images_dir().glob("*/etc/minivm/container.sh"))) == 2


# --- the shipped images as GNS3 Docker nodes ---------------------------------------------------

@pytest.fixture(scope="module")
def node_images(docker_api, tmp_path_factory) -> dict[str, str]:
    """alpine-minivm's look-alike and debian-minivm, built by the engine."""
    out = tmp_path_factory.mktemp("node-images")
    images = {}
    for name, context in (("alpine-minivm", imagefactory.alpine_lookalike(out)),
                          ("debian-minivm", images_dir() / "debian-minivm")):
        images[name] = engine.build_image(docker_api, context, reporter=QUIET,
                                          tag=f"minivm-test/node-{name}:test")
    yield images
    for name in images:
        engine.remove_image(docker_api, f"minivm-test/node-{name}:test")


@fixture(scope="module")
def resources(tmp_path_factory) -> Path:
    return gns3_resources(tmp_path_factory.mktemp("gns3") / "resources")


def subnet() -> tuple[str, str]:
    """Host and node addresses of a /30 nobody else here uses."""
    third, fourth = random.randrange(256), random.randrange(0, 256, 4)
    return f"10.213.{third}.{fourth + 1}", f"10.213.{third}.{fourth + 2}"


STATIC = "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n" \
         "\taddress {address}\n\tnetmask 255.255.255.252\n"


@pytest.mark.parametrize("gns3_init", [False, True], ids=["entrypoint", "gns3-init"])
@pytest.mark.parametrize("name", ["alpine-minivm", "debian-minivm"])
def test_node_takes_its_adapter_answers_ping_and_stops_on_sigterm(
        docker_api, node_images, resources, tmp_path, name, gns3_init):
    """Networking disabled; eth0 moved in after the start; /etc/network/interfaces (GNS3's
    volume) gives it a static address; the host pings it; SIGTERM ends it at once, cleanly.
    gns3-init: GNS3's own /gns3/init.sh runs first (it configures the stanza itself)."""
    host, address = subnet()
    network = network_volume(tmp_path / "etc-network", STATIC.format(address=address))
    node = start_node(docker_api, node_images[name], network=network,
                      resources=resources if gns3_init else None)
    try:
        time.sleep(0.3)  # GNS3 adds adapters once the container runs; the image must wait
        node.add_adapter(0, f"{host}/30")
        node.wait_log("Welcome to node1, a GNS3 Docker node.")
        deadline = time.monotonic() + 20
        while not ping(address):
            assert time.monotonic() < deadline, node.logs()[-2000:]
        if not gns3_init:
            assert f"minivm: eth0: {address}/30" in node.logs()
        assert node.stop() == 0, node.logs()[-2000:]  # ended on SIGTERM, not killed
    finally:
        node.remove()


@pytest.mark.parametrize("interfaces", ["", "auto eth0\niface eth0 inet dhcp\n"],
                         ids=["no-stanza", "dhcp-stanza"])
def test_gns3_node_gets_its_address_by_dhcp(docker_api, node_images, resources, tmp_path,
                                            interfaces):
    """Under GNS3's own init.sh: eth0 without a stanza asks DHCP (with GNS3's busybox udhcpc,
    debian-minivm has no client); a dhcp stanza is GNS3's ifup's. A DHCP server on the host end
    of the veth offers one address; the host pings it."""
    host, address = subnet()
    network = network_volume(tmp_path / "etc-network", interfaces)
    node = start_node(docker_api, node_images["debian-minivm"], network=network,
                      resources=resources)
    try:
        time.sleep(0.3)
        veth = node.add_adapter(0, f"{host}/30")
        with DhcpServer(veth, address, tmp_path / "dhcp"):
            node.wait_log("Welcome to node1, a GNS3 Docker node.")
            deadline = time.monotonic() + 30
            while not ping(address):
                assert time.monotonic() < deadline, node.logs()[-2000:]
        assert ("minivm: eth0: DHCP" in node.logs()) == (not interfaces)
        assert node.stop() == 0, node.logs()[-2000:]
    finally:
        node.remove()


def test_adapter_wait_is_bounded_and_eth0_without_stanza_asks_dhcp(docker_api, node_images,
                                                                 tmp_path):
    """GNS3_MAX_ETHERNET=eth1 never appears: the image goes on after MINIVM_ADAPTER_WAIT; eth0
    has no stanza, so it asks DHCP (debian-minivm has no client: it says so)."""
    network = network_volume(tmp_path / "etc-network", "# nothing configured\n")
    node = start_node(docker_api, node_images["debian-minivm"], adapters=2, network=network,
                      env={"MINIVM_ADAPTER_WAIT": "2"})
    try:
        host, _ = subnet()
        node.add_adapter(0, f"{host}/30")
        out = node.wait_log("Welcome to node1", timeout=60)
        assert "eth1 did not appear within 2 s" in out
        assert "eth0: no DHCP client in this image" in out
        assert node.stop() == 0, node.logs()[-2000:]
    finally:
        node.remove()


def test_console_commands_get_ctrl_c(docker_api, node_images, tmp_path):
    """The shell runs as a child of the entry point; its commands still get SIGINT (Ctrl-C)
    from the console: signal 2 is not ignored in a command typed there."""
    node = start_node(docker_api, node_images["debian-minivm"], network=network_volume(
        tmp_path / "n", ""), env={"MINIVM_ADAPTER_WAIT": "0"})
    try:
        node.wait_log("Welcome to node1")
        sock = docker_api.attach_socket(node.id, params={"stdin": 1, "stream": 1})
        sock._sock.sendall(b"sleep 77\n")
        deadline = time.monotonic() + 20
        while True:
            probe = docker_api.exec_create(node.id, ["sh", "-c", "grep SigIgn "
                                                     "/proc/$(pgrep -x sleep)/status"])
            status = docker_api.exec_start(probe).decode()
            if "SigIgn" in status:
                break
            assert time.monotonic() < deadline, node.logs()
            time.sleep(0.2)
        ignored = int(status.split()[1], 16)
        assert not ignored & (1 << 1), status  # SIGINT (2) is bit 1
        sock.close()
        assert node.stop() == 0, node.logs()[-2000:]
    finally:
        node.remove()


def test_plain_docker_run_stops_at_once(docker_api, node_images):
    """Without GNS3 (`docker run -dit`, the engine's network): no waiting, and docker stop
    ends it on SIGTERM (exit code 0) instead of killing it when its grace runs out (137)."""
    created = docker_api.create_container(node_images["alpine-minivm"], tty=True,
                                          stdin_open=True)
    try:
        docker_api.start(created["Id"])
        deadline = time.monotonic() + 20
        while b"a Docker container" not in docker_api.logs(created["Id"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        docker_api.stop(created["Id"], timeout=30)
        assert docker_api.inspect_container(created["Id"])["State"]["ExitCode"] == 0
    finally:
        docker_api.remove_container(created["Id"], force=True)


def test_build_writes_both_appliances_and_the_archive(project, docker_api, untag,
                                                      tmp_path):
    """`minivm build CONTEXT --docker-archive --json`, end to end, on the look-alike."""
    (project / "init").symlink_to(REPO / "init")  # what the build injects
    context = tmp_path / "alpine-minivm"  # the project's images/ is empty here
    shutil.copytree(REPO / "images" / "alpine-minivm" / "etc", context / "etc", symlinks=True)
    (context / "Dockerfile").write_text(imagefactory.ALPINE_LOOKALIKE)
    result = cli("build", str(context), "--docker-archive", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    node = out["docker_appliance"]
    data = json.loads(Path(node["gns3a"]).read_text())
    untag.append(data["docker"]["image"])
    assert data["docker"]["image"] == f"minivm/alpine-minivm:{out['image_id'].split(':')[1][:12]}"
    assert out["appliance"]["name"] == data["name"] == "alpine-minivm"
    archive = Path(node["gns3a"]).parent / node["files"][0]["filename"]
    assert docker_node.archive_tags(archive) == {data["docker"]["image"]}
    assert f"docker load -i {archive.name}" in data["usage"]
    assert cli("appliance", "--check", node["gns3a"]).returncode == 0


def test_no_engine_at_all_writes_the_qemu_bundle_and_says_why(project, monkeypatch,
                                                              tmp_path):
    """No engine answers (a build from an archive on a host without Docker)."""
    make_build(project, "r1")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    result = cli("appliance", "r1")
    assert result.returncode == 0, result.stderr
    assert "no GNS3 Docker appliance for r1: no Docker engine answers" in result.stderr
    assert (project / "build" / "r1" / "r1.gns3a").is_file()
    assert not (project / "build" / "r1" / "r1-docker.gns3a").exists()

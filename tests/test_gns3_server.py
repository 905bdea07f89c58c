"""minivm driving a real GNS3 3.0.6 server: appliance push, labs across two computes, export.

A controller (127.0.0.2) and a second gns3server registered as the remote compute ``remote1``
(127.0.0.3) run from the separate venv (tests/gns3_env.py). Starting QEMU nodes needs uBridge,
which no Debian package ships: the test that starts nodes runs only when ``ubridge`` is on
PATH; everything up to the start (nodes, images on both computes, links, export) runs without.
Every error case checks that the server was left with no project.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from minivm.errors import MinivmError
from minivm.gns3 import reader, server
from minivm.lab import control, gns3, spec
from minivm.vm import qemu
from tests import gns3_server as gs
from tests.cli import MINIVM
from tests.labs import READY, variant
from tests.marks import fixture
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
CONTROLLER = "127.0.0.2"
REMOTE = "127.0.0.3"
BARE = "127.0.0.4"



@dataclasses.dataclass(frozen=True)
class Cluster:
    controller: gs.Server
    remote: gs.Server
    remote_id: str


@fixture("engine", "gns3", scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The controller and a remote compute, each with its own console and UDP port ranges."""
    folder = tmp_path_factory.mktemp("gns3")
    with gs.running(folder / "controller", host=CONTROLLER,
                    ranges=(35000, 35499, 36000, 36999)) as controller, \
            gs.running(folder / "remote", host=REMOTE,
                       ranges=(35500, 35999, 37000, 37999)) as remote:
        compute = gs.add_compute(controller, remote, "remote1")
        yield Cluster(controller, remote, str(compute["compute_id"]))


def cli(*args: str | Path, password: str = gs.PASSWORD,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MINIVM_GNS3_USER": gs.USER, "MINIVM_GNS3_PASSWORD": password}
    env.pop("MINIVM_GNS3_URL", None)
    return subprocess.run([*MINIVM, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def write_lab(folder: Path, name: str, nodes: dict[str, dict[str, object]],
              links: list[str]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({"nodes": nodes, "links": links}))
    return path


def projects(s: gs.Server) -> list[dict[str, object]]:
    return list(gs.api(s, "GET", "/projects").json())


def assert_clean(c: Cluster) -> None:
    """No project on the controller, no project folder left on either compute."""
    assert projects(c.controller) == []
    for s in (c.controller, c.remote):
        assert [p.name for p in s.projects.iterdir()] == [], f"{s.projects} not empty"


def one_error_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def client(c: Cluster) -> server.Client:
    return server.connect(server.Credentials(c.controller.url, gs.USER, gs.PASSWORD))


def test_push_twice_second_changes_nothing(bundle: Path, cluster: Cluster) -> None:
    first = cli("gns3", "push", bundle, "--server", cluster.controller.url, "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    wanted = json.loads(bundle.read_text())
    names = sorted(i["filename"] for i in wanted["images"])
    assert sorted(result["images"]["uploaded"]) == names
    assert result["template"]["action"] == "created" and result["changed"]
    listed = {i["filename"]: i for i in gs.api(cluster.controller, "GET", "/images").json()}
    for image in wanted["images"]:
        assert listed[image["filename"]]["checksum"] == image["md5sum"]
        assert listed[image["filename"]]["image_size"] == image["filesize"]
    template = gs.api(cluster.controller, "GET",
                      f"/templates/{result['template']['template_id']}").json()
    assert template["name"] == wanted["name"] and template["template_type"] == "qemu"
    for key in ("ram", "adapters", "adapter_type", "kernel_command_line", "options",
                "on_close", "hda_disk_interface", "hdb_disk_interface"):
        assert template[key] == wanted["qemu"][key], key
    for key, filename in wanted["versions"][0]["images"].items():
        assert template[key] == filename, key

    again = cli("gns3", "push", bundle, "--server", cluster.controller.url, "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["changed"] is False and second["images"]["uploaded"] == []
    assert sorted(second["images"]["skipped"]) == names
    assert second["template"] == {"template_id": result["template"]["template_id"],
                                  "action": "unchanged"}
    said = cli("gns3", "push", bundle, "--server", cluster.controller.url)
    assert said.returncode == 0 and "nothing to do" in said.stderr, said.stderr
    same = [t for t in gs.api(cluster.controller, "GET", "/templates").json()
            if t["name"] == wanted["name"]]
    assert len(same) == 1


def test_lab_across_two_computes_then_export_and_delete(bundle: Path, cluster: Cluster,
                                                        tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "twocomputes", {
        "r1": {"appliance": str(bundle), "append": "ip=10.0.0.1/24::::r1:eth0:off"},
        "r2": {"appliance": str(bundle), "compute": "remote1", "ram": 128, "cpus": 2},
    }, ["r1:eth0 -- r2:eth0"])
    url = cluster.controller.url
    up = cli("lab", "up", lab_file, "--server", url, "--no-start", "--json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    token = gs.token(cluster.controller)[:16]  # the JWT's header: the same for every login
    assert token not in up.stdout + up.stderr and "Bearer" not in up.stdout + up.stderr
    assert info["created_project"] and info["created_nodes"] == ["r1", "r2"]
    assert info["created_links"] == ["r1:eth0 -- r2:eth0"]
    assert info["nodes"]["r1"]["compute_id"] == "local"
    assert info["nodes"]["r2"]["compute_id"] == cluster.remote_id
    pid = info["project_id"]
    nodes = {n["name"]: n for n in gs.api(cluster.controller, "GET",
                                          f"/projects/{pid}/nodes").json()}
    assert set(nodes) == {"r1", "r2"}

    # Node properties: what the local runner boots (its Machine and QEMU argv), on GNS3.
    lab = spec.load(lab_file)
    for name, node in nodes.items():
        app = lab.nodes[name].appliance
        m = control.node_machine(lab, name, disks=qemu.overlay_paths(app.images, tmp_path / name))
        argv = qemu.command_line(m)
        props = node["properties"]
        assert f"{props['ram']}M" == argv[argv.index("-m") + 1]
        assert f"cpus={props['cpus']},maxcpus={props['cpus']},sockets=1" == \
            argv[argv.index("-smp") + 1]
        assert props["kernel_command_line"] == argv[argv.index("-append") + 1]
        assert props["adapters"] == len(m.adapters) == lab.nodes[name].adapters
        assert props["adapter_type"] == m.adapter_type
        assert props["options"].split() == list(m.options)
        assert props["kernel_image"] == app.kernel.name
        assert props["initrd"] == app.initrd.name
        for letter, drive, (image, _) in zip("ab", m.drives, app.disks, strict=True):
            assert props[f"hd{letter}_disk_interface"] == drive.interface
            assert props[f"hd{letter}_disk_image"] == image.name
    assert nodes["r2"]["properties"]["ram"] == 128 and nodes["r2"]["properties"]["cpus"] == 2
    assert nodes["r1"]["properties"]["kernel_command_line"].endswith("r1:eth0:off")

    # Images: uploaded to the controller by the push, to the remote compute by the controller
    # itself when the node was created there (gns3-server 3.0.6, controller/node.py).
    files = {i["filename"] for i in json.loads(bundle.read_text())["images"]}
    for s in (cluster.controller, cluster.remote):
        assert files <= {p.name for p in (s.images / "QEMU").iterdir()}, s.images

    links = gs.api(cluster.controller, "GET", f"/projects/{pid}/links").json()
    assert len(links) == 1
    assert {(e["node_id"], e["adapter_number"], e["port_number"]) for e in links[0]["nodes"]} \
        == {(nodes["r1"]["node_id"], 0, 0), (nodes["r2"]["node_id"], 0, 0)}

    status = cli("lab", "status", lab_file, "--server", url, "--json")
    assert status.returncode == 0, status.stderr
    states = json.loads(status.stdout)["nodes"]
    assert {n: s["status"] for n, s in states.items()} == {"r1": "stopped", "r2": "stopped"}
    assert states["r2"]["console"].startswith(f"telnet:{REMOTE}:")

    again = cli("lab", "up", lab_file, "--server", url, "--no-start", "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert not second["created_project"]
    assert second["created_nodes"] == [] and second["created_links"] == []
    assert len(gs.api(cluster.controller, "GET", f"/projects/{pid}/links").json()) == 1

    out = tmp_path / "out" / "twocomputes.gns3project"
    exported = cli("lab", "export", lab_file, "--server", url, "-o", out, "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["bytes"] == out.stat().st_size
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left
    with zipfile.ZipFile(out) as z:
        topology = json.loads(z.read("project.gns3"))
        names = {Path(n).name for n in z.namelist() if n.startswith("images/")}
    assert {n["name"] for n in topology["topology"]["nodes"]} == {"r1", "r2"}
    assert len(topology["topology"]["links"]) == 1
    assert files <= names  # the initrd too, which GNS3's own export leaves out

    # A GNS3 user imports it with one click: the same import, through the API.
    imported = gs.api(cluster.controller, "POST", f"/projects/{uuid.uuid4()}/import",
                      params={"name": "imported"}, data=out.read_bytes()).json()
    try:
        got = gs.api(cluster.controller, "GET", f"/projects/{imported['project_id']}/nodes")
        assert sorted(n["name"] for n in got.json()) == ["r1", "r2"]
        assert {n["properties"]["initrd"] for n in got.json()} == {
            lab.nodes["r1"].appliance.initrd.name}
    finally:
        gs.api(cluster.controller, "DELETE", f"/projects/{imported['project_id']}")

    down = cli("lab", "down", lab_file, "--server", url, "--delete", "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["deleted"] is True
    assert_clean(cluster)
    gone = cli("lab", "status", lab_file, "--server", url, "--json")
    assert {s["status"] for s in json.loads(gone.stdout)["nodes"].values()} == {"absent"}


@pytest.mark.boot
def test_lab_starts_waits_and_stops(bundle: Path, cluster: Cluster, tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "booting", {
        "b1": {"appliance": str(bundle)}, "b2": {"appliance": str(bundle), "compute": "remote1"},
    }, ["b1:eth0 -- b2:eth0"])
    url = cluster.controller.url
    up = cli("lab", "up", lab_file, "--server", url, "--wait", READY, "--timeout", "300",
             "--json")
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert sorted(info["started"]) == ["b1", "b2"]
        assert set(info["wait_seconds"]) == {"b1", "b2"}
        assert {s["status"] for s in info["nodes"].values()} == {"started"}
    finally:
        down = cli("lab", "down", lab_file, "--server", url, "--delete", "--json")
    assert down.returncode == 0, down.stderr
    assert sorted(json.loads(down.stdout)["stopped"]) == ["b1", "b2"]
    assert_clean(cluster)


# --- errors: one line, non-zero exit, nothing left on the server ---------------------------


def qemu_processes_of(node_ids: list[str]) -> list[int]:
    """Pids of the QEMU processes running any of these GNS3 nodes (``-uuid NODE_ID``)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            words = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if words[0].endswith(b"qemu-system-x86_64") and any(
                n.encode() in words for n in node_ids):
            found.append(int(proc.name))
    return found


@pytest.mark.boot
def test_node_whose_qemu_exits_at_once_fails_up_and_stops_the_others(
        bundle: Path, cluster: Cluster, tmp_path: Path) -> None:
    """GNS3 answers "started" for a QEMU node whose process exits right away (here: a CPU
    model QEMU does not know, which the allow-list cannot tell): `up` says which node, with
    QEMU's own last line, exits non-zero and stops the node it did start."""
    bad = variant(bundle, tmp_path / "badcpu", options="-cpu minivm-no-such-cpu")
    data = json.loads(bad.read_text())
    data["name"] += "-badcpu"  # its own template: the bundle's stays as the other tests want
    bad.write_text(json.dumps(data))
    lab_file = write_lab(tmp_path, "exitsatonce", {"good": {"appliance": str(bundle)},
                                                   "bad": {"appliance": str(bad)}}, [])
    url = cluster.controller.url
    needles = ("node bad did not start", "exited at once", "minivm-no-such-cpu", "qemu.log")
    one_error_line(cli("lab", "up", lab_file, "--server", url), *needles)
    assert_clean(cluster)  # the project it made is gone again
    made = cli("lab", "up", lab_file, "--server", url, "--no-start", "--json")
    assert made.returncode == 0, made.stderr
    try:
        one_error_line(cli("lab", "up", lab_file, "--server", url), *needles)
        status = json.loads(cli("lab", "status", lab_file, "--server", url, "--json").stdout)
        assert {n: s["status"] for n, s in status["nodes"].items()} == \
            {"good": "stopped", "bad": "stopped"}
        assert qemu_processes_of([s["node_id"] for s in status["nodes"].values()]) == []
        log = gs.api(cluster.controller, "GET", f"/projects/{status['project_id']}/nodes/"
                     f"{status['nodes']['good']['node_id']}/files/qemu.log")
        assert log.ok and "Execution log:" in log.text  # the good node did start
        # powered off at once (a guest still booting ignores the button), its close action
        # given back afterwards
        node = gs.api(cluster.controller, "GET", f"/projects/{status['project_id']}/nodes/"
                      f"{status['nodes']['good']['node_id']}").json()
        assert node["properties"]["on_close"] == "shutdown_signal"
    finally:
        down = cli("lab", "down", lab_file, "--server", url, "--delete")
    assert down.returncode == 0, down.stderr
    assert_clean(cluster)


@fixture("engine", "gns3", scope="module")
def without_ubridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gs.Server]:
    """A controller whose uBridge is not there: it cannot start a QEMU node."""
    with gs.running(tmp_path_factory.mktemp("gns3") / "bare", host=BARE,
                    ranges=(38000, 38499, 38500, 38999),
                    ubridge="/nonexistent/ubridge") as server:
        yield server


def test_start_without_ubridge_fails_and_removes_the_project(
        bundle: Path, without_ubridge: gs.Server, tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "noubridge", {"u1": {"appliance": str(bundle)}}, [])
    done = cli("lab", "up", lab_file, "--server", without_ubridge.url)
    one_error_line(done, "starting node u1", "uBridge")
    assert projects(without_ubridge) == []
    assert list(without_ubridge.projects.iterdir()) == []


def test_unreachable_server(bundle: Path, cluster: Cluster, tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "nowhere", {"n1": {"appliance": str(bundle)}}, [])
    port = free_port()
    done = cli("lab", "up", lab_file, "--server", f"http://127.0.0.1:{port}")
    one_error_line(done, "cannot reach the GNS3 server", str(port))
    one_error_line(cli("gns3", "push", bundle, "--server", f"127.0.0.1:{port}"),
                   "does not start with http:// or https://")  # never silently plain http
    assert_clean(cluster)


def test_wrong_password(bundle: Path, cluster: Cluster, tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "badpass", {"n1": {"appliance": str(bundle)}}, [])
    done = cli("lab", "up", lab_file, "--server", cluster.controller.url, password="wrong")
    line = one_error_line(done, "refused user 'admin'")
    assert "wrong" not in line and gs.PASSWORD not in done.stderr + done.stdout
    assert_clean(cluster)


@fixture("gns3")
def old_gns3() -> Iterator[str]:
    """A stand-in for GNS3 2.2 (no /v3 API): a real run cannot reach this path here, as
    GNS3 2.2 is not installable next to 3.0; 2.2 answers 404 below /v3."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v2/version":
                body = b'{"version": "2.2.54", "local": false}'
                self.send_response(200)
            else:
                body = b'{"message": "Not Found"}'
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_gns3_older_than_3(bundle: Path, old_gns3: str) -> None:
    one_error_line(cli("gns3", "push", bundle, "--server", old_gns3),
                   "not a GNS3 3.x server", "3.0 or newer")


def test_unknown_compute(bundle: Path, cluster: Cluster, tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "nocompute",
                         {"n1": {"appliance": str(bundle), "compute": "nosuch"}}, [])
    done = cli("lab", "up", lab_file, "--server", cluster.controller.url)
    one_error_line(done, "no compute 'nosuch'", "remote1")
    assert_clean(cluster)


def test_appliance_not_built(cluster: Cluster, tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "unbuilt", {"n1": {"appliance": "never-built-appliance"}}, [])
    one_error_line(cli("lab", "up", lab_file, "--server", cluster.controller.url),
                   "never-built-appliance", "minivm build")
    one_error_line(cli("gns3", "push", "never-built-appliance", "--server",
                       cluster.controller.url), "never-built-appliance")
    assert_clean(cluster)


def test_node_name_gns3_refuses(bundle: Path, cluster: Cluster, tmp_path: Path) -> None:
    # Valid in a lab file (and locally), not for GNS3: QEMU node names are RFC 1123 host names.
    lab_file = write_lab(tmp_path, "badname", {"ok1": {"appliance": str(bundle)},
                                               "not_ok": {"appliance": str(bundle)}},
                         ["ok1:eth0 -- not_ok:eth0"])
    done = cli("lab", "up", lab_file, "--server", cluster.controller.url, "--no-start")
    one_error_line(done, "creating node not_ok", "invalid name")
    assert_clean(cluster)


def test_external_udp_link_refused(bundle: Path, cluster: Cluster, tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "external", {"n1": {"appliance": str(bundle)}},
                         ["n1:eth0 -- udp:127.0.0.1:40001:40000"])
    one_error_line(cli("lab", "up", lab_file, "--server", cluster.controller.url),
                   "leaves the lab", "cloud")
    assert_clean(cluster)


def test_published_ports_refused(bundle: Path, cluster: Cluster, tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, "published",
                         {"n1": {"appliance": str(bundle), "publish": ["18080:80"]}}, [])
    one_error_line(cli("lab", "up", lab_file, "--server", cluster.controller.url),
                   "publishes ports", "NAT")
    assert_clean(cluster)


def failing_link_lab(bundle: Path, folder: Path, name: str) -> spec.Lab:
    """A lab whose link GNS3 refuses: adapter 3 of a one-adapter node. The lab file's own
    checks refuse that, so the Lab is changed after loading: the refusal is the server's."""
    lab = spec.load(write_lab(folder, name, {"f1": {"appliance": str(bundle)},
                                             "f2": {"appliance": str(bundle),
                                                    "compute": "remote1"}},
                              ["f1:eth0 -- f2:eth0"]))
    bad = spec.Link(text="f1:eth0 -- f2:eth3", a=("f1", 0), b=("f2", 3))
    return dataclasses.replace(lab, links=(bad,))


def test_failing_link_deletes_the_project_it_made(bundle: Path, cluster: Cluster,
                                                  tmp_path: Path) -> None:
    lab = failing_link_lab(bundle, tmp_path, "failinglink")
    with pytest.raises(MinivmError, match="creating link f1:eth0 -- f2:eth3") as caught:
        gns3.up(lab, client(cluster), start=False)
    assert "\n" not in str(caught.value)
    assert_clean(cluster)


def test_failing_link_leaves_an_existing_project_as_it_was(bundle: Path, cluster: Cluster,
                                                           tmp_path: Path) -> None:
    made = gs.api(cluster.controller, "POST", "/projects", json={"name": "keptproject"}).json()
    pid = made["project_id"]
    try:
        lab = failing_link_lab(bundle, tmp_path, "keptproject")
        with pytest.raises(MinivmError, match="creating link"):
            gns3.up(lab, client(cluster), start=False)
        assert [p["project_id"] for p in projects(cluster.controller)] == [pid]
        assert gs.api(cluster.controller, "GET", f"/projects/{pid}/nodes").json() == []
        assert gs.api(cluster.controller, "GET", f"/projects/{pid}/links").json() == []
    finally:
        gs.api(cluster.controller, "DELETE", f"/projects/{pid}")
    assert projects(cluster.controller) == []


def test_node_properties_follow_the_lab_file(bundle: Path, tmp_path: Path) -> None:
    """node_properties is read off the local Machine: a lab node's overrides reach it."""
    lab = spec.load(write_lab(tmp_path, "props", {
        "p1": {"appliance": str(bundle), "ram": 200, "append": "foo=bar", "compute": "c9"},
        "p2": {"appliance": str(bundle)}}, []))
    assert lab.nodes["p1"].compute == "c9" and lab.nodes["p2"].compute is None
    props = gns3.node_properties(lab, "p1")
    app = reader.load(bundle)
    assert lab.nodes["p1"].append.endswith("foo=bar")
    assert props["ram"] == 200 and props["kernel_command_line"] == \
        f"{app.kernel_command_line} {lab.nodes['p1'].append}"


def test_segment_is_an_ethernet_switch_with_a_link_per_member(bundle: Path, cluster: Cluster,
                                                              tmp_path: Path) -> None:
    """A network becomes GNS3's ethernet_switch with one port and one link per member, and
    each node's kernel arguments carry its address and its peers' names. Made with
    --no-start: starting QEMU nodes needs uBridge, and the switch Dynamips (a stand-in here
    when the host has none: it answers GNS3 but passes no frames)."""
    path = tmp_path / "seg.yaml"
    app = str(bundle)
    path.write_text(json.dumps({
        "nodes": {"s1": {"appliance": app}, "s2": {"appliance": app},
                  "s3": {"appliance": app, "compute": "remote1"}},
        "networks": {"lan": {"subnet": "10.77.0.0/24",
                             "members": ["s1:eth0", "s2:eth0", "s3:eth0"]}}}))
    url = cluster.controller.url
    up = cli("lab", "up", path, "--server", url, "--no-start", "--json")
    assert up.returncode == 0, up.stderr
    try:
        pid = json.loads(up.stdout)["project_id"]
        nodes = {n["name"]: n for n in gs.api(cluster.controller, "GET",
                                              f"/projects/{pid}/nodes").json()}
        switch = nodes["lan"]
        assert switch["node_type"] == "ethernet_switch"
        assert [p["port_number"] for p in switch["properties"]["ports_mapping"]] == [0, 1, 2]
        assert switch["compute_id"] == "local"
        links = gs.api(cluster.controller, "GET", f"/projects/{pid}/links").json()
        ends = sorted(tuple(sorted((nodes_by_id(nodes)[e["node_id"]], e["adapter_number"],
                                    e["port_number"]) for e in link["nodes"]))
                      for link in links)
        assert ends == [(("lan", 0, 0), ("s1", 0, 0)), (("lan", 0, 1), ("s2", 0, 0)),
                        (("lan", 0, 2), ("s3", 0, 0))]
        args = nodes["s2"]["properties"]["kernel_command_line"]
        assert "ip=10.77.0.2/24:::::eth0:off" in args and "add_host=s1:10.77.0.1,s3:10.77.0.3" \
            in args
        status = json.loads(cli("lab", "status", path, "--server", url, "--json").stdout)
        assert status["networks"]["lan"]["node_id"] == switch["node_id"]
        assert status["nodes"]["s3"]["addresses"] == {"eth0": "10.77.0.3/24"}
        again = cli("lab", "up", path, "--server", url, "--no-start", "--json")
        assert again.returncode == 0, again.stderr
        after = {n["name"]: n["node_id"] for n in gs.api(cluster.controller, "GET",
                                                        f"/projects/{pid}/nodes").json()}
        assert after == {name: n["node_id"] for name, n in nodes.items()}  # all reused
        assert len(gs.api(cluster.controller, "GET", f"/projects/{pid}/links").json()) == 3
    finally:
        down = cli("lab", "down", path, "--server", url, "--delete")
    assert down.returncode == 0, down.stderr
    assert_clean(cluster)


def nodes_by_id(nodes: dict[str, dict[str, object]]) -> dict[object, str]:
    return {n["node_id"]: name for name, n in nodes.items()}

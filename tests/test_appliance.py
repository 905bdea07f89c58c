"""GNS3 appliance bundles: rendering, GNS3's own validators, --check, errors, a GNS3-style boot.

Fast tests use a small project (MINIVM_HOME, MINIVM_BUILD_DIR in tmp) with real files: a real
QCOW2 root and kit files with real md5s. The GNS3 validators run from a separate venv
(tests/gns3_env.py). Engine/boot tests build alpine-minivm's look-alike and debian-minivm for
real and boot the bundle from the .gns3a alone, with the one command-line builder
(minivm/qemu.py) as GNS3 would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from minivm.errors import MinivmError
from minivm.gns3 import appliance, docker_node, metadata, reader, render
from minivm.gns3.bundle import Bundle
from minivm.gns3.machine import machine_from_appliance
from minivm.image import build
from minivm.kinds import ConsoleKind
from minivm.kit import kernel
from minivm.ui import QUIET
from minivm.vm import qemu, vmctl
from tests import gns3_env
from tests.cli import cli
from tests.fakeproject import KVER, make_build, make_kit
from tests.imagefactory import alpine_lookalike
from tests.vm import VM


def gns3a(bundle: Bundle) -> dict:
    """The JSON of a bundle's .gns3a, as GNS3 reads it."""
    return json.loads(bundle.path.read_text())


REPO = Path(__file__).resolve().parent.parent
HOSTILE = {
    "name": 'My "router" \\ ünï€ode\nsecond line',
    "description": 'quotes " and \\backslash\\, </script> & tabs\t, emoji 🐧, "{{ x }}" {% y %}',
    "usage": 'Line one\nLine "two" with \\n literally and \u2028 separator',
    "kernel_args": 'foo="a b" bar=\\x ünï hostname=r1',
}


# --- rendering and GNS3's validators ----------------------------------------------------------

def test_bundle_is_whole_versioned_and_valid_for_gns3(project: Path) -> None:
    folder = make_build(project, "r1")
    bundle = appliance.write_bundle("r1", reporter=QUIET)
    data = json.loads(bundle.path.read_text())
    assert bundle.path == folder / "r1.gns3a"
    assert data["registry_version"] == 6 and data["category"] == "guest"
    assert data["appliance_id"] == str(uuid.uuid5(render.ID_NAMESPACE, "r1"))
    q = data["qemu"]
    assert q["kernel_command_line"] == \
        "console=ttyS0 root=LABEL=minivm-root rw quiet no_timer_check"
    assert (q["adapter_type"], q["adapters"], q["console_type"], q["kvm"], q["on_close"]) == \
        ("virtio-net-pci", 1, "telnet", "allow", "shutdown_signal")
    assert q["hda_disk_interface"] == q["hdb_disk_interface"] == "scsi"
    assert "single" in data["usage"] and "init=/bin/sh" in data["usage"]
    names = {i["filename"] for i in data["images"]}
    assert names == {"r1-ab12ab12ab12.qcow2", f"vmlinuz-{KVER}", f"initrd-{KVER}-aaaaaaaaaaaa.img",
                     f"modules-{KVER}-aaaaaaaaaaaa.qcow2"}
    for image in data["images"]:  # exact md5 and size of the file beside the .gns3a
        path = folder / image["filename"]
        assert image["filesize"] == path.stat().st_size
        assert image["md5sum"] == hashlib.md5(path.read_bytes()).hexdigest()
    kit = kernel.current()
    assert kit is not None
    assert (folder / kit.kernel.name).stat().st_ino == kit.kernel.stat().st_ino  # hard link
    assert set(data["versions"][0]["images"].values()) == names
    assert gns3_env.validate([bundle.path]) == {str(bundle.path): {"server": None, "gui": None,
                                                             "strict": None}}
    appliance.check_bundle(bundle.path)


def test_hostile_values_are_escaped_exactly(project: Path) -> None:
    (project / "appliances" / "evil.yaml").write_text(json.dumps(HOSTILE))  # JSON is YAML
    make_build(project, "evil", labels={"org.opencontainers.image.vendor": 'Ven"dor\\ ü'})
    bundle = appliance.write_bundle("evil", reporter=QUIET)
    data = json.loads(bundle.path.read_text(encoding="utf-8"))
    assert data["name"] == HOSTILE["name"]
    assert data["description"] == HOSTILE["description"]
    assert data["usage"].startswith(HOSTILE["usage"])
    assert data["vendor_name"] == 'Ven"dor\\ ü'
    assert data["qemu"]["kernel_command_line"].endswith(" " + HOSTILE["kernel_args"])
    assert data["appliance_id"] == render.appliance_id("evil")
    assert gns3_env.validate([bundle.path])[str(bundle.path)] == {"server": None, "gui": None,
                                                            "strict": None}
    appliance.check_bundle(bundle.path)


def test_metadata_layers_and_category(project: Path) -> None:
    context = project / "ctx"
    context.mkdir()
    (context / "appliance.yaml").write_text("category: switch\nram: 96\nadapters: 8\n"
                                            "disk_interface: virtio\nkernel_args: [a=1, b=2]\n")
    (project / "appliances" / "sw.yaml").write_text("adapters: 16\n")
    make_build(project, "sw", source=str(context),
               labels={"minivm.appliance.symbol": "ethernet_switch.svg",
                       "minivm.appliance.ram": "128",
                       "org.opencontainers.image.description": "from a label"})
    data = gns3a(appliance.write_bundle("sw", reporter=QUIET))
    assert data["category"] == "multilayer_switch"  # v6 schema has no plain "switch"
    assert data["description"] == "from a label"
    assert data["symbol"] == "ethernet_switch.svg"
    q = data["qemu"]
    assert (q["ram"], q["adapters"], q["hda_disk_interface"]) == (96, 16, "virtio")
    assert q["kernel_command_line"].endswith("quiet no_timer_check a=1 b=2")


def test_same_name_same_id_and_rewrite_drops_stale_kit_files(project: Path) -> None:
    folder = make_build(project, "r1")
    first = appliance.write_bundle("r1", reporter=QUIET)
    make_kit(project / "cache" / "kernel", "bbbbbbbbbbbb")
    second = appliance.write_bundle("r1", reporter=QUIET)
    assert first.appliance_id == second.appliance_id == gns3a(second)["appliance_id"]
    assert (folder / ".r1.gns3a.inputs").is_file()  # what the bundle was made from
    left = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert left == sorted(["build.json", "r1.gns3a", "r1-ab12ab12ab12.qcow2", f"vmlinuz-{KVER}",
                           f"initrd-{KVER}-bbbbbbbbbbbb.img",
                           f"modules-{KVER}-bbbbbbbbbbbb.qcow2"])
    appliance.check_bundle(second.path)


# --- --check ----------------------------------------------------------------------------------

def test_check_catches_a_tampered_file_in_one_line(project: Path) -> None:
    make_build(project, "r1")
    bundle = appliance.write_bundle("r1", reporter=QUIET)
    ok = cli("appliance", "--check", str(bundle.path))
    assert ok.returncode == 0, ok.stderr
    root = bundle.path.parent / "r1-ab12ab12ab12.qcow2"
    with root.open("r+b") as f:  # same size, one byte changed
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = cli("appliance", "--check", str(bundle.path))
    assert bad.returncode != 0
    assert bad.stderr.count("\n") == 1 and "md5" in bad.stderr and "r1-ab12" in bad.stderr
    root.unlink()
    gone = cli("appliance", "--check", str(bundle.path))
    assert gone.returncode != 0 and "missing" in gone.stderr and gone.stderr.count("\n") == 1


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d.update(foo=1), "'foo'"),
    (lambda d: d["qemu"].update(bogus=True), "'bogus'"),
    (lambda d: d.update(category="toaster"), "category"),
    (lambda d: d["qemu"].update(ram="256"), "qemu.ram"),
    (lambda d: d["qemu"].update(options="-drive file=x"), "-drive"),
    (lambda d: d["qemu"].update(kernel_command_line="root=/dev/sda rw"), "console=ttyS0"),
    (lambda d: d["qemu"].update(kernel_command_line="console=ttyS0 rw"), "root="),
    (lambda d: d["images"][0].update(md5sum="XYZ"), "md5sum"),
    (lambda d: d["versions"][0]["images"].update(initrd="nope.img"), "nope.img"),
    (lambda d: d.pop("maintainer_email"), "maintainer_email"),
])
def test_check_applies_gns3_rules(project: Path, edit, words: str) -> None:
    make_build(project, "r1")
    bundle = appliance.write_bundle("r1", reporter=QUIET)
    data = json.loads(bundle.path.read_text())
    edit(data)
    bundle.path.write_text(json.dumps(data))
    with pytest.raises(MinivmError, match=re.escape(words)):
        appliance.check_bundle(bundle.path)


def test_gns3_validators_reject_what_check_rejects(project: Path) -> None:
    """The separate venv really validates: an unknown key fails the strict schema (GNS3's server
    and GUI let it pass), a bad enum fails all three."""
    make_build(project, "r1")
    bundle = appliance.write_bundle("r1", reporter=QUIET)
    data = json.loads(bundle.path.read_text())
    extra = bundle.path.with_name("extra.gns3a")
    extra.write_text(json.dumps({**data, "foo": 1}))
    enum = bundle.path.with_name("enum.gns3a")
    enum.write_text(json.dumps({**data, "qemu": {**data["qemu"], "console_type": "serial"}}))
    result = gns3_env.validate([extra, enum])
    assert result[str(extra)] == {
        "server": None, "gui": None,
        "strict": "[]: Additional properties are not allowed ('foo' was unexpected)"}
    refused = result[str(enum)]
    assert refused["gui"] == refused["strict"] == (
        "['qemu', 'console_type']: 'serial' is not one of "
        "['telnet', 'vnc', 'spice', 'spice+agent', 'none']")
    assert refused["server"].splitlines()[:3] == [
        "1 validation error for Appliance", "qemu.console_type",
        "  Input should be 'telnet', 'vnc', 'spice', 'spice+agent' or 'none' "
        "[type=enum, input_value='serial', input_type=str]"]


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "words"), [
    ("colour: red\n", "unknown key 'colour'"),
    ("ram: lots\n", "key 'ram' must be an integer"),
    ("ram: true\n", "key 'ram' must be an integer"),
    ("ram: 8\n", "key 'ram' is 8, outside"),
    ("adapters: 1.5\n", "key 'adapters' must be an integer"),
    ("category: toaster\n", "key 'category' is 'toaster', not one of"),
    ("disk_interface: nvme\n", "key 'disk_interface'"),
    ("kernel_args: \"a\\nb\"\n", "key 'kernel_args' holds a control character"),
    ("kernel_args: 5\n", "key 'kernel_args' must be a string or a list"),
    ("options: -drive file=/etc/passwd\n", "-drive is not allowed"),
    ("vendor_url: not a url\n", "key 'vendor_url' must be an http(s) URL"),
    ("description: [1, 2\n", "not valid YAML"),
    ("- a list\n", "expected `key: value`"),
])
def test_metadata_errors_name_key_and_file(project: Path, text: str, words: str) -> None:
    path = project / "appliances" / "r1.yaml"
    path.write_text(text)
    make_build(project, "r1")
    with pytest.raises(MinivmError) as info:
        appliance.write_bundle("r1", reporter=QUIET)
    assert words in str(info.value) and str(path) in str(info.value)
    assert not (project / "build" / "r1" / "r1.gns3a").exists()  # nothing half-written


def test_bad_label_names_label_and_image(project: Path) -> None:
    make_build(project, "r1", labels={"minivm.appliance.ram": "much"})
    with pytest.raises(MinivmError, match=r"image r1, label minivm\.appliance\.ram: key 'ram'"):
        appliance.write_bundle("r1", reporter=QUIET)


def test_errors_for_unknown_unbuilt_and_missing(project: Path) -> None:
    result = cli("appliance", "nosuch")
    assert result.returncode != 0 and "unknown appliance 'nosuch'" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    (project / "images" / "shipped").mkdir()
    result = cli("appliance", "shipped")
    assert "run `minivm build shipped`" in result.stderr
    folder = make_build(project, "r1")
    (folder / "r1-ab12ab12ab12.qcow2").unlink()
    assert "run `minivm build r1`" in cli("appliance", "r1").stderr
    make_build(project, "r2")
    shutil.rmtree(project / "cache" / "kernel")
    result = cli("appliance", "r2")
    assert result.returncode != 0 and "run `minivm kernel build`" in result.stderr
    assert cli("appliance").returncode != 0  # neither NAME nor --check


def test_build_without_kit_says_what_to_do(project: Path, capsys) -> None:
    folder = make_build(project, "r1")
    shutil.rmtree(project / "cache" / "kernel")
    from minivm.ui import Reporter
    assert appliance.after_build("r1", folder=folder, reporter=Reporter()) is None
    assert "minivm kernel build" in capsys.readouterr().err


def test_shipped_metadata_files_are_valid() -> None:
    files = sorted((REPO / "images").glob("*/appliance.yaml"))
    assert files, "no shipped appliance.yaml"
    for path in files:
        meta = metadata.load_metadata(path)
        assert meta.description, path


def test_json_output(project: Path) -> None:
    make_build(project, "r1")
    result = cli("appliance", "r1", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["gns3a"].endswith("r1/r1.gns3a") and len(out["files"]) == 4
    checked = json.loads(cli("appliance", "--check", out["gns3a"], "--json").stdout)
    assert checked["ok"] is True and checked["total_bytes"] == out["total_bytes"]


# --- the shipped images, built for real ---------------------------------------------------------


@pytest.fixture(scope="session")
def shipped_bundles(tmp_path_factory: pytest.TempPathFactory, kit: kernel.Kit) -> dict:
    """Bundles of alpine-minivm's look-alike and debian-minivm, built for real."""
    out = tmp_path_factory.mktemp("shipped")
    context = alpine_lookalike(out / "ctx")
    bundles = {}
    for name, source in (("alpine-minivm", str(context)), ("debian-minivm", "debian-minivm")):
        result = build.build(source, reporter=QUIET, output_dir=out / "build")
        assert result.name == name
        bundles[name] = appliance.write_bundle(name, reporter=QUIET, folder=result.folder,
                                               kit=kit)
    return bundles


@pytest.mark.engine
def test_shipped_bundles_validate(shipped_bundles: dict, docker_api) -> None:
    """Both appliances of each shipped image: the QEMU bundle and the Docker node."""
    nodes = {name: docker_node.write_appliance(name, reporter=QUIET, folder=b.path.parent)
             for name, b in shipped_bundles.items()}
    try:
        paths = [b.path for b in shipped_bundles.values()] + [n.path for n in nodes.values()]
        assert len(paths) == 4
        for path, checks in gns3_env.validate(paths).items():
            assert checks == {"server": None, "gui": None, "strict": None}, path
        for name, bundle in shipped_bundles.items():
            appliance.check_bundle(bundle.path)
            assert gns3a(bundle)["qemu"]["ram"] <= 256
            checked = appliance.check_bundle(nodes[name].path)
            node = gns3a(checked)
            assert checked.docker_image == node["docker"]["image"]
            image = docker_api.inspect_image(node["docker"]["image"])["Id"]
            assert image.split(":")[1].startswith(node["docker"]["image"].rsplit(":", 1)[1])
            assert (node["name"], node["description"]) == \
                (gns3a(bundle)["name"], gns3a(bundle)["description"])
    finally:
        for node_bundle in nodes.values():
            if node_bundle is not None and node_bundle.docker_image:
                docker_api.remove_image(node_bundle.docker_image)


@pytest.mark.engine
@pytest.mark.boot
@pytest.mark.parametrize("name", ["alpine-minivm", "debian-minivm"])
def test_boot_the_bundle_as_gns3_does(shipped_bundles: dict, name: str, tmp_path: Path) -> None:
    """From the .gns3a alone: linked-clone overlays, its disk interfaces, its -append, NICs
    behind the PCI bridge; reaches the main process; system_powerdown stops QEMU cleanly."""
    bundle = shipped_bundles[name]
    app = reader.load(bundle.path)
    disks = qemu.create_overlays(app.images, tmp_path)
    backing = subprocess.run(["qemu-img", "info", "--output=json", str(disks[0])],
                             capture_output=True, text=True, check=True)
    assert json.loads(backing.stdout)["backing-filename"].endswith(app.disks[0][0].name)
    qmp = tmp_path / "qmp.sock"
    machine = machine_from_appliance(app, name="n1", node_id=uuid.uuid4(), disks=disks,
                                     console=qemu.Console(ConsoleKind.STDIO), qmp=qmp)
    argv = qemu.command_line(machine)
    assert argv[argv.index("-append") + 1] == gns3a(bundle)["qemu"]["kernel_command_line"]
    assert "pci-bridge1" in " ".join(argv) and f"{machine.ram}M" in argv
    with VM(argv, log=tmp_path / "console.log") as vm:
        vm.expect(r"Welcome to .*a MiniVM", timeout=180)
        vm.expect(r"[#$] ", timeout=30)
        vmctl.powerdown(qmp)  # GNS3's stop: the ACPI power button
        assert vm.wait_exit(timeout=60) == 0  # the guest powered off; QEMU was not killed
    appliance.check_bundle(bundle.path)  # the appliance's own files were never written


def test_unchanged_bundle_is_reused_and_a_changed_input_rewrites_it(project: Path) -> None:
    make_build(project, "r1")
    first = appliance.write_bundle("r1", reporter=QUIET)
    stamp = first.path.stat().st_mtime_ns
    again = appliance.write_bundle("r1", reporter=QUIET)
    assert again.path.stat().st_mtime_ns == stamp and again.files == first.files
    (project / "appliances" / "r1.yaml").write_text("ram: 128\n")  # the user's metadata
    changed = appliance.write_bundle("r1", reporter=QUIET)
    assert gns3a(changed)["qemu"]["ram"] == 128


def test_metadata_record_names_every_metadata_key() -> None:
    assert [f.name for f in dataclasses.fields(metadata.Metadata)] == list(metadata.METADATA_KEYS)
    checked = metadata.check_metadata({"adapters": 0, "kernel_args": ["a", "b"]}, where="t")
    assert checked.to_json() == {"adapters": 0, "kernel_args": "a b"}
    assert metadata.Metadata.from_json(checked.to_json()) == checked


def test_later_metadata_wins_key_by_key() -> None:
    weak = metadata.Metadata(ram=64, description="weak", symbol="router.svg")
    strong = metadata.Metadata(ram=128, description=None)
    assert strong.over(weak) == metadata.Metadata(ram=128, description="weak",
                                                  symbol="router.svg")

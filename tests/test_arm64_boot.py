"""linux/arm64 MiniVMs for real, under TCG on this host: the arm64 kit (cross-compiled here,
re-derived byte-identical, a cache hit the second time), alpine-minivm's look-alike built for
arm64 and booted with qemu-system-aarch64 on `virt` (recovery with `single` and
`init=/bin/sh`), a lab that mixes an amd64 and an arm64 node (ping over their UDP-tunnel
link, exec, a 20 MB cp round trip, both stopped by their power key, clean filesystems), and
the aarch64 appliance validated by GNS3's own model and schema, then run by a real GNS3
server."""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minivm import lab
from minivm.kit import initramfs, kernel
from minivm.platforms import ARM64, host
from minivm.ui import QUIET
from tests import gns3_env
from tests import gns3_server as gs
from tests.cli import MINIVM, cli
from tests.labs import (
    READY,
    fsck_overlay,
    ip,
    lookalike_bundle,
    run_single_then_resume,
    sh,
    write_lab,
)
from tests.marks import fixture
from tests.ports import free_port
from tests.terminal import Terminal

REPO = Path(__file__).resolve().parent.parent
ELF_AARCH64 = 183  # e_machine
ARM64_IMAGE_MAGIC = b"ARM\x64"  # at offset 56 of arm64's Image (Documentation/arm64/booting)

pytestmark = pytest.mark.skipif(host() is ARM64, reason="these check arm64 as a foreign "
                                "platform (cross-compiled kit, TCG, binfmt builds)")


@fixture("engine", scope="module")
def arm64_kit() -> kernel.Kit:
    """The arm64 kit (the minimal flavour), built once and then reused from the cache."""
    return kernel.build(reporter=QUIET, platform=ARM64)


@fixture("engine", scope="module")
def arm64_bundle(arm64_kit: kernel.Kit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpine-minivm's look-alike for linux/arm64 as a .gns3a bundle booting the arm64 kit."""
    return lookalike_bundle(tmp_path_factory.mktemp("arm64"), arm64_kit)


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF", data[:16]
    return int.from_bytes(data[18:20], "little")


def test_arm64_kit_is_aarch64_reproducible_and_cached(arm64_kit: kernel.Kit,
                                                      tmp_path: Path) -> None:
    kit = arm64_kit
    assert kit.platform is ARM64 and kit.flavour == "minimal"
    assert (kernel.kits_dir() / "current-arm64").resolve() == kit.folder.resolve()
    assert gzip.decompress(kit.kernel.read_bytes())[56:60] == ARM64_IMAGE_MAGIC
    entries = {e.path: e for e in initramfs.read_cpio(
        initramfs.decompress(kit.initrd.read_bytes()))}
    assert elf_machine(entries["bin/busybox"].data) == ELF_AARCH64
    config = (kit.folder / f"config-{kit.kernel_version}").read_text().splitlines()
    for line in ("CONFIG_ARM64=y", "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y",
                 "CONFIG_KEYBOARD_GPIO=y", "CONFIG_VIRTIO_BLK=y", "CONFIG_WIREGUARD=m"):
        assert line in config, line
    # Everything re-derived from the recipe's image gives the same bytes...
    again = kernel.build(reporter=QUIET, force=True, output_root=tmp_path / "kits",
                         platform=ARM64, make_current=False)
    assert not again.cached
    for role in ("kernel", "initrd", "modules"):
        assert again.manifest.files[role].md5 == kit.manifest.files[role].md5, role
    # ... and the next build is the cached kit, which the amd64 kit did not replace.
    done = cli("kernel", "build", "--platform", "linux/arm64", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cached"] is True and Path(report["folder"]) == kit.folder
    assert kernel.current() is not None and kernel.current().platform.arch == "amd64"


@pytest.mark.boot
def test_arm64_minivm_single_then_resumes_to_its_main_process(arm64_bundle: Path) -> None:
    run_single_then_resume(arm64_bundle, check=b"uname -m; echo $((6*7))",
                           shows=rb"aarch64\s+42")


@pytest.mark.boot
def test_arm64_init_sh_is_a_shell_on_the_root(arm64_bundle: Path) -> None:
    with Terminal([*MINIVM, "run", arm64_bundle, "--append", "init=/bin/sh"],
                  cwd=REPO) as term:
        term.expect(rb"\n/ # ", 180)  # the root's shell, at its root
        term.send(b"echo PID-$$; test -x /etc/init.sh && echo HAS-MAIN\r")
        term.expect(rb"PID-1\s+HAS-MAIN", 30)
        assert b"Welcome to" not in term.output  # the image's main process did not start
        term.send(b"\x1d")
        assert term.wait(timeout=60) == 0


@pytest.fixture
def mixed_lab(bundle: Path, arm64_bundle: Path, tmp_path: Path) -> Iterator[Path]:
    """A lab of an amd64 node (x86) and an arm64 node (arm), linked eth0 to eth0, up."""
    path = write_lab(tmp_path, bundle, {"x86": ip("10.0.7.1/24"), "arm": ip("10.0.7.2/24")},
                     ["x86:eth0 -- arm:eth0"])
    spec = json.loads(path.read_text())
    spec["nodes"]["arm"].update(appliance=str(arm64_bundle), publish=[f"{free_port()}:8000"])
    path.write_text(json.dumps(spec))
    up = cli("lab", "up", path, "--wait", READY, "--json", timeout=600)
    try:
        assert up.returncode == 0, up.stderr
        yield path
    finally:
        cli("lab", "down", path)


@pytest.mark.boot
def test_mixed_lab_ping_exec_cp_and_power_keys(mixed_lab: Path, tmp_path: Path) -> None:
    path = mixed_lab
    assert sh(path, "arm", "uname -m").strip() == "aarch64"
    assert sh(path, "x86", "uname -m").strip() == "x86_64"
    assert " 0% packet loss" in sh(path, "x86", "ping -c 3 -W 5 10.0.7.2", timeout=120)
    assert " 0% packet loss" in sh(path, "arm", "ping -c 3 -W 5 10.0.7.1", timeout=120)

    data = os.urandom(20 << 20)
    (tmp_path / "payload").write_bytes(data)
    sent = cli("lab", "cp", path, tmp_path / "payload", "arm:/root/payload", timeout=600)
    assert sent.returncode == 0, sent.stderr
    assert sh(path, "arm", "wc -c < /root/payload").strip() == str(len(data))
    back = cli("lab", "cp", path, "arm:/root/payload", tmp_path / "back", timeout=600)
    assert back.returncode == 0, back.stderr
    assert (tmp_path / "back").read_bytes() == data

    # a published port of the arm64 node (QEMU's user network on `virt`)
    sh(path, "arm", "(echo via-arm | nc -l -p 8000 >/dev/null 2>&1 &)")
    port = int(json.loads(path.read_text())["nodes"]["arm"]["publish"][0].split(":")[0])
    assert read_port(port) == b"via-arm\n"

    down = cli("lab", "down", path, "--json", timeout=300)
    assert down.returncode == 0, down.stderr
    # each powered off by its power key (ACPI's on x86, the gpio-keys KEY_POWER on `virt`)
    assert json.loads(down.stdout)["stopped"] == {"x86": "acpi", "arm": "acpi"}
    for node in ("x86", "arm"):
        fsck_overlay(lab.node_dir(path.parent / "lab.state", node) / "hda_disk.qcow2",
                     tmp_path)


def read_port(port: int, timeout: float = 60) -> bytes:
    """What a TCP server behind 127.0.0.1:``port`` sends; QEMU's user network accepts before
    the guest listens (and then closes at once), so empty answers are tried again."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            data = b"".join(iter(lambda: s.recv(4096), b""))
        if data or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


def test_arm64_appliance_passes_gns3s_validators(arm64_bundle: Path) -> None:
    data = json.loads(arm64_bundle.read_text())
    assert data["qemu"]["arch"] == "aarch64"
    assert data["qemu"]["options"].startswith("-machine virt,gic-version=max -cpu max")
    assert gns3_env.validate([arm64_bundle]) == {
        str(arm64_bundle): {"server": None, "gui": None, "strict": None}}


@pytest.mark.gns3
def test_arm64_node_runs_on_a_gns3_server(arm64_bundle: Path, tmp_path: Path) -> None:
    """GNS3 3.0.6 imports the appliance and starts the node with qemu-system-aarch64 (TCG)
    to its main process."""
    with gs.running(tmp_path / "gns3", host="127.0.0.5",
                    ranges=(39000, 39499, 39500, 39999)) as server:
        lab_file = tmp_path / "armlab.yaml"
        lab_file.write_text(json.dumps({"nodes": {"a1": {"appliance": str(arm64_bundle)}}}))
        up = gs.minivm("lab", "up", lab_file, "--server", server.url, "--wait", READY,
                     "--timeout", "300", "--json")
        try:
            assert up.returncode == 0, up.stderr
            assert json.loads(up.stdout)["nodes"]["a1"]["status"] == "started"
            qemu = [p for p in Path("/proc").glob("[0-9]*")
                    if b"qemu-system-aarch64" in _cmdline(p) and b"a1" in _cmdline(p)]
            assert qemu, "no qemu-system-aarch64 runs the node"
        finally:
            down = gs.minivm("lab", "down", lab_file, "--server", server.url, "--delete")
        assert down.returncode == 0, down.stderr


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""

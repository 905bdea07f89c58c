"""The shipped image contexts (images/alpine-minivm, images/debian-minivm): as plain Docker
containers, and as MiniVMs. Alpine's mirror is unreachable here, so alpine-minivm is tested
through a look-alike with the same etc/ on a busybox base."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from minivm.paths import images_dir
from minivm.vm import vmctl
from tests import imagefactory
from tests.initvm import boot, build_disk, fsck, writable_copy

KEYS = {"name", "description", "category", "symbol", "usage", "adapters", "ram", "kernel_args",
        "disk_interface"}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image-builds")


@pytest.fixture(scope="module")
def alpine_lookalike(out) -> Path:
    """images/alpine-minivm's etc/ on the busybox base (what its Dockerfile does, minus apk)."""
    return imagefactory.alpine_lookalike(out)


def docker_build(ctx: Path, tag: str) -> None:
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True,
                   capture_output=True)


def docker_run_shell(tag: str) -> str:
    """`docker run -i` the image, type two commands at its shell; return what it printed."""
    proc = subprocess.run(["docker", "run", "--rm", "-i", tag], input="echo INSIDE-$((6*7))\n"
                          "cat /etc/hostname\nexit\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("name", ["alpine-minivm", "debian-minivm"])
def test_metadata(name):
    data = yaml.safe_load((images_dir() / name / "appliance.yaml").read_text())
    assert set(data) == KEYS
    assert data["name"] == name and data["category"] == "guest"
    # ram: the smallest that boots 3/3 under TCG (bench/appliance_ram.py), never below 64 MB
    assert data["adapters"] >= 1 and data["ram"] >= 64 and data["disk_interface"] == "scsi"


def test_alpine_lookalike_runs_in_docker(alpine_lookalike, image_tags):
    image_tags.append("minivm-test/alpine-lookalike:test")
    docker_build(alpine_lookalike, image_tags[-1])
    output = docker_run_shell(image_tags[-1])
    assert "a Docker container" in output and "INSIDE-42" in output


def test_debian_minivm_runs_in_docker(image_tags):
    image_tags.append("minivm-test/debian-minivm:test")
    docker_build(images_dir() / "debian-minivm", image_tags[-1])
    output = docker_run_shell(image_tags[-1])
    assert "a Docker container" in output and "INSIDE-42" in output


@pytest.mark.boot
def test_alpine_lookalike_as_minivm(kit, alpine_lookalike, out, tmp_path):
    disk = writable_copy(build_disk(alpine_lookalike, out).qcow2, tmp_path)
    qmp = tmp_path / "qmp.sock"
    with boot(kit, disk, qmp=qmp, user_nics=1) as vm:
        vm.expect("Welcome to alpine-minivm, a MiniVM", timeout=90)
        vm.expect(r"[#$] ", timeout=30)  # the shell's prompt: it reads what is typed now
        vm.sendline("echo INSIDE-$((6*7)) $(cat /etc/hosts | grep -c alpine-minivm)")
        vm.expect("INSIDE-42 1", timeout=30)
        # ifup -a with the image's /etc/network/interfaces; DHCP by the toolbox's udhcpc
        # (QEMU's user network answers as 10.0.2.2).
        vm.expect(r"lease of 10\.0\.2\.15 obtained", timeout=60)
        # udhcpc says "obtained" before its script sets the address: wait for the address.
        vm.sendline("for i in $(seq 100); do ip -4 addr show eth0 | grep -q 'inet ' && break;"
                    " sleep 0.1; done; ip -4 -o addr show eth0 | grep -o 'inet [0-9.]*'")
        vm.expect(r"inet 10\.0\.2\.15", timeout=30)
        vmctl.powerdown(qmp)
        vm.expect("power button: shutting down", timeout=30)  # the image's PWRF hook
        assert vm.wait_exit(timeout=10) == 0
    # ifup configures lo itself (the init leaves it down for it): no "File exists" noise.
    assert "RTNETLINK" not in vm.output
    assert fsck(disk).returncode == 0


@pytest.mark.boot
def test_debian_minivm_as_minivm(kit, out, tmp_path):
    disk = writable_copy(build_disk(images_dir() / "debian-minivm", out).qcow2, tmp_path)
    with boot(kit, disk, user_nics=1) as vm:
        vm.expect("Welcome to debian-minivm, a MiniVM", timeout=90)
        vm.sendline("for i in $(seq 100); do ip -4 addr show eth0 | grep -q 'inet ' && break;"
                    " sleep 0.1; done; ip -4 -o addr show eth0 | grep -o 'inet [0-9.]*'")
        vm.expect(r"inet 10\.0\.2\.15", timeout=60)
        vm.sendline("poweroff")  # Debian has none: the toolbox's, found on PATH
        assert vm.wait_exit(timeout=10) == 0
    assert fsck(disk).returncode == 0

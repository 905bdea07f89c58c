"""Platforms without an engine or a boot: Docker's names, archives of each platform and
multi-platform indexes, the kit's recipe and key per platform, aarch64 appliances and their
QEMU command line."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from minivm import platforms
from minivm.errors import MinivmError
from minivm.gns3 import reader
from minivm.gns3.machine import machine_from_appliance
from minivm.gns3.model import kernel_problems
from minivm.image.archive import open_archive
from minivm.kit import kernel
from minivm.paths import kernel_dir
from minivm.platforms import AMD64, ARM64
from minivm.vm import qemu
from tests.imagefactory import CONFIG, classic_archive, member, oci_layout

MINIVM = str(Path(sys.executable).with_name("minivm"))


@pytest.mark.parametrize(("text", "arch"), [
    ("linux/arm64", "arm64"), ("arm64", "arm64"), ("aarch64", "arm64"),
    ("linux/arm64/v8", "arm64"), ("LINUX/AMD64", "amd64"), ("x86_64", "amd64")])
def test_docker_platform_names(text: str, arch: str) -> None:
    assert platforms.parse(text).arch == arch


@pytest.mark.parametrize("text", ["linux/s390x", "windows/amd64", "", "linux/"])
def test_unknown_platform_is_refused_naming_the_choices(text: str) -> None:
    with pytest.raises(MinivmError, match="linux/amd64 or linux/arm64"):
        platforms.parse(text)


def test_platform_lists_and_names() -> None:
    assert platforms.parse_list("linux/amd64,linux/arm64,aarch64") == [AMD64, ARM64]
    assert platforms.parse_list(None) == [platforms.host()]
    assert AMD64.named("app") == "app" and ARM64.named("app") == "app-arm64"
    assert (ARM64.qemu, ARM64.console, ARM64.text) == ("qemu-system-aarch64", "ttyAMA0",
                                                        "linux/arm64")


# --- archives ---------------------------------------------------------------------------------

def arm64_archive(target: Path) -> Path:
    config = {**CONFIG, "architecture": "arm64", "variant": "v8"}
    return classic_archive(target, [[member("hello", b"arm64\n")]], config)


def test_archive_of_the_asked_platform_is_read(tmp_path: Path) -> None:
    archive = open_archive(arm64_archive(tmp_path / "a.tar"), ARM64)
    assert len(archive.layers) == 1


@pytest.mark.parametrize("layout", ["classic", "oci-dir"])
def test_wrong_architecture_archive_is_refused_naming_both(tmp_path: Path, layout: str) -> None:
    path = arm64_archive(tmp_path / "a.tar")
    if layout == "oci-dir":
        path = oci_layout(tmp_path / "oci", path, as_tar=False)
    with pytest.raises(MinivmError) as caught:
        open_archive(path, AMD64)
    assert "holds a linux/arm64 image, not linux/amd64" in str(caught.value)


def image_index(target: Path, archives: dict[str, Path]) -> Path:
    """An OCI layout whose index.json names an image index (as `docker buildx` writes): one
    manifest per platform, plus an attestation manifest (unknown/unknown)."""
    entries = []
    for arch, classic in archives.items():
        single = oci_layout(target / f".{arch}", classic, as_tar=False)
        for blob in (single / "blobs" / "sha256").iterdir():
            (target / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blob, target / "blobs" / "sha256" / blob.name)
        entry = json.loads((single / "index.json").read_text())["manifests"][0]
        entries.append({**entry, "platform": {"os": "linux", "architecture": arch}})
        shutil.rmtree(single)
    attestation = b'{"schemaVersion": 2}'
    digest = hashlib.sha256(attestation).hexdigest()
    (target / "blobs" / "sha256" / digest).write_bytes(attestation)
    entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{digest}", "size": len(attestation),
                    "platform": {"os": "unknown", "architecture": "unknown"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()
    index_digest = hashlib.sha256(index).hexdigest()
    (target / "blobs" / "sha256" / index_digest).write_bytes(index)
    (target / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": f"sha256:{index_digest}", "size": len(index)}]}))
    (target / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return target


def first_file(archive) -> bytes:
    with archive.layers[0].open() as f, tarfile.open(fileobj=gzip.GzipFile(fileobj=f)) as tar:
        member_file = tar.extractfile("hello")
        assert member_file is not None
        return member_file.read()


def test_multi_platform_index_gives_the_asked_platform(tmp_path: Path) -> None:
    amd = classic_archive(tmp_path / "amd.tar", [[member("hello", b"amd64\n")]])
    index = image_index(tmp_path / "index", {"amd64": amd, "arm64": arm64_archive(
        tmp_path / "arm.tar")})
    assert first_file(open_archive(index, ARM64)) == b"arm64\n"
    assert first_file(open_archive(index, AMD64)) == b"amd64\n"


def test_platform_the_index_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    amd = classic_archive(tmp_path / "amd.tar", [[member("hello", b"amd64\n")]])
    index = image_index(tmp_path / "index", {"amd64": amd})
    done = subprocess.run([MINIVM, "build", str(index), "--platform", "linux/arm64",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "has no linux/arm64 image (it has linux/amd64)" in done.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_architecture_archive_cli_one_line(tmp_path: Path) -> None:
    path = arm64_archive(tmp_path / "a.tar")
    done = subprocess.run([MINIVM, "build", str(path), "--platform", "linux/amd64",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.count("\n") == 1
    assert "holds a linux/arm64 image, not linux/amd64" in done.stderr
    assert not (tmp_path / "out").exists()


# --- the kernel kit per platform ----------------------------------------------------------------

def test_kit_recipe_per_platform() -> None:
    arm = kernel.load_config(kernel_dir(), "minimal", ARM64)
    assert arm.dockerfile == "arm64/Dockerfile" and arm.platform is ARM64
    assert kernel.load_config(kernel_dir(), "minimal", AMD64).dockerfile == "Dockerfile"
    with pytest.raises(MinivmError, match="'cloud' is not built for linux/arm64"):
        kernel.load_config(kernel_dir(), "cloud", ARM64)


def test_kit_keys_per_platform(tmp_path: Path) -> None:
    """Each platform has its own key; editing arm64's files leaves amd64's key alone."""
    source = tmp_path / "kernel"
    shutil.copytree(kernel_dir(), source)

    def keys() -> tuple[str, str]:
        return tuple(kernel.cache_key(source, kernel.load_config(source, "minimal", p), "base")
                     for p in (AMD64, ARM64))  # type: ignore[return-value]

    amd, arm = keys()
    assert amd != arm
    with (source / "minimal" / "arm64" / "minivm.config").open("a") as f:
        f.write("CONFIG_DUMMY=m\n")
    assert keys()[0] == amd and keys()[1] != arm


def test_current_kit_per_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIVM_CACHE_DIR", str(tmp_path))
    assert kernel.current_link(ARM64) == "current-arm64"
    assert kernel.current(ARM64) is None and kernel.current(AMD64) is None


# --- the aarch64 appliance and its QEMU command line ---------------------------------------------

def test_arm64_appliance_values() -> None:
    from minivm.cache import BuildRecord
    from minivm.gns3.metadata import Metadata
    from minivm.gns3.render import values

    record = BuildRecord(key="k", name="a-arm64", source="a", image_id="sha256:" + "1" * 64,
                         backend="mke2fs", outputs={}, platform="linux/arm64")
    meta = Metadata(vendor_url="https://example.com", maintainer="m",
                    maintainer_email="m@example.com", options="-device virtio-rng-pci")
    got = values("a-arm64", meta, record, version="v", files={})
    assert got["arch"] == "aarch64"
    assert got["kernel_command_line"].startswith("console=ttyAMA0 ")
    assert got["options"] == "-machine virt,gic-version=max -cpu max -device virtio-rng-pci"
    with pytest.raises(MinivmError, match="ide does not exist"):
        values("a-arm64", replace(meta, disk_interface="ide"), record, version="v", files={})


def test_aarch64_appliance_boots_with_qemu_system_aarch64_under_tcg(tmp_path: Path) -> None:
    if platforms.host() is ARM64:
        pytest.skip("KVM may run aarch64 guests on this host")
    for name in ("vmlinuz", "initrd", "root.qcow2"):
        (tmp_path / name).write_bytes(b"x")
    data = {"name": "a", "qemu": {"adapter_type": "virtio-net-pci", "adapters": 1, "ram": 256,
                                  "arch": "aarch64", "console_type": "telnet", "kvm": "allow",
                                  "hda_disk_interface": "scsi",
                                  "kernel_command_line": "console=ttyAMA0 root=LABEL=x",
                                  "options": "-machine virt,gic-version=max -cpu max"},
            "versions": [{"images": {"kernel_image": "vmlinuz", "initrd": "initrd",
                                     "hda_disk_image": "root.qcow2"}}]}
    app = reader.parse(data, tmp_path / "a.gns3a")
    m = machine_from_appliance(app, name="n", node_id=uuid.uuid4(),
                                    disks=[tmp_path / "root.qcow2"], accel="kvm")
    argv = qemu.command_line(m)
    assert argv[0] == "qemu-system-aarch64" and "tcg" in argv and "-enable-kvm" not in argv
    assert argv[-4:] == ["-machine", "virt,gic-version=max", "-cpu", "max"]
    problems = kernel_problems({"qemu": {**data["qemu"],
                                                   "kernel_command_line": "console=ttyS0 root=x"}})
    assert any("console=ttyAMA0" in p for p in problems)


def test_another_platforms_build_takes_the_images_metadata() -> None:
    """alpine-minivm-arm64 is alpine-minivm's build for arm64: the shipped image's metadata
    (its 64 MB of RAM among them) applies to it as to the amd64 build."""
    from minivm.cache import BuildRecord
    from minivm.gns3.metadata import metadata_files
    from minivm.paths import images_dir

    shipped = images_dir() / "alpine-minivm" / "appliance.yaml"
    for name, platform in (("alpine-minivm", "linux/amd64"), ("alpine-minivm-arm64",
                                                               "linux/arm64")):
        record = BuildRecord(key="k", name=name, source="alpine-minivm",
                             image_id="sha256:" + "1" * 64, backend="mke2fs", outputs={},
                             platform=platform)
        assert metadata_files(name, record)[0] == shipped, name

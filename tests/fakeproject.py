"""A small minivm project of real files for the appliance and Docker-node tests: MINIVM_HOME
with the repository's appliances/, a build folder, and a kernel kit made of small real files."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KVER = "6.1.0-99-test-amd64"

def make_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MINIVM_HOME with the repository's appliances/ (copied: tests may edit it), empty images/,
    a build dir, and a kernel kit made of small real files."""
    home = tmp_path / "home"
    shutil.copytree(REPO / "appliances", home / "appliances")
    (home / "images").mkdir()
    monkeypatch.setenv("MINIVM_HOME", str(home))
    monkeypatch.setenv("MINIVM_BUILD_DIR", str(home / "build"))
    monkeypatch.setenv("MINIVM_CACHE_DIR", str(home / "cache"))
    make_kit(home / "cache" / "kernel", "aaaaaaaaaaaa")
    return home


def make_kit(root: Path, tag: str) -> Path:
    folder = root / f"{KVER}-{tag}"
    folder.mkdir(parents=True)
    files = {"kernel": f"vmlinuz-{KVER}", "initrd": f"initrd-{KVER}-{tag}.img",
             "modules": f"modules-{KVER}-{tag}.qcow2"}
    manifest: dict = {"kernel_version": KVER, "key": tag, "packages": [], "files": {}}
    for role, name in files.items():
        (folder / name).write_bytes(f"{role} {tag}\n".encode() * 1000)
        data = (folder / name).read_bytes()
        manifest["files"][role] = {"name": name, "size": len(data),
                                   "md5": hashlib.md5(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    link = root / "current-amd64"
    link.unlink(missing_ok=True)
    link.symlink_to(folder.name)
    return folder


def make_build(home: Path, name: str, *, labels: dict[str, str] | None = None,
               source: str | None = None, image_id: str = "sha256:" + "ab12" * 16) -> Path:
    """What `minivm build NAME` leaves: build.json and a real (empty) QCOW2 root."""
    folder = home / "build" / name
    folder.mkdir(parents=True)
    root = folder / f"{name}-{image_id.split(':')[1][:12]}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "64M"], check=True)
    record = {"key": f"key-of-{name}", "backend": "mke2fs",
              "name": name, "source": source or name, "image_id": image_id,
              "config": {"image_id": image_id, "entrypoint": ["/etc/init.sh"], "cmd": [],
                         "env": [], "workdir": "", "user": "", "exposed_ports": [],
                         "labels": labels or {}, "created": 1},
              "outputs": {"root": {"path": str(root), "size": root.stat().st_size, "md5": ""}}}
    (folder / "build.json").write_text(json.dumps(record))
    return folder


def make_appliance(folder: Path, *, name: str = "t", adapters: int = 2, options: str = "",
                   interfaces: tuple[str, str] = ("scsi", "scsi")) -> Path:
    """A .gns3a with real (tiny) QCOW2 disks and placeholder kernel/initrd files."""
    folder.mkdir(parents=True, exist_ok=True)
    for disk in ("root.qcow2", "modules.qcow2"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(folder / disk), "16M"],
                       check=True)
    (folder / "vmlinuz").write_bytes(b"k")
    (folder / "initrd.img").write_bytes(b"i")
    files = ["vmlinuz", "initrd.img", "root.qcow2", "modules.qcow2"]
    data = {
        "name": name, "registry_version": 6, "port_name_format": "eth{0}",
        "qemu": {"adapter_type": "virtio-net-pci", "adapters": adapters, "ram": 256,
                 "arch": "x86_64", "console_type": "telnet", "kvm": "allow",
                 "hda_disk_interface": interfaces[0], "hdb_disk_interface": interfaces[1],
                 "kernel_command_line": "console=ttyS0 quiet root=/dev/sda rw",
                 "options": options, "on_close": "shutdown_signal"},
        "images": [{"filename": f, "version": "1"} for f in files],
        "versions": [{"name": "1", "images": {"kernel_image": "vmlinuz", "initrd": "initrd.img",
                                              "hda_disk_image": "root.qcow2",
                                              "hdb_disk_image": "modules.qcow2"}}],
    }
    path = folder / f"{name}.gns3a"
    path.write_text(json.dumps(data))
    return path


def fake_lab(folder: Path, text: str) -> Path:
    """``folder/lab.yaml`` holding ``text`` (dedented), its nodes' appliance a fake one with two
    adapters at ``folder/app/t.gns3a``."""
    make_appliance(folder / "app", adapters=2)
    path = folder / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return path

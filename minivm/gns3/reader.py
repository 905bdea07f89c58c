"""Read a GNS3 appliance file (.gns3a, registry v6) into a typed value, for booting it locally.

Only what a QEMU command line needs is read: the ``qemu`` section and the files of the first
``versions[]`` entry, resolved beside the .gns3a (the bundle layout written by ``minivm
appliance``: ``build_dir()/<name>/<name>.gns3a`` with its images in the same folder).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minivm.errors import MinivmError
from minivm.fsutil import plain_name_problem
from minivm.paths import build_dir
from minivm.platforms import by_qemu_arch
from minivm.vm.options import NICS
from minivm.vm.qemu import DISK_INTERFACES


@dataclass(frozen=True)
class Appliance:
    """A QEMU appliance: its settings and the absolute paths of its image files."""

    path: Path
    name: str
    adapters: int
    adapter_type: str
    ram: int
    cpus: int
    kvm: str  # require, allow, disable
    console_type: str
    kernel_command_line: str
    options: tuple[str, ...]
    on_close: str
    port_name_format: str
    kernel: Path | None
    initrd: Path | None
    disks: tuple[tuple[Path, str], ...]  # (image, interface) for hda, hdb, ... in order
    arch: str = "x86_64"  # GNS3's: the QEMU binary is qemu-system-<arch>

    @property
    def images(self) -> tuple[Path, ...]:
        """The disk images, hda first (what a node's overlays are backed by)."""
        return tuple(image for image, _ in self.disks)

    def port_name(self, adapter: int) -> str:
        """The name GNS3 shows for an adapter (``eth0`` with the usual ``eth{0}`` format)."""
        try:
            return self.port_name_format.format(adapter)
        except (IndexError, KeyError, ValueError):
            return f"eth{adapter}"


def find(name_or_path: str | Path) -> Path:
    """The .gns3a for an appliance name (built under build_dir()) or a path to a .gns3a file."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if text.endswith(".gns3a") or "/" in text:
        if not candidate.is_file():
            raise MinivmError(f"appliance file {candidate} not found",
                              hint="give a .gns3a path or the name of a built appliance")
        return candidate.resolve()
    bundle = build_dir() / text / f"{text}.gns3a"
    if not bundle.is_file():
        raise MinivmError(f"appliance {text!r} not found ({bundle} is missing)",
                          hint=f"build it first: minivm build {text} && minivm appliance {text}")
    return bundle


def bundle_file(gns3a: Path, filename: str) -> Path:
    """The file ``filename`` (a plain name) beside ``gns3a``; a symbolic link to a file outside
    that folder is refused (it would make `run` read, and `gns3 push` upload, any file)."""
    file = gns3a.parent / filename
    if not file.is_file():
        raise MinivmError(f"appliance image {file} is missing",
                          hint="rebuild the bundle with: minivm appliance NAME")
    if file.is_symlink() and file.resolve().parent != gns3a.parent.resolve():
        raise MinivmError(f"appliance image {file} is a symbolic link out of its folder "
                          f"(to {file.resolve()})",
                          hint="copy the file into the appliance's folder")
    return file


def load(name_or_path: str | Path) -> Appliance:
    """Read and check a .gns3a; every referenced image must exist beside it."""
    path = find(name_or_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinivmError(f"{path}: not a readable appliance file: {e}") from e
    if not isinstance(data, dict):
        raise MinivmError(f"{path}: not an appliance file (not a JSON object)")
    return parse(data, path)


def parse(data: dict[str, Any], path: Path) -> Appliance:
    """Build an Appliance from the decoded JSON of ``path`` (files resolved beside it)."""
    def bad(what: str) -> MinivmError:
        return MinivmError(f"{path}: {what}", hint="rewrite it with: minivm appliance NAME")

    qemu = data.get("qemu")
    if not isinstance(qemu, dict):
        raise bad("no 'qemu' section (only QEMU appliances can be booted)")
    versions = data.get("versions") or []
    if not isinstance(versions, list) or not versions or not isinstance(versions[0], dict) \
            or not isinstance(versions[0].get("images"), dict):
        raise bad("no 'versions' entry naming the image files")
    files = versions[0]["images"]
    images = data.get("images")
    listed = {img["filename"] for img in images
              if isinstance(img, dict) and isinstance(img.get("filename"), str)} \
        if isinstance(images, list) else set()

    def image(key: str) -> Path | None:
        filename = files.get(key)
        if not filename:
            return None
        if not isinstance(filename, str) or (why := plain_name_problem(filename)):
            raise MinivmError(f"{path}: {key} {filename!r} {why or 'is not a string'}",
                              hint="an appliance names its files beside it; refusing to read "
                                   "anything else")
        if listed and filename not in listed:
            raise bad(f"{key} {filename!r} is not listed in 'images'")
        return bundle_file(path, filename)

    disks = []
    for letter in "abcd":
        disk = image(f"hd{letter}_disk_image")
        if disk is not None:
            interface = qemu.get(f"hd{letter}_disk_interface", "ide")
            if interface not in DISK_INTERFACES:
                raise bad(f"hd{letter}_disk_interface {interface!r} is not one of "
                          + ", ".join(DISK_INTERFACES))
            disks.append((disk, interface))
    if not isinstance(data.get("name"), str) or not data["name"].isprintable():
        raise bad(f"name {data.get('name')!r} is not one line of printable text")
    adapter_type = qemu.get("adapter_type")
    if adapter_type not in NICS:  # it becomes a -device argument: nothing but a NIC's name
        raise bad(f"adapter_type {adapter_type!r} is not one of {', '.join(NICS)}")
    try:
        options = tuple(shlex.split(qemu.get("options", "") or ""))
        return Appliance(
            path=path,
            name=str(data["name"]),
            adapters=int(qemu["adapters"]),
            adapter_type=str(qemu["adapter_type"]),
            ram=int(qemu["ram"]),
            cpus=int(qemu.get("cpus", 1)),
            kvm=str(qemu.get("kvm", "allow")),
            console_type=str(qemu.get("console_type", "telnet")),
            kernel_command_line=str(qemu.get("kernel_command_line", "") or ""),
            options=options,
            on_close=str(qemu.get("on_close", "power_off")),
            port_name_format=str(data.get("port_name_format", "eth{0}")),
            kernel=image("kernel_image"),
            initrd=image("initrd"),
            disks=tuple(disks),
            arch=by_qemu_arch(str(qemu.get("arch", "x86_64"))).qemu_arch,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"bad or missing field {e}") from e

"""What GNS3 accepts in an appliance file: the registry v6 schema, gns3-server 3.0.6's model and
gns3-gui 3.0.6's schema, as key tables and pure checks that list problems (never raise).

Both appliance kinds are checked against these rules: :mod:`minivm.gns3.appliance` (QEMU) and
:mod:`minivm.gns3.docker_node` (Docker), before a file is written and by ``minivm appliance
--check``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from minivm.errors import MinivmError
from minivm.fsutil import md5_file, plain_name_problem
from minivm.platforms import AMD64, PLATFORMS
from minivm.vm import options as qemu_options

KERNEL_CMDLINE_MAX = 2047  # x86 COMMAND_LINE_SIZE (2048) minus the NUL

CATEGORIES = ("router", "multilayer_switch", "firewall", "guest")
STATUSES = ("stable", "experimental", "broken")
ADAPTER_TYPES = (
    "e1000", "i82550", "i82551", "i82557a", "i82557b", "i82557c", "i82558a", "i82558b",
    "i82559a", "i82559b", "i82559c", "i82559er", "i82562", "i82801", "igb", "ne2k_pci",
    "pcnet", "rtl8139", "virtio", "virtio-net-pci", "vmxnet3",
)
GNS3_DISK_INTERFACES = ("ide", "scsi", "sd", "mtd", "floppy", "pflash", "virtio", "sata")
ARCHES = tuple(p.qemu_arch for p in PLATFORMS.values())
CONSOLE_TYPES = ("telnet", "vnc", "spice", "spice+agent", "none")
KVM = ("require", "allow", "disable")
ON_CLOSE = ("power_off", "shutdown_signal", "save_vm_state")
PROCESS_PRIORITIES = ("realtime", "very high", "high", "normal", "low", "very low")
BOOT_PRIORITIES = ("d", "c", "dc", "cd", "n", "nc", "nd", "cn", "dn")
COMPRESSIONS = ("bzip2", "gzip", "lzma", "xz", "rar", "zip", "7z")

TOP_REQUIRED = ("appliance_id", "name", "category", "description", "vendor_name", "vendor_url",
                "product_name", "registry_version", "status", "maintainer", "maintainer_email")
TOP_KEYS = {
    "appliance_id": "uuid", "name": "str", "category": CATEGORIES, "description": "str",
    "vendor_name": "str", "vendor_url": "url", "vendor_logo_url": "url",
    "documentation_url": "url", "product_name": "str", "product_url": "url",
    "registry_version": (1, 2, 3, 4, 5, 6), "status": STATUSES,
    "availability": ("free", "with-registration", "free-to-try", "service-contract"),
    "maintainer": "str", "maintainer_email": "email", "usage": "str", "symbol": "str",
    "first_port_name": "str", "port_name_format": "str", "port_segment_size": "int",
    "linked_clone": "bool", "qemu": "object", "images": "array", "versions": "array",
}
QEMU_REQUIRED = ("adapter_type", "adapters", "ram", "arch", "console_type", "kvm")
QEMU_KEYS = {
    "adapter_type": ADAPTER_TYPES, "adapters": "int", "ram": "int", "cpus": "int",
    **{f"hd{d}_disk_interface": GNS3_DISK_INTERFACES for d in "abcd"},
    "arch": ARCHES, "console_type": CONSOLE_TYPES, "boot_priority": BOOT_PRIORITIES,
    "kernel_command_line": "str", "kvm": KVM, "options": "str", "cpu_throttling": "number",
    "on_close": ON_CLOSE, "process_priority": PROCESS_PRIORITIES,
}
IMAGE_REQUIRED = ("filename", "version", "md5sum", "filesize")
IMAGE_KEYS = {"filename": "str", "version": "str", "md5sum": "md5", "filesize": "int",
              "download_url": "url", "direct_download_url": "url", "compression": COMPRESSIONS}
VERSION_IMAGE_KEYS = ("kernel_image", "initrd", "image", "bios_image", "hda_disk_image",
                      "hdb_disk_image", "hdc_disk_image", "hdd_disk_image", "cdrom_image")
TYPE_WORDS = {"str": "a string", "url": "an http(s) URL", "email": "an email address",
              "int": "an integer", "words": "a string or a list of strings",
              "options": "a string of QEMU options", "uuid": "a UUID", "bool": "true or false",
              "object": "an object", "array": "a list", "number": "a number",
              "md5": "32 lowercase hex digits"}
URL_RE = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MD5_RE = re.compile(r"[a-f0-9]{32}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def options_problem(options: str, *, allow_unsafe: bool = False) -> str | None:
    """Why minivm refuses these extra QEMU options (see :mod:`minivm.vm.options`), or None."""
    try:
        words = shlex.split(options)
    except ValueError as e:
        return f"cannot be split into words ({e})"
    found = None if allow_unsafe else qemu_options.problem(words)
    return f"option {found[0]} is not allowed in an appliance: {found[1]}" if found else None


def parse(text: str, *, where: str) -> dict[str, Any]:
    """The JSON object in ``text``; a MinivmError with line and column when it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MinivmError(f"{where}: not valid JSON at line {e.lineno} column {e.colno} "
                          f"({e.msg})", hint="an appliance file is one JSON object") from None
    if not isinstance(data, dict):
        raise MinivmError(f"{where}: not a JSON object", hint="an appliance file is one object")
    return data


def type_ok(rule: Any, value: Any) -> bool:
    if isinstance(rule, tuple):
        return any(value == r and type(value) is type(r) for r in rule)
    if rule in ("str", "url", "email", "uuid", "md5"):
        if not isinstance(value, str):
            return False
        pattern = {"url": URL_RE, "email": EMAIL_RE, "uuid": UUID_RE, "md5": MD5_RE}.get(rule)
        return pattern is None or bool(pattern.fullmatch(value))
    if rule == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if rule == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return {"bool": bool, "object": dict, "array": list}[rule] is type(value)


def object_problems(obj: Any, keys: dict[str, Any], required: tuple[str, ...],
                     where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where} must be an object"]
    problems = [f"{where} lacks {k!r}" for k in required if k not in obj]
    for key, value in obj.items():
        if key not in keys:
            problems.append(f"{where} has key {key!r}, which GNS3's registry v6 schema does "
                            "not name")
        elif not type_ok(keys[key], value):
            rule = keys[key]
            want = (f"one of {', '.join(map(str, rule))}" if isinstance(rule, tuple)
                    else TYPE_WORDS[rule])
            problems.append(f"{where}.{key} must be {want}, got {json.dumps(value)[:60]}")
    return problems


def model_problems(data: dict[str, Any], *, allow_unsafe: bool = False) -> list[str]:
    """What GNS3 (server model, GUI schema, registry v6 schema) would refuse in ``data``, and
    what minivm refuses in any appliance (options off the allow-list unless ``allow_unsafe``,
    file names that are not plain)."""
    problems = object_problems(data, TOP_KEYS, TOP_REQUIRED, "appliance")
    qemu = data.get("qemu")
    if qemu is None:
        problems.append("appliance lacks 'qemu' (a MiniVM is a QEMU appliance)")
    else:
        problems += object_problems(qemu, QEMU_KEYS, QEMU_REQUIRED, "qemu")
        if isinstance(qemu, dict) and isinstance(qemu.get("options"), str) \
                and (why := options_problem(qemu["options"], allow_unsafe=allow_unsafe)):
            problems.append(f"qemu.options: {why}")
    images: list[Any] = data["images"] if isinstance(data.get("images"), list) else []
    names: set[str] = set()
    for i, image in enumerate(images):
        problems += object_problems(image, IMAGE_KEYS, IMAGE_REQUIRED, f"images[{i}]")
        if isinstance(image, dict) and isinstance(image.get("filename"), str):
            filename = image["filename"]
            if why := plain_name_problem(filename):
                problems.append(f"images[{i}].filename {filename!r} {why}")
            if filename in names:
                problems.append(f"images[{i}].filename {filename!r} is listed twice")
            names.add(filename)
    versions: list[Any] = data["versions"] if isinstance(data.get("versions"), list) else []
    if not versions:
        problems.append("appliance has no versions[] (GNS3 would have nothing to install)")
    for i, version in enumerate(versions):
        where = f"versions[{i}]"
        if not isinstance(version, dict):
            problems.append(f"{where} must be an object")
            continue
        problems += [f"{where} has key {k!r}, which GNS3's registry v6 schema does not name"
                     for k in version if k not in ("name", "idlepc", "images")]
        if not isinstance(version.get("name"), str):
            problems.append(f"{where}.name must be a string")
        chosen = version.get("images")
        if not isinstance(chosen, dict):
            problems.append(f"{where}.images must be an object")
            continue
        for role, filename in chosen.items():
            if role not in VERSION_IMAGE_KEYS:
                problems.append(f"{where}.images has key {role!r}, which GNS3 does not name")
            elif filename not in names:
                problems.append(f"{where}.images.{role} {filename!r} is not in images[]")
        if "hda_disk_image" not in chosen:
            problems.append(f"{where}.images names no hda_disk_image (the root disk)")
    return problems


def kernel_problems(data: dict[str, Any]) -> list[str]:
    """Why the kernel command line would not boot a MiniVM with a console GNS3 can show."""
    qemu: dict[str, Any] = data["qemu"] if isinstance(data.get("qemu"), dict) else {}
    line = qemu.get("kernel_command_line")
    kernel_used = any(isinstance(v, dict) and isinstance(v.get("images"), dict)
                      and "kernel_image" in v["images"] for v in data.get("versions") or [])
    if line is None:
        return ["qemu.kernel_command_line is missing"] if kernel_used else []
    if not isinstance(line, str):
        return []  # model_problems reports the type
    problems = []
    words = line.split()
    if CONTROL_RE.search(line):
        problems.append("qemu.kernel_command_line holds a control character (newline, tab...)")
    if len(line.encode()) > KERNEL_CMDLINE_MAX:
        problems.append(f"qemu.kernel_command_line is {len(line.encode())} bytes, over the "
                        f"kernel's {KERNEL_CMDLINE_MAX}")
    if line.count('"') % 2:
        problems.append("qemu.kernel_command_line has an unbalanced double quote")
    console = next((p.console for p in PLATFORMS.values()
                    if p.qemu_arch == qemu.get("arch")), AMD64.console)
    if qemu.get("console_type") == "telnet" and f"console={console}" not in words:
        problems.append(f"qemu.kernel_command_line lacks console={console} (GNS3's telnet "
                        "console "
                        "is the first serial port)")
    if not any(w.startswith("root=") and len(w) > len("root=") for w in words):
        problems.append("qemu.kernel_command_line lacks root= (the initramfs would not know "
                        "which disk to mount)")
    return problems


def file_problems(data: dict[str, Any], folder: Path) -> list[str]:
    """Files of images[] missing beside the .gns3a, or with another size or md5."""
    problems = []
    for image in data.get("images") or []:
        if not isinstance(image, dict) or not isinstance(image.get("filename"), str) \
                or plain_name_problem(image["filename"]):
            continue
        path = folder / image["filename"]
        if not path.is_file():
            problems.append(f"{image['filename']} is missing from {folder}")
        elif path.stat().st_size != image.get("filesize"):
            problems.append(f"{image['filename']} is {path.stat().st_size} bytes, the appliance "
                            f"says {image.get('filesize')}")
        elif md5_file(path) != image.get("md5sum"):
            problems.append(f"{image['filename']} has md5 {md5_file(path)}, the appliance says "
                            f"{image.get('md5sum')}")
    return problems


def summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more

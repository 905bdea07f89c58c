"""GNS3 appliance bundles: ``<name>.gns3a`` plus every file it names, side by side.

Stages: metadata (defaults, image labels, the image's ``appliance.yaml``, the user's
``appliances/<name>.yaml``; each checked against :data:`METADATA_KEYS`) -> files (the root disk
from the build record, the kernel kit linked beside it, md5 and size of each) -> JSON rendered
from ``appliances/appliance.gns3a.j2`` with every value escaped by ``tojson`` -> the same rules
``minivm appliance --check`` applies -> the file written atomically.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minivm import cache
from minivm.errors import MinivmError
from minivm.fsutil import atomic_path, atomic_write_bytes, md5_file, remove, sha256_tree
from minivm.image.config import short_id
from minivm.kit import kernel
from minivm.paths import ROOT_LABEL, appliances_dir, build_dir, images_dir
from minivm.ui import Reporter
from minivm.vm.qemu import FORBIDDEN_OPTIONS

if TYPE_CHECKING:
    import jinja2

METADATA_FILE = "appliance.yaml"
DEFAULTS_FILE = "defaults.yaml"
TEMPLATE = "appliance.gns3a.j2"
USAGE_TEMPLATE = "usage.txt.j2"
LABEL_PREFIX = "minivm.appliance."
# Same name -> same appliance_id (GNS3 3.x requires one; 2.2 ignores it).
ID_NAMESPACE = uuid.UUID("3d0f5a52-6f7c-5b0e-9a61-6d696e69766d")
BASE_KERNEL_ARGS = f"console=ttyS0 root=LABEL={ROOT_LABEL} rw quiet"
KERNEL_CMDLINE_MAX = 2047  # x86 COMMAND_LINE_SIZE (2048) minus the NUL

# --- what GNS3 accepts (registry v6 schema, gns3-server 3.0.6 model, gns3-gui 3.0.6 schema) ----

CATEGORIES = ("router", "multilayer_switch", "firewall", "guest")
STATUSES = ("stable", "experimental", "broken")
ADAPTER_TYPES = (
    "e1000", "i82550", "i82551", "i82557a", "i82557b", "i82557c", "i82558a", "i82558b",
    "i82559a", "i82559b", "i82559c", "i82559er", "i82562", "i82801", "igb", "ne2k_pci",
    "pcnet", "rtl8139", "virtio", "virtio-net-pci", "vmxnet3",
)
GNS3_DISK_INTERFACES = ("ide", "scsi", "sd", "mtd", "floppy", "pflash", "virtio", "sata")
ARCHES = ("x86_64",)
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

# --- what a metadata file (appliance.yaml, defaults.yaml, appliances/<name>.yaml) may say ----

METADATA_KEYS: dict[str, Any] = {
    "name": "str", "description": "str", "usage": "str", "symbol": "str",
    "category": (*CATEGORIES, "switch"), "status": STATUSES,
    "vendor_name": "str", "vendor_url": "url", "product_name": "str", "product_url": "url",
    "documentation_url": "url", "maintainer": "str", "maintainer_email": "email",
    "first_port_name": "str", "port_name_format": "str",
    "adapters": ("int", 0, 100), "ram": ("int", 32, 1 << 20), "cpus": ("int", 1, 64),
    "adapter_type": ADAPTER_TYPES, "kvm": KVM,
    # Interfaces the kit's initramfs can reach the root through.
    "disk_interface": ("scsi", "virtio", "ide"),
    "kernel_args": "words", "options": "options",
}
TYPE_WORDS = {"str": "a string", "url": "an http(s) URL", "email": "an email address",
              "int": "an integer", "words": "a string or a list of strings",
              "options": "a string of QEMU options", "uuid": "a UUID", "bool": "true or false",
              "object": "an object", "array": "a list", "number": "a number",
              "md5": "32 lowercase hex digits"}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
URL_RE = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MD5_RE = re.compile(r"[a-f0-9]{32}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Bundle:
    """A written (or checked) appliance bundle."""

    path: Path
    appliance: dict[str, Any]
    files: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"gns3a": str(self.path), "name": self.appliance["name"],
                "appliance_id": self.appliance["appliance_id"],
                "files": self.files, "total_bytes": sum(f["filesize"] for f in self.files)}


# --- metadata ---------------------------------------------------------------------------------

def load_metadata(path: Path) -> dict[str, Any]:
    """Read one metadata YAML file; a MinivmError naming the file and key when it is wrong."""
    import yaml  # here, not at the top: a cached build reads no metadata

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MinivmError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise MinivmError(f"{path} is not UTF-8 text", hint="save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise MinivmError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})",
                          hint="fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MinivmError(f"{path}: expected `key: value` lines, got {type(data).__name__}",
                          hint=f"allowed keys: {', '.join(METADATA_KEYS)}")
    return check_metadata(data, where=str(path))


def check_metadata(data: dict[Any, Any], *, where: str) -> dict[str, Any]:
    """Check keys and types of metadata; return it with normalised values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in METADATA_KEYS:
            raise MinivmError(f"{where}: unknown key {key!r}",
                              hint=f"allowed keys: {', '.join(METADATA_KEYS)}")
        out[key] = _metadata_value(key, value, where)
    return out


def _unicode(value: Any, key: str, where: str) -> Any:
    """Strings with YAML's ``\\uD83D\\uDC27``-style escaped surrogate pairs joined; a lone
    surrogate (no character at all) is an error."""
    if isinstance(value, list):
        return [_unicode(v, key, where) for v in value]
    if not isinstance(value, str) or not re.search("[\ud800-\udfff]", value):
        return value
    try:
        return value.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise MinivmError(f"{where}: key {key!r} holds a lone UTF-16 surrogate escape",
                          hint="write the character itself (the file is UTF-8)") from None


def _metadata_value(key: str, value: Any, where: str) -> Any:
    rule = METADATA_KEYS[key]
    if value is None:
        return None
    value = _unicode(value, key, where)
    if isinstance(rule, tuple) and rule and rule[0] == "int":
        _, low, high = rule
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(where, key, "int", value)
        if not low <= value <= high:
            raise MinivmError(f"{where}: key {key!r} is {value}, outside {low}..{high}",
                              hint="fix the value")
        return value
    if isinstance(rule, tuple):
        if value not in rule:
            raise MinivmError(f"{where}: key {key!r} is {value!r}, not one of "
                              f"{', '.join(map(str, rule))}", hint="fix the value")
        return value
    if rule == "words":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)
        if not isinstance(value, str):
            raise _type_error(where, key, rule, value)
        if CONTROL_RE.search(value):
            raise MinivmError(f"{where}: key {key!r} holds a control character (newline, tab...)",
                              hint="the kernel command line is one line of space-separated words")
        return value.strip()
    if not isinstance(value, str):
        raise _type_error(where, key, rule, value)
    if rule == "url" and value and not URL_RE.fullmatch(value):
        raise _type_error(where, key, rule, value)
    if rule == "email" and value and not EMAIL_RE.fullmatch(value):
        raise _type_error(where, key, rule, value)
    if rule == "options" and (problem := options_problem(value)):
        raise MinivmError(f"{where}: key 'options': {problem}", hint="remove it")
    return value


def _type_error(where: str, key: str, rule: str, value: Any) -> MinivmError:
    shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
    return MinivmError(f"{where}: key {key!r} must be {TYPE_WORDS[rule]}, got {shown}",
                       hint="fix the value")


def options_problem(options: str) -> str | None:
    """Why GNS3 (or minivm) would refuse these extra QEMU options, or None."""
    try:
        words = shlex.split(options)
    except ValueError as e:
        return f"cannot be split into words ({e})"
    bad = [w for w in words if w in FORBIDDEN_OPTIONS]
    return f"{bad[0]} is not allowed there (GNS3 attaches disks and NICs itself)" if bad else None


def label_metadata(labels: dict[str, str], *, image: str) -> dict[str, Any]:
    """Metadata from image labels: a few OCI ones, and ``minivm.appliance.<key>``."""
    oci = {"org.opencontainers.image.description": "description",
           "org.opencontainers.image.vendor": "vendor_name",
           "org.opencontainers.image.url": "product_url",
           "org.opencontainers.image.documentation": "documentation_url",
           "org.opencontainers.image.title": "product_name"}
    out: dict[str, Any] = {}
    for label, key in oci.items():
        if labels.get(label):
            try:
                out[key] = _metadata_value(key, labels[label], f"label {label} of {image}")
            except MinivmError:
                continue  # a free-text OCI label that is not a URL is no error of the user's
    for label, value in labels.items():
        if not label.startswith(LABEL_PREFIX):
            continue
        key = label[len(LABEL_PREFIX):]
        where = f"image {image}, label {label}"
        if key not in METADATA_KEYS:
            raise MinivmError(f"{where}: unknown key {key!r}",
                              hint=f"allowed keys: {', '.join(METADATA_KEYS)}")
        rule = METADATA_KEYS[key]
        if isinstance(rule, tuple) and rule[0] == "int":
            if not re.fullmatch(r"\d+", value.strip()):
                raise _type_error(where, key, "int", value)
            out[key] = _metadata_value(key, int(value), where)
            continue
        out[key] = _metadata_value(key, value, where)
    return out


def metadata_files(name: str, record: cache.BuildRecord) -> list[Path]:
    """The image's metadata file and the user's ``appliances/<name>.yaml``, weakest first."""
    files = []
    shipped = images_dir() / name / METADATA_FILE
    source = Path(record.source)
    if shipped.is_file():
        files.append(shipped)
    elif source.is_absolute() and (source / METADATA_FILE).is_file():
        files.append(source / METADATA_FILE)
    files.append(appliances_dir() / f"{name}.yaml")
    return [f for f in files if f.is_file()]


def metadata(name: str, record: cache.BuildRecord) -> dict[str, Any]:
    """Every source merged key by key: defaults.yaml, image labels, then the metadata files
    (later wins; a null value keeps the earlier one)."""
    defaults = appliances_dir() / DEFAULTS_FILE
    layers = [load_metadata(defaults) if defaults.is_file() else {},
              label_metadata(record.labels, image=name),
              *(load_metadata(f) for f in metadata_files(name, record))]
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    return merged


def required_metadata(name: str, record: cache.BuildRecord) -> dict[str, Any]:
    """:func:`metadata`, with the keys GNS3's import needs checked (either appliance kind)."""
    meta = metadata(name, record)
    for key in ("vendor_url", "maintainer", "maintainer_email"):
        if not meta.get(key):
            raise MinivmError(f"no {key} for {name} (GNS3's import needs one)",
                              hint=f"set it in {appliances_dir() / DEFAULTS_FILE}")
    return meta


# --- inputs: build outputs and the kernel kit -------------------------------------------------

def build_record(name: str, folder: Path | None = None
                 ) -> tuple[Path, cache.BuildRecord, Path]:
    """The build folder, record and root disk of ``name``; clear errors when absent."""
    if not NAME_RE.fullmatch(name):
        raise MinivmError(f"{name!r} is not an appliance name",
                          hint="names are letters, digits, '.', '_' and '-'")
    folder = folder or build_dir() / name
    record = cache.load(folder)
    if record is None:
        if (images_dir() / name).is_dir() or folder.is_dir():
            raise MinivmError(f"{name} has not been built (no {folder / cache.RECORD})",
                              hint=f"run `minivm build {name}`")
        built = sorted(p.parent.name for p in build_dir().glob(f"*/{cache.RECORD}"))
        shipped = sorted(p.name for p in images_dir().glob("*") if p.is_dir())
        raise MinivmError(f"unknown appliance {name!r}",
                          hint=f"built: {', '.join(built) or 'none'}; "
                               f"shipped images: {', '.join(shipped) or 'none'}")
    root = record.root
    if not root.is_file():
        raise MinivmError(f"the root disk of {name} is missing ({root})",
                          hint=f"run `minivm build {name}`")
    return folder, record, root


def current_kit() -> kernel.Kit:
    """The current kernel kit, or an error saying how to make one."""
    kit = kernel.current()
    if kit is None:
        raise MinivmError(f"no kernel kit in {kernel.kits_dir()}",
                          hint="run `minivm kernel build` first")
    return kit


def place(source: Path, target: Path) -> str:
    """Make ``target`` hold ``source``'s bytes: hard link, else reflink, else copy.

    Returns how (``same``, ``link``, ``reflink``, ``copy``); atomic (temp name + rename).
    """
    if target.exists() and os.path.samefile(source, target):
        return "same"
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
            return "link"
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
        with source.open("rb") as src, tmp.open("wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), 0x40049409, src.fileno())  # FICLONE
                return "reflink"
            except OSError:
                shutil.copyfileobj(src, dst, 1 << 20)
                return "copy"


# --- rendering --------------------------------------------------------------------------------

def _tojson(value: Any) -> str:
    """JSON for one value: exact, UTF-8 kept readable, never HTML-mangled."""
    return json.dumps(value, ensure_ascii=False)


def _environment() -> jinja2.Environment:
    import jinja2  # here, not at the top: a cached build renders nothing

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(appliances_dir())),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["tojson"] = _tojson
    return env


def _render(template: str, **values: Any) -> str:
    import jinja2

    path = appliances_dir() / template
    try:
        return _environment().get_template(template).render(**values)
    except jinja2.TemplateNotFound:
        raise MinivmError(f"template {path} is missing",
                          hint="restore it from the minivm sources") from None
    except jinja2.TemplateSyntaxError as e:
        raise MinivmError(f"{path} line {e.lineno}: {e.message}", hint="fix the template") from None
    except jinja2.UndefinedError as e:
        raise MinivmError(f"{path}: {e.message}", hint="fix the template") from None


def appliance_id(name: str) -> str:
    """The stable id of the appliance called ``name``."""
    return str(uuid.uuid5(ID_NAMESPACE, name))


def values(name: str, meta: dict[str, Any], record: cache.BuildRecord,
           files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything the template needs, computed from metadata, the build and the files."""
    config = record.config
    command = " ".join(shlex.quote(w) for w in [*(config.get("entrypoint") or []),
                                                *(config.get("cmd") or [])])
    shell = bool(re.search(r"(^|/)(sh|bash|ash|init\.sh)(\s|$)", command)) or not command
    usage = _render(USAGE_TEMPLATE, usage=(meta.get("usage") or "").strip(), command=command,
                    shell=shell, root_label=ROOT_LABEL, name=name).strip()
    category = meta.get("category", "guest")
    extra = meta.get("kernel_args") or ""
    display = meta.get("name") or name
    return {
        "appliance_id": appliance_id(name), "name": display,
        "category": "multilayer_switch" if category == "switch" else category,
        "description": meta.get("description") or f"{display}: a MiniVM built by minivm.",
        "vendor_name": meta.get("vendor_name", "minivm"), "vendor_url": meta["vendor_url"],
        "documentation_url": meta.get("documentation_url"),
        "product_name": meta.get("product_name") or display,
        "product_url": meta.get("product_url"),
        "status": meta.get("status", "experimental"),
        "maintainer": meta["maintainer"], "maintainer_email": meta["maintainer_email"],
        "usage": usage, "symbol": meta.get("symbol"),
        "first_port_name": meta.get("first_port_name"),
        "port_name_format": meta.get("port_name_format") or "eth{0}",
        "adapter_type": meta.get("adapter_type", "virtio-net-pci"),
        "adapters": meta.get("adapters", 1), "ram": meta.get("ram", 256),
        "cpus": meta.get("cpus"), "disk_interface": meta.get("disk_interface", "scsi"),
        "kvm": meta.get("kvm", "allow"), "options": (meta.get("options") or "").strip(),
        "kernel_command_line": f"{BASE_KERNEL_ARGS} {extra}".strip(),
        "version": files["root"]["version"], "files": files,
    }


def _file(role: str, path: Path, version: str,
          known: dict[str, Any] | None = None) -> dict[str, Any]:
    """A file's entry in the appliance. ``known``: the record (size, md5) written with the
    file when it was made (build record, kit manifest): its md5 is reused while the size
    matches, so that an unchanged bundle costs no hashing of ~50 MB."""
    size = path.stat().st_size
    md5 = known["md5"] if known and known.get("size") == size and known.get("md5") else None
    return {"role": role, "filename": path.name, "version": version,
            "md5sum": md5 or md5_file(path), "filesize": size}


def write_bundle(name: str, *, reporter: Reporter, folder: Path | None = None,
                 kit: kernel.Kit | None = None) -> Bundle:
    """Write ``<folder>/<name>.gns3a`` and link the kit beside the root disk."""
    folder, record, root = build_record(name, folder)
    kit = kit or current_kit()
    inputs = bundle_inputs(name, record, kit=kit.manifest.get("key"), kit_folder=kit.folder.name)
    if unchanged := unchanged_bundle(folder / f"{name}.gns3a", inputs):
        reporter.info(f"[green]✓[/] appliance {unchanged.path} is up to date")
        return unchanged
    meta = required_metadata(name, record)
    kit_files = {"kernel": kit.kernel, "initrd": kit.initrd, "modules": kit.modules}
    for role, path in kit_files.items():
        if path is not None and not path.is_file():
            raise MinivmError(f"the kernel kit lacks its {role} file {path}",
                              hint="run `minivm kernel build`")
    image12 = short_id(record.image_id)
    gns3a = folder / f"{name}.gns3a"
    previous = _named_files(gns3a)
    how = {role: place(path, folder / path.name)
           for role, path in kit_files.items() if path is not None}
    made = kit.manifest["files"]
    files = {"root": _file("root", root, image12, record.outputs.get("root")),
             "kernel": _file("kernel", folder / kit.kernel.name, kit.kernel_version,
                             made.get("kernel")),
             "initrd": _file("initrd", folder / kit.initrd.name, kit.folder.name,
                             made.get("initrd"))}
    if kit.modules is not None:
        files["modules"] = _file("modules", folder / kit.modules.name, kit.folder.name,
                                 made.get("modules"))
    data = values(name, meta, record, files)
    text = _render(TEMPLATE, a=data)
    appliance = parse(text, where=f"{appliances_dir() / TEMPLATE} (rendered for {name})")
    problems = model_problems(appliance) + kernel_problems(appliance)
    if problems:
        raise MinivmError(f"{appliances_dir() / TEMPLATE} rendered an appliance GNS3 would "
                          f"refuse for {name}: {_summary(problems)}", hint="fix the template")
    atomic_write_bytes(gns3a, text.encode())
    record_inputs(gns3a, inputs, list(files.values()))
    for stale in previous - {f["filename"] for f in files.values()} - {root.name, gns3a.name}:
        if "/" not in stale and stale not in ("", ".", ".."):
            remove(folder / stale)
    total = sum(f["filesize"] for f in files.values())
    if copied := [role for role, h in how.items() if h == "copy"]:
        reporter.info(f"  copied (not hard-linked: another filesystem): {', '.join(copied)}")
    reporter.info(f"[green]✓[/] appliance {gns3a} ({len(files)} files, {total / 1e6:.1f} MB)")
    return Bundle(gns3a, appliance, list(files.values()))


def _key_file(gns3a: Path) -> Path:
    return gns3a.with_name(f".{gns3a.name}.inputs")


def bundle_inputs(name: str, record: cache.BuildRecord, **more: Any) -> str:
    """A digest of everything an appliance is made from: the build, the metadata files, the
    templates, minivm's version, and ``more`` (the kit, say)."""
    metadata_text = [f.read_text(errors="replace") for f in metadata_files(name, record)]
    return cache.key(name=name, build=record.key, metadata=metadata_text,
                     templates=sha256_tree(appliances_dir()), **more)


def record_inputs(gns3a: Path, inputs: str, files: list[dict[str, Any]]) -> None:
    """Write what the appliance at ``gns3a`` was made from, beside it (after the file)."""
    atomic_write_bytes(_key_file(gns3a), (json.dumps(
        {"key": inputs, "files": files}, sort_keys=True) + "\n").encode())


def unchanged_bundle(gns3a: Path, inputs: str) -> Bundle | None:
    """The bundle at ``gns3a`` when it was written from ``inputs`` and its files are whole
    (same sizes): a cached ``minivm build`` then renders and hashes nothing."""
    try:
        saved = json.loads(_key_file(gns3a).read_text())
        if saved["key"] != inputs:
            return None
        files = list(saved["files"])
        for f in files:
            if (gns3a.parent / f["filename"]).stat().st_size != f["filesize"]:
                return None
        return Bundle(gns3a, json.loads(gns3a.read_text(encoding="utf-8")), files)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _named_files(gns3a: Path) -> set[str]:
    """File names a previous bundle listed (to remove what the new one no longer needs)."""
    try:
        data = json.loads(gns3a.read_text(encoding="utf-8"))
        return {str(i["filename"]) for i in data.get("images", []) if isinstance(i, dict)}
    except (OSError, ValueError, AttributeError, KeyError):
        return set()


def after_build(name: str, *, folder: Path, reporter: Reporter) -> Bundle | None:
    """The end of ``minivm build``: write the bundle when a kernel kit exists, else say how."""
    kit = kernel.current()
    if kit is None:
        reporter.info(f"no kernel kit yet, so no GNS3 appliance: run `minivm kernel build`, "
                      f"then `minivm appliance {name}`")
        return None
    return write_bundle(name, reporter=reporter, folder=folder, kit=kit)


# --- checking ---------------------------------------------------------------------------------

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


def _type_ok(rule: Any, value: Any) -> bool:
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


def _object_problems(obj: Any, keys: dict[str, Any], required: tuple[str, ...],
                     where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where} must be an object"]
    problems = [f"{where} lacks {k!r}" for k in required if k not in obj]
    for key, value in obj.items():
        if key not in keys:
            problems.append(f"{where} has key {key!r}, which GNS3's registry v6 schema does "
                            "not name")
        elif not _type_ok(keys[key], value):
            rule = keys[key]
            want = (f"one of {', '.join(map(str, rule))}" if isinstance(rule, tuple)
                    else TYPE_WORDS[rule])
            problems.append(f"{where}.{key} must be {want}, got {json.dumps(value)[:60]}")
    return problems


def model_problems(data: dict[str, Any]) -> list[str]:
    """What GNS3 (server model, GUI schema, registry v6 schema) would refuse in ``data``."""
    problems = _object_problems(data, TOP_KEYS, TOP_REQUIRED, "appliance")
    qemu = data.get("qemu")
    if qemu is None:
        problems.append("appliance lacks 'qemu' (a MiniVM is a QEMU appliance)")
    else:
        problems += _object_problems(qemu, QEMU_KEYS, QEMU_REQUIRED, "qemu")
        if isinstance(qemu, dict) and isinstance(qemu.get("options"), str) \
                and (why := options_problem(qemu["options"])):
            problems.append(f"qemu.options: {why}")
    images: list[Any] = data["images"] if isinstance(data.get("images"), list) else []
    names: set[str] = set()
    for i, image in enumerate(images):
        problems += _object_problems(image, IMAGE_KEYS, IMAGE_REQUIRED, f"images[{i}]")
        if isinstance(image, dict) and isinstance(image.get("filename"), str):
            filename = image["filename"]
            if not filename or "/" in filename or filename in (".", ".."):
                problems.append(f"images[{i}].filename {filename!r} is not a plain file name")
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
    if qemu.get("console_type") == "telnet" and "console=ttyS0" not in words:
        problems.append("qemu.kernel_command_line lacks console=ttyS0 (GNS3's telnet console "
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
                or "/" in image["filename"]:
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


def _summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def check_bundle(path: Path) -> Bundle:
    """Verify a bundle: GNS3's model rules, every file present and intact, sane kernel args
    (a Docker-node appliance: GNS3's rules and its image at hand)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MinivmError(f"no such appliance file: {path}",
                          hint="bundles are written as build/<name>/<name>.gns3a") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MinivmError(f"cannot read {path}: {e}") from None
    data = parse(text, where=str(path))
    if "docker" in data and "qemu" not in data:
        from minivm.gns3 import docker_node  # it builds on this module

        return docker_node.check(path, data)
    problems = model_problems(data) + kernel_problems(data)
    if problems:
        raise MinivmError(f"{path}: {_summary(problems)}", hint="GNS3 would refuse or "
                          "misboot it; rewrite it with `minivm appliance NAME`")
    problems = file_problems(data, path.parent)
    if problems:
        raise MinivmError(f"{path}: {_summary(problems)}",
                          hint="the bundle was changed after it was written; rewrite it with "
                               "`minivm appliance NAME`")
    files = [{k: i[k] for k in IMAGE_REQUIRED} for i in data["images"]]
    return Bundle(path, data, files)

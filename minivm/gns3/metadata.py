"""An appliance's metadata: what ``appliance.yaml``, ``defaults.yaml``,
``appliances/<name>.yaml`` and the image's labels may say, each checked against
:data:`METADATA_KEYS` (one line naming the file and key when wrong), merged weakest first."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from minivm import cache
from minivm.errors import MinivmError
from minivm.gns3.model import (
    ADAPTER_TYPES,
    CATEGORIES,
    CONTROL_RE,
    EMAIL_RE,
    KVM,
    STATUSES,
    TYPE_WORDS,
    URL_RE,
    options_problem,
)
from minivm.paths import appliances_dir, images_dir
from minivm.platforms import parse as parse_platform

METADATA_FILE = "appliance.yaml"
DEFAULTS_FILE = "defaults.yaml"
LABEL_PREFIX = "minivm.appliance."

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


def load_metadata(path: Path) -> Metadata:
    """Read one metadata YAML file; a MinivmError naming the file and key when it is wrong."""
    from minivm import yamlfile  # here, not at the top: a cached build reads no metadata

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MinivmError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise MinivmError(f"{path} is not UTF-8 text", hint="save it as UTF-8") from None
    data = yamlfile.load(text, where=str(path))
    if data is None:
        return Metadata()
    if not isinstance(data, dict):
        raise MinivmError(f"{path}: expected `key: value` lines, got {type(data).__name__}",
                          hint=f"allowed keys: {', '.join(METADATA_KEYS)}")
    return check_metadata(data, where=str(path))


def check_metadata(data: dict[Any, Any], *, where: str) -> Metadata:
    """Check keys and types of metadata; return it with normalised values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in METADATA_KEYS:
            raise MinivmError(f"{where}: unknown key {key!r}",
                              hint=f"allowed keys: {', '.join(METADATA_KEYS)}")
        out[key] = _metadata_value(key, value, where)
    return Metadata(**out)


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


def label_metadata(labels: dict[str, str], *, image: str) -> Metadata:
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
    return Metadata(**out)


def metadata_files(name: str, record: cache.BuildRecord) -> list[Path]:
    """The image's metadata file and the user's ``appliances/<name>.yaml``, weakest first.
    Another platform's build (``NAME-arm64``) takes NAME's files, then its own
    ``appliances/NAME-arm64.yaml``."""
    suffix = parse_platform(record.platform).suffix if record.platform else ""
    base = name.removesuffix(suffix) if suffix else name
    files = []
    shipped = images_dir() / base / METADATA_FILE
    source = Path(record.source)
    if shipped.is_file():
        files.append(shipped)
    elif source.is_absolute() and (source / METADATA_FILE).is_file():
        files.append(source / METADATA_FILE)
    files += [appliances_dir() / f"{n}.yaml" for n in dict.fromkeys((base, name))]
    return [f for f in files if f.is_file()]


@dataclass(frozen=True)
class Metadata:
    """An appliance's metadata, every source merged (None: no source says it). The fields are
    :data:`METADATA_KEYS`, with the values :func:`check_metadata` lets through."""

    name: str | None = None
    description: str | None = None
    usage: str | None = None
    symbol: str | None = None
    category: str | None = None
    status: str | None = None
    vendor_name: str | None = None
    vendor_url: str | None = None
    product_name: str | None = None
    product_url: str | None = None
    documentation_url: str | None = None
    maintainer: str | None = None
    maintainer_email: str | None = None
    first_port_name: str | None = None
    port_name_format: str | None = None
    adapters: int | None = None
    ram: int | None = None
    cpus: int | None = None
    adapter_type: str | None = None
    kvm: str | None = None
    disk_interface: str | None = None
    kernel_args: str | None = None
    options: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metadata:
        """From what :meth:`to_json` wrote."""
        return cls(**data)

    def over(self, weaker: Metadata) -> Metadata:
        """This metadata over ``weaker``: each key this one does not say (None) is the
        weaker one's."""
        return replace(weaker, **{k: v for k, v in asdict(self).items() if v is not None})


def metadata(name: str, record: cache.BuildRecord) -> Metadata:
    """Every source merged key by key: defaults.yaml, image labels, then the metadata files
    (later wins; a null value keeps the earlier one)."""
    defaults = appliances_dir() / DEFAULTS_FILE
    layers = [load_metadata(defaults) if defaults.is_file() else Metadata(),
              label_metadata(record.labels, image=name),
              *(load_metadata(f) for f in metadata_files(name, record))]
    merged = Metadata()
    for layer in layers:
        merged = layer.over(merged)
    return merged


def required_metadata(name: str, record: cache.BuildRecord) -> Metadata:
    """:func:`metadata`, with the keys GNS3's import needs checked (either appliance kind)."""
    meta = metadata(name, record)
    for key in ("vendor_url", "maintainer", "maintainer_email"):
        if not getattr(meta, key):
            raise MinivmError(f"no {key} for {name} (GNS3's import needs one)",
                              hint=f"set it in {appliances_dir() / DEFAULTS_FILE}")
    return meta

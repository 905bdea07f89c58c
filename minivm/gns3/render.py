"""Rendering an appliance file from its Jinja2 template (``appliances/*.j2``): every value
escaped by ``tojson``, the template's own mistakes one line each."""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from minivm import cache, platforms
from minivm.errors import MinivmError
from minivm.gns3.bundle import BundleFile
from minivm.gns3.metadata import Metadata
from minivm.paths import ROOT_LABEL, appliances_dir
from minivm.platforms import AMD64, Platform
from minivm.vm.qemu import NO_TIMER_CHECK

if TYPE_CHECKING:
    import jinja2

USAGE_TEMPLATE = "usage.txt.j2"
T = TypeVar("T")
# Same name -> same appliance_id (GNS3 3.x requires one; 2.2 ignores it).
ID_NAMESPACE = uuid.UUID("3d0f5a52-6f7c-5b0e-9a61-6d696e69766d")
# no_timer_check: the kernel's check that the timer interrupt reaches the IO-APIC fails when
# the host starves the vCPU (many nodes under TCG on few cores) and panics the boot.
BASE_KERNEL_ARGS = f"console=ttyS0 root=LABEL={ROOT_LABEL} rw quiet {NO_TIMER_CHECK}"


def base_kernel_args(platform: Platform = AMD64) -> str:
    """The kernel arguments every appliance of ``platform`` starts with (its serial console;
    the timer check is x86's)."""
    if platform == AMD64:
        return BASE_KERNEL_ARGS
    return BASE_KERNEL_ARGS.replace("console=ttyS0", f"console={platform.console}").replace(
        f" {NO_TIMER_CHECK}", "")


def record_platform(record: cache.BuildRecord) -> Platform:
    """The platform a build was made for (its image's)."""
    return platforms.parse(record.platform)


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


def render(template: str, **values: Any) -> str:
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


def values(name: str, meta: Metadata, record: cache.BuildRecord, *, version: str,
           files: Mapping[str, BundleFile]) -> dict[str, Any]:
    """Everything the template needs, computed from metadata, the build, the appliance's
    ``version`` and its files by role."""
    config = record.config
    command = " ".join(shlex.quote(w) for w in [*config.entrypoint, *config.cmd])
    shell = bool(re.search(r"(^|/)(sh|bash|ash|init\.sh)(\s|$)", command)) or not command
    usage = render(USAGE_TEMPLATE, usage=(meta.usage or "").strip(), command=command,
                   shell=shell, root_label=ROOT_LABEL, name=name).strip()
    category = _given(meta.category, "guest")
    display = meta.name or name
    platform = record_platform(record)
    interface = _given(meta.disk_interface, "scsi")
    if platform.qemu_arch == "aarch64" and interface == "ide":
        raise MinivmError(f"{name}: disk_interface ide does not exist on QEMU's arm64 virt "
                          "machine", hint="use scsi or virtio for a linux/arm64 appliance")
    options = " ".join([*platform.machine_options, (meta.options or "").strip()]).strip()
    return {
        "appliance_id": appliance_id(name), "name": display,
        "category": "multilayer_switch" if category == "switch" else category,
        "description": meta.description or f"{display}: a MiniVM built by minivm.",
        "vendor_name": _given(meta.vendor_name, "minivm"), "vendor_url": meta.vendor_url,
        "documentation_url": meta.documentation_url,
        "product_name": meta.product_name or display, "product_url": meta.product_url,
        "status": _given(meta.status, "experimental"),
        "maintainer": meta.maintainer, "maintainer_email": meta.maintainer_email,
        "usage": usage, "symbol": meta.symbol, "first_port_name": meta.first_port_name,
        "port_name_format": meta.port_name_format or "eth{0}",
        "adapter_type": _given(meta.adapter_type, "virtio-net-pci"),
        "adapters": _given(meta.adapters, 1), "ram": _given(meta.ram, 256), "cpus": meta.cpus,
        "disk_interface": interface, "kvm": _given(meta.kvm, "allow"),
        "arch": platform.qemu_arch, "options": options,
        "kernel_command_line": f"{base_kernel_args(platform)} {meta.kernel_args or ''}".strip(),
        "version": version, "files": files,
    }


def _given(value: T | None, default: T) -> T:
    return default if value is None else value

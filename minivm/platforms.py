"""Platforms a MiniVM is built for, named as Docker names them (``linux/amd64``,
``linux/arm64``), and what each one means for the kernel, QEMU and GNS3.

``--platform`` takes Docker's values (also a comma-separated list); the default is the host's,
as Docker's. Outputs of linux/amd64 keep their plain names (``build/NAME/``); every other
platform's carry its architecture (``build/NAME-arm64/``), so both live side by side.
"""

from __future__ import annotations

import platform as host_platform
from dataclasses import dataclass

from minivm.errors import MinivmError


@dataclass(frozen=True)
class Platform:
    """One platform: Docker's architecture name and what QEMU, GNS3 and the guest call it."""

    arch: str  # Docker's (and Debian's): amd64, arm64
    qemu_arch: str  # qemu-system-<qemu_arch>; GNS3's `arch`; `uname -m` in the guest
    console: str  # the serial console's device in the guest
    # QEMU options the appliance carries (GNS3 gives qemu-system-aarch64 no machine of its own)
    machine_options: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return f"linux/{self.arch}"

    @property
    def qemu(self) -> str:
        return f"qemu-system-{self.qemu_arch}"

    @property
    def suffix(self) -> str:
        """What this platform adds to an output's name: nothing for linux/amd64."""
        return "" if self.arch == AMD64.arch else f"-{self.arch}"

    def named(self, name: str) -> str:
        return name + self.suffix

    @property
    def option(self) -> str:
        """`` --platform linux/arm64`` for a command line; nothing for the host's platform."""
        return "" if self == host() else f" --platform {self.text}"


AMD64 = Platform("amd64", "x86_64", "ttyS0")
# `virt` with the newest GIC the accelerator offers and the newest CPU (KVM: the host's).
ARM64 = Platform("arm64", "aarch64", "ttyAMA0",
                 ("-machine", "virt,gic-version=max", "-cpu", "max"))
PLATFORMS = {p.arch: p for p in (AMD64, ARM64)}
# Other spellings Docker and uname use for the same architectures.
ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "arm64/v8": "arm64"}


def parse(text: str) -> Platform:
    """``linux/arm64`` (Docker's), ``arm64``, ``aarch64``, ``linux/arm64/v8``, ... -> Platform."""
    value = text.strip().lower()
    os_name, _, arch = value.partition("/") if "/" in value else ("linux", "", value)
    arch = ALIASES.get(arch, arch)
    if os_name != "linux" or arch not in PLATFORMS:
        raise MinivmError(f"platform {text!r} is not one minivm builds",
                          hint="use " + " or ".join(p.text for p in PLATFORMS.values())
                               + " (Docker's names), or a comma-separated list of them")
    return PLATFORMS[arch]


def parse_list(text: str | None) -> list[Platform]:
    """``--platform``'s value: one platform or several, comma-separated; default the host's."""
    if not text:
        return [host()]
    chosen: list[Platform] = []
    for part in text.split(","):
        p = parse(part)
        if p not in chosen:
            chosen.append(p)
    return chosen


def by_qemu_arch(arch: str) -> Platform:
    """The platform of a GNS3 ``arch`` (``x86_64``, ``aarch64``)."""
    for p in PLATFORMS.values():
        if p.qemu_arch == arch:
            return p
    raise MinivmError(f"architecture {arch!r} is not one minivm runs",
                      hint="x86_64 or aarch64")


def host() -> Platform:
    """The host's platform (Docker's default); amd64 for a machine minivm does not know."""
    machine = host_platform.machine().lower()
    return PLATFORMS.get(ALIASES.get(machine, machine), AMD64)

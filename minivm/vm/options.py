"""The QEMU options an appliance may add to a command line: an allow-list.

An appliance's ``options`` (its ``qemu.options`` string) go at the end of QEMU's command line.
Options exist that read or write any host file (``-serial file:``, ``-device
e1000,romfile=``, ``-kernel``, ``-readconfig``, ``-D``...), open host devices or listening
sockets (``-chardev``, ``-vnc``, ``-gdb``) or rewrite what minivm set up (``-set``,
``-global``, ``-drive``, ``-netdev``). So only the options listed here pass, each with the
properties that cannot reach the host; anything else is refused with the option named, unless
the user says ``--allow-unsafe-options`` (as GNS3's own ``allow_unsafe_options`` setting,
whose deny-list this list replaces by the opposite rule).

QEMU spells an option ``-name`` or ``--name``; its argument is the next word, properties are
``key=value`` separated by commas (``,,`` is an escaped comma: refused, as is QEMU's JSON
form). A bare word is a disk image to QEMU: refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from minivm.errors import MinivmError

WORD = re.compile(r"[A-Za-z0-9_.:+-]+")
VALUE = re.compile(r"[A-Za-z0-9_.:+-]*")
NUMBER = re.compile(r"\d+")
SIZE = re.compile(r"\d+(\.\d+)?[KMGTkmgt]?[Bb]?")
SWITCH = re.compile(r"on|off|true|false|yes|no")
TEXT = re.compile(r"[^,\x00-\x1f\x7f]*")  # SMBIOS strings: anything but a comma or a control
EMPTY = re.compile(r"")
CPU_FLAG = re.compile(r"[+-]?[A-Za-z0-9_.-]+(=[A-Za-z0-9_.:+-]*)?")

# Devices that neither open a host file, device or socket nor take a backend by id.
NICS = ("e1000", "e1000-82544gc", "e1000-82545em", "e1000e", "igb", "i82550", "i82551",
        "i82557a", "i82557b", "i82557c", "i82558a", "i82558b", "i82559a", "i82559b",
        "i82559c", "i82559er", "i82562", "i82801", "ne2k_pci", "pcnet", "rtl8139",
        "virtio-net-pci", "vmxnet3")
DEVICES = frozenset((
    *NICS, "virtio-rng-pci", "virtio-balloon-pci", "virtio-keyboard-pci", "virtio-mouse-pci",
    "virtio-tablet-pci", "usb-tablet", "usb-kbd", "usb-mouse", "qemu-xhci", "nec-usb-xhci",
    "piix3-usb-uhci", "ich9-usb-ehci1", "usb-ehci", "i6300esb", "ib700", "pvpanic", "sga",
    "VGA", "cirrus-vga", "virtio-vga", "virtio-gpu-pci", "bochs-display", "secondary-vga",
    "pci-bridge", "pcie-pci-bridge", "i82801b11-bridge", "pcie-root-port", "virtio-scsi-pci",
    "ahci", "lsi53c895a", "intel-iommu", "vmcoreinfo",
    # arm64's `virt` (qemu-system-aarch64): the same virtio devices on virtio-mmio, and IOMMU
    "virtio-net-device", "virtio-rng-device", "virtio-balloon-device", "virtio-keyboard-device",
    "virtio-mouse-device", "virtio-tablet-device", "virtio-gpu-device", "virtio-scsi-device",
    "virtio-iommu-pci", "virtio-iommu-device"))
DEVICE_KEYS: dict[str, re.Pattern[str]] = {
    **{k: VALUE for k in ("id", "bus", "addr", "mac", "multifunction", "speed", "duplex",
                          "vectors", "mq", "rombar", "bootindex", "chassis", "chassis_nr",
                          "shpc", "port", "slot", "num_queues", "num-queues", "ioeventfd",
                          "disable-legacy", "disable-modern", "event_idx", "csum", "gso",
                          "host_mtu", "x-pcie-lnksta-dllla", "intremap", "caching-mode")},
    "romfile": EMPTY,  # "romfile=" turns the option ROM off; a path would read a host file
}
MACHINE_KEYS = {k: VALUE for k in (
    "type", "usb", "smm", "vmport", "kernel_irqchip", "kernel-irqchip", "hpet", "pit", "pic",
    "sata", "i8042", "acpi", "graphics", "mem-merge", "dump-guest-core", "max-ram-below-4g",
    "smbus", "suppress-vmdesc",
    # arm64's `virt`: the interrupt controller, the CPU's extensions, the IOMMU
    "gic-version", "its", "highmem", "secure", "virtualization", "mte", "ras", "iommu",
    "default-bus-bypass-iommu", "dtb-randomness", "dtb-kaslr-seed")}
SMBIOS_KEYS = {"type": NUMBER, **{k: TEXT for k in (
    "vendor", "version", "date", "release", "uefi", "manufacturer", "product", "serial",
    "uuid", "sku", "family", "asset", "location", "part", "speed", "max-speed",
    "current-speed", "processor-id", "sock_pfx")}}

HINT = ("remove it; only if you trust the appliance's author, run it anyway with "
        "--allow-unsafe-options")
Check = Callable[[str], str | None]


def _properties(arg: str, *, head: Check | None, keys: dict[str, re.Pattern[str]]) -> str | None:
    """Why ``arg`` (``[HEAD,]key=value,...``) is refused, or None."""
    if arg.startswith("{"):
        return "QEMU's JSON form is not accepted here"
    if ",," in arg:
        return "an escaped comma (,,) is not accepted here"
    parts = arg.split(",")
    if head is not None and "=" not in parts[0]:
        if why := head(parts[0]):
            return why
        parts = parts[1:]
    for part in parts:
        key, eq, value = part.partition("=")
        if key not in keys:
            return (f"property {key!r} is not one an appliance may set (allowed: "
                    f"{', '.join(sorted(keys))})")
        rule = keys[key]
        if not rule.fullmatch(value) or (rule is EMPTY and not eq):  # bare `romfile` is "on"
            shown = "an empty value" if rule is EMPTY else "a plain value"
            return f"property {part!r} is refused ({key} takes {shown} only)"
    return None


def _one_of(choices: frozenset[str] | Sequence[str], what: str) -> Check:
    def check(value: str) -> str | None:
        if value in choices:
            return None
        return f"{value!r} is not {what} an appliance may use"
    return check


def _matching(pattern: re.Pattern[str], what: str) -> Check:
    def check(value: str) -> str | None:
        return None if pattern.fullmatch(value) else f"{value!r} is not {what}"
    return check


def _cpu(arg: str) -> str | None:
    model, *flags = arg.split(",")
    if not WORD.fullmatch(model):
        return f"{model!r} is not a CPU model name"
    bad = [f for f in flags if not CPU_FLAG.fullmatch(f)]
    return f"CPU property {bad[0]!r} is not a plain flag" if bad else None


def _with_keys(keys: dict[str, re.Pattern[str]], head: Check | None = None) -> Check:
    return lambda arg: _properties(arg, head=head, keys=keys)


# option -> None (a flag, no argument) or the check of its argument
ALLOWED: dict[str, Check | None] = {
    "cpu": _cpu,
    "machine": _with_keys(MACHINE_KEYS, _matching(WORD, "a machine type")),
    "M": _with_keys(MACHINE_KEYS, _matching(WORD, "a machine type")),
    "smp": _with_keys({k: NUMBER for k in ("cpus", "sockets", "dies", "clusters", "cores",
                                           "threads", "maxcpus", "books", "drawers")},
                      _matching(NUMBER, "a number of CPUs")),
    "m": _with_keys({"size": SIZE, "slots": NUMBER, "maxmem": SIZE},
                    _matching(SIZE, "a memory size")),
    "device": _with_keys(DEVICE_KEYS, _one_of(DEVICES, "a device")),
    "rtc": _with_keys({"base": VALUE, "clock": VALUE, "driftfix": VALUE}),
    "boot": _with_keys({k: VALUE for k in ("order", "once", "menu", "splash-time",
                                           "reboot-timeout", "strict")},
                       _matching(re.compile(r"[a-p]+"), "a boot order")),
    "smbios": _with_keys(SMBIOS_KEYS),
    "overcommit": _with_keys({"mem-lock": SWITCH, "cpu-pm": SWITCH}),
    "msg": _with_keys({"timestamp": SWITCH, "guest-name": SWITCH}),
    "k": _matching(re.compile(r"[a-z]{2}(-[a-z]{2})?"), "a keyboard layout"),
    "vga": _one_of(("std", "cirrus", "virtio", "none"), "a display adapter"),
    "display": _one_of(("none",), "a display (only `none`: others open windows or sockets)"),
    "usbdevice": _one_of(("tablet", "mouse", "keyboard"), "a USB device"),
    "watchdog-action": _one_of(("reset", "shutdown", "poweroff", "inject-nmi", "pause",
                                "debug", "none"), "a watchdog action"),
    "nographic": None, "no-reboot": None, "no-shutdown": None, "usb": None,
    "no-hpet": None, "nodefaults": None, "no-user-config": None,
}


def problem(words: Sequence[str]) -> tuple[str, str] | None:
    """The first option of ``words`` (split as a shell would) that is refused, and why."""
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("-") or word in ("-", "--"):
            return word, "a bare word, which QEMU opens as a disk image"
        name = word[2:] if word.startswith("--") else word[1:]
        if name not in ALLOWED:
            return word, ("not one of the options an appliance may add (others can reach host "
                          "files, devices or sockets, or undo minivm's own)")
        rule = ALLOWED[name]
        if rule is None:
            i += 1
            continue
        if i + 1 >= len(words):
            return word, "it needs a value"
        if why := rule(words[i + 1]):
            return f"{word} {words[i + 1]}", why
        i += 2
    return None


def check(words: Sequence[str], *, where: str, allow_unsafe: bool = False) -> None:
    """Refuse options not on the allow-list, naming the option (``allow_unsafe``: pass all)."""
    if allow_unsafe or not (found := problem(words)):
        return
    option, why = found
    raise MinivmError(f"{where}: QEMU option {option} is not allowed in an appliance: {why}",
                      hint=HINT)

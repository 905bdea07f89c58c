"""The words minivm's options and records use, as StrEnums (typer shows them as choices; a
member equals its string, so records and JSON keep plain strings)."""

from __future__ import annotations

from enum import StrEnum


class AccelChoice(StrEnum):
    """``--accel``: probe KVM and fall back to TCG, or insist on one."""

    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class ConsoleKind(StrEnum):
    """Where a VM's serial console goes: a telnet port on 127.0.0.1 (as GNS3), a Unix
    socket, QEMU's own stdio, or nowhere."""

    TELNET = "telnet"
    UNIX = "unix"
    STDIO = "stdio"
    NONE = "none"


class NodeStatus(StrEnum):
    """A lab node, as ``lab status`` reports it."""

    RUNNING = "running"
    STOPPED = "stopped"
    CRASHED = "crashed"  # recorded as running, but its QEMU is gone


class DiskBackend(StrEnum):
    """How the root filesystem is written: ``mke2fs -d`` (root or fakeroot) or libguestfs."""

    AUTO = "auto"
    MKE2FS = "mke2fs"
    GUESTFS = "guestfs"

"""A QEMU stand-in for a host whose KVM half-works: put its folder first on PATH.

Given ``-enable-kvm`` (or ``-accel kvm``) together with ``-kernel``, it starts the real QEMU
under TCG without the kernel, initrd and arguments: the guest then never prints a byte, as a
Linux guest that hangs under a broken KVM (QEMU itself runs, its QMP answers ``running``).
Every other command line runs the real QEMU unchanged.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import sys
from pathlib import Path

NAME = "qemu-system-x86_64"


def install(folder: Path) -> Path:
    """Write the stand-in as ``folder/qemu-system-x86_64``; returns the folder (for PATH)."""
    real = shutil.which(NAME)
    if real is None:
        raise RuntimeError(f"{NAME} is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / NAME
    script.write_text(f"#!{sys.executable}\n"
                      f"import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
                      f"from tests.kvm_standin import main; main({real!r})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def rewrite(argv: list[str]) -> list[str]:
    """The command line the real QEMU gets."""
    kvm = "-enable-kvm" in argv or any(
        a == "-accel" and b.split(",")[0] == "kvm" for a, b in itertools.pairwise(argv))
    if not kvm or "-kernel" not in argv:
        return argv
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("-kernel", "-initrd", "-append"):
            next(args)
        elif arg == "-enable-kvm":
            out += ["-accel", "tcg"]
        elif arg == "-accel":
            out += ["-accel", "tcg"]
            next(args)
        else:
            out.append(arg)
    return out


def main(real: str) -> None:
    os.execv(real, [real, *rewrite(sys.argv[1:])])

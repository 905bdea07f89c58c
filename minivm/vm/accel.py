"""Choose QEMU's accelerator: ``kvm``, ``tcg``, or ``auto`` (KVM only if a guest really runs).

/dev/kvm may exist and answer ioctls while a guest never runs (a nested or broken host), so
``auto`` boots a 512-byte guest under KVM: it writes one byte to an ``isa-debug-exit`` port and
QEMU exits with a known code. No exit within the timeout means KVM hangs here: TCG it is.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Literal

from minivm.errors import MinivmError
from minivm.kinds import AccelChoice
from minivm.run import spawn, which
from minivm.ui import Reporter
from minivm.vm.qemu import QEMU

Accel = Literal["kvm", "tcg"]
CHOICES = tuple(AccelChoice)
PROBE_TIMEOUT = 3.0
_EXIT_PORT = 0xF4
_EXIT_VALUE = 0x31
# mov al, 0x31 ; out 0xf4, al ; cli ; hlt ; jmp $-1 (QEMU exits with (0x31 << 1) | 1 = 99)
_BOOT_CODE = bytes([0xB0, _EXIT_VALUE, 0xE6, _EXIT_PORT, 0xFA, 0xF4, 0xEB, 0xFD])


def _boot_sector() -> bytes:
    return _BOOT_CODE + bytes(510 - len(_BOOT_CODE)) + b"\x55\xaa"


@cache
def kvm_works(timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Whether a tiny guest runs to completion under KVM; with the reason when not."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    qemu = which(QEMU)
    with tempfile.TemporaryDirectory(prefix="minivm-kvm-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(_boot_sector())
        argv = [qemu, "-accel", "kvm", "-nodefaults", "-display", "none", "-m", "16",
                "-drive", f"file={disk},format=raw,if=ide", "-boot", "order=c",
                "-device", f"isa-debug-exit,iobase={_EXIT_PORT:#x},iosize=0x01"]
        with spawn(argv) as proc:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                return False, f"a KVM guest did not run within {timeout:.0f} s"
    if proc.returncode == (_EXIT_VALUE << 1) | 1:
        return True, "a KVM guest ran"
    lines = err.decode(errors="replace").strip().splitlines()
    return False, f"KVM failed: {lines[-1] if lines else f'exit {proc.returncode}'}"


def choose(accel: str, *, kvm_setting: str = "allow", reporter: Reporter | None = None) -> Accel:
    """The accelerator for ``--accel`` (auto, kvm, tcg) and the appliance's ``kvm`` setting
    (require, allow, disable). ``auto`` probes and says which it picked."""
    if accel not in CHOICES:
        raise MinivmError(f"--accel {accel!r} is not one of {', '.join(CHOICES)}")
    if accel == "tcg" or (accel == "auto" and kvm_setting == "disable"):
        return "tcg"
    ok, why = kvm_works()
    if accel == "kvm" or kvm_setting == "require":
        if not ok:
            raise MinivmError(f"KVM cannot be used: {why}",
                              hint="use --accel tcg (slower, always works)")
        return "kvm"
    if reporter:
        reporter.info("acceleration: KVM" if ok else f"acceleration: TCG ({why})")
    return "kvm" if ok else "tcg"

"""Choose QEMU's accelerator: ``kvm``, ``tcg``, or ``auto`` (KVM only if Linux really boots).

``auto`` asks :mod:`minivm.hostfacts` whether each kernel the VMs boot reaches user space under
KVM on this host (its probe, its cached verdicts); without a kernel, whether a boot sector runs.
"""

from __future__ import annotations

from pathlib import Path

from minivm.errors import MinivmError
from minivm.hostfacts import Accel, kernel_boots_under_kvm, kvm_works
from minivm.kinds import AccelChoice
from minivm.ui import Reporter

__all__ = ["CHOICES", "Accel", "choose"]
CHOICES = tuple(AccelChoice)


def _kvm_verdict(kernels: list[Path]) -> tuple[bool, str]:
    if not kernels:
        return kvm_works()
    for kernel in sorted(set(kernels)):
        ok, why = kernel_boots_under_kvm(kernel)
        if not ok:
            return False, why
    return True, "Linux booted under KVM"


def choose(accel: str, *, kvm_setting: str = "allow", reporter: Reporter | None = None,
           kernels: list[Path] | None = None) -> Accel:
    """The accelerator for ``--accel`` (auto, kvm, tcg) and the appliance's ``kvm`` setting
    (require, allow, disable). ``kernels``: what the VMs boot (``auto`` picks KVM only when
    each of them reaches user space under it). ``auto`` says which it picked."""
    if accel not in CHOICES:
        raise MinivmError(f"--accel {accel!r} is not one of {', '.join(CHOICES)}")
    if accel == "tcg" or (accel == "auto" and kvm_setting == "disable"):
        return "tcg"
    if accel == "kvm" or kvm_setting == "require":
        ok, why = kvm_works()  # forced: only refuse what cannot start at all
        if not ok:
            raise MinivmError(f"KVM cannot be used: {why}",
                              hint="use --accel tcg (slower, always works)")
        return "kvm"
    ok, why = _kvm_verdict(list(kernels or []))
    if reporter:
        reporter.info("acceleration: KVM" if ok else f"acceleration: TCG ({why})")
    return "kvm" if ok else "tcg"

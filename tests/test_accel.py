"""``--accel auto``: KVM only when the VM's own kernel reaches user space under it.

The half-working KVM is simulated with a QEMU stand-in (tests/kvm_standin.py) whose KVM guests
never print; the probe's guest itself boots for real under TCG.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from minivm import hostfacts
from minivm.vm import accel
from tests import kvm_standin


def test_probe_init_prints_the_marker_and_exits(tmp_path: Path) -> None:
    """The probe's /init is a real x86-64 program: run it here."""
    program = tmp_path / "init"
    program.write_bytes(hostfacts.probe_init())
    program.chmod(0o755)
    done = subprocess.run([str(program)], capture_output=True, timeout=10)
    assert (done.returncode, done.stdout) == (0, hostfacts.MARKER + b"\n")


def test_standin_rewrites_only_kvm_boots_of_a_kernel() -> None:
    plain = ["-accel", "tcg", "-kernel", "k", "-m", "64"]
    assert kvm_standin.rewrite(plain) == plain
    assert kvm_standin.rewrite(["-enable-kvm", "-machine", "smm=off", "-kernel", "k",
                                "-append", "a b", "-m", "64"]) == \
        ["-accel", "tcg", "-machine", "smm=off", "-m", "64"]
    assert kvm_standin.rewrite(["-accel", "kvm", "-drive", "x"]) == ["-accel", "kvm", "-drive", "x"]


@pytest.fixture
def half_working_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH leads to the stand-in, the verdicts go to a fresh cache, and a KVM device that
    opens (the host's, or a stand-in file where there is none)."""
    folder = kvm_standin.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.setenv("MINIVM_CACHE_DIR", str(tmp_path / "cache"))
    if not os.access(hostfacts.KVM_DEVICE, os.R_OK | os.W_OK):
        device = tmp_path / "kvm"
        device.write_bytes(b"")
        monkeypatch.setattr(hostfacts, "KVM_DEVICE", str(device))
    return folder


@pytest.mark.boot
def test_probe_guest_boots_under_tcg(kit) -> None:
    """The probe's initramfs works: under TCG the kit's kernel reaches the marker."""
    ok, why = hostfacts.boot_to_marker(kit.kernel, "tcg", timeout=60)
    assert ok, why


@pytest.mark.boot
def test_auto_picks_tcg_when_linux_does_not_boot_under_kvm(kit, half_working_kvm: Path
                                                           ) -> None:
    chosen = accel.choose("auto", kernels=[kit.kernel])
    assert chosen == "tcg"
    verdict = hostfacts.verdict_path(kit.kernel)
    data = json.loads(verdict.read_text())
    assert data["kvm"] is False and "user space" in data["why"], data
    ok, why = hostfacts.kernel_boots_under_kvm(kit.kernel)  # the cached verdict, no second probe
    assert not ok and "cached" in why
    assert accel.choose("tcg", kernels=[kit.kernel]) == "tcg"

"""Facts about this host that more than one layer needs: whether KVM runs Linux here.

/dev/kvm may exist and answer ioctls while a guest never runs, or runs a few real-mode
instructions and then hangs (nested or broken hosts). So the probe boots the kernel a VM will
boot, under KVM, with a probe initramfs whose init prints a marker on the serial console and
exits: the marker within :data:`PROBE_TIMEOUT` seconds means the kernel booted to user space,
anything else means no. The verdict is cached per host, QEMU binary and kernel (the cache
folder's ``accel/``), so the probe costs its seconds once. Without a kernel (an appliance that
boots from its disk) a 512-byte boot sector is the probe, uncached.

The image stage asks (libguestfs' appliance must not hang under KVM) and so does the VM layer
(:mod:`minivm.vm.accel` picks the accelerator); this module depends on neither layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import struct
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Literal

from minivm import paths
from minivm.fsutil import atomic_write_bytes
from minivm.platforms import AMD64
from minivm.run import spawn, which

Accel = Literal["kvm", "tcg"]
PROBE_TIMEOUT = 8.0  # a kernel reaches user space in well under a second under KVM
MARKER = b"minivm-kvm-probe-ok"
KVM_DEVICE = "/dev/kvm"
QEMU = AMD64.qemu  # the probes are x86-64 programs
# KVM as GNS3 spells it (the VM layer's command line uses the same)
KVM_ARGS = ("-enable-kvm", "-machine", "smm=off")
_EXIT_PORT = 0xF4
_EXIT_VALUE = 0x31
# mov al, 0x31 ; out 0xf4, al ; cli ; hlt ; jmp $-1 (QEMU exits with (0x31 << 1) | 1 = 99)
_BOOT_CODE = bytes([0xB0, _EXIT_VALUE, 0xE6, _EXIT_PORT, 0xFA, 0xF4, 0xEB, 0xFD])


def kvm_device_usable() -> bool:
    """Whether this process may open the KVM device for reading and writing."""
    return os.access(KVM_DEVICE, os.R_OK | os.W_OK)


def _boot_sector() -> bytes:
    return _BOOT_CODE + bytes(510 - len(_BOOT_CODE)) + b"\x55\xaa"


def probe_init() -> bytes:
    """A static x86-64 ELF program: write(1, MARKER "\\n"), exit_group(0). The probe
    initramfs's /init (the kernel opens /dev/console as its stdout); harmless anywhere else."""
    message = MARKER + b"\n"
    code = (b"\xb8\x01\x00\x00\x00"          # mov eax, 1 (write)
            b"\xbf\x01\x00\x00\x00"          # mov edi, 1
            b"\x48\x8d\x35" + struct.pack("<i", 18) +  # lea rsi, [rip + 18]: the message
            b"\xba" + struct.pack("<I", len(message)) +  # mov edx, len
            b"\x0f\x05"                      # syscall
            b"\xb8\xe7\x00\x00\x00"          # mov eax, 231 (exit_group)
            b"\x31\xff"                      # xor edi, edi
            b"\x0f\x05"                      # syscall
            b"\xeb\xfe")                     # jmp $
    base, start = 0x400000, 64 + 56
    size = start + len(code) + len(message)
    header = (b"\x7fELF\x02\x01\x01" + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, base + start, 64, 0, 0, 64, 56, 1,
                            0, 0, 0))
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + segment + code + message


def _probe_initramfs(path: Path) -> None:
    from minivm.kit import initramfs

    tree = initramfs.Tree()
    tree.char_device("dev/console", 5, 1)
    tree.file("init", probe_init(), mode=0o755)
    initramfs.write(tree, path, compression="none")


def boot_to_marker(kernel: Path, accel: Accel, *, timeout: float = PROBE_TIMEOUT,
                   qemu: str = QEMU) -> tuple[bool, str]:
    """Boot ``kernel`` with the probe initramfs under ``accel``, as GNS3 starts a node
    (machine pc, its accelerator arguments); whether the marker came within ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="minivm-probe-") as tmp:
        initrd = Path(tmp) / "probe.cpio"
        _probe_initramfs(initrd)
        accel_args = KVM_ARGS if accel == "kvm" else ("-accel", "tcg")
        argv = [which(qemu), "-nodefaults", "-display", "none", "-m", "256", "-no-reboot",
                *accel_args, "-kernel", str(kernel), "-initrd", str(initrd),
                "-append", "console=ttyS0 quiet panic=-1 rdinit=/init", "-serial", "stdio"]
        seen, err = b"", b""
        deadline = time.monotonic() + timeout
        with spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            streams = [proc.stdout, proc.stderr]
            while MARKER not in seen and streams and (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select(streams, [], [], left)
                for stream in ready:
                    chunk = os.read(stream.fileno(), 65536)
                    if not chunk:
                        streams.remove(stream)
                    elif stream is proc.stdout:
                        seen = (seen + chunk)[-4096:]
                    else:
                        err = (err + chunk)[-4096:]
            exited = proc.poll() is not None
            proc.kill()
    if MARKER in seen:
        return True, f"Linux booted under {accel}"
    if not exited:
        return False, f"the kernel did not reach user space under {accel} within {timeout:.0f} s"
    lines = err.decode(errors="replace").strip().splitlines()
    return False, (f"QEMU exited ({proc.returncode}) before the kernel reached user space under "
                   f"{accel}" + (f": {lines[-1]}" if lines else ""))


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _content_key(path: Path) -> str:
    """A kernel by its bytes: every bundle holds its own copy or link of the kit's."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _host_key() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "microcode")):
                model += line
    except OSError:
        pass
    return "|".join(os.uname()) + model


def verdict_path(kernel: Path, qemu: str = QEMU) -> Path:
    """Where the KVM verdict for this host, QEMU binary and kernel is kept."""
    key = "\n".join((_host_key(), _file_key(Path(which(qemu))), _content_key(kernel)))
    return paths.cache_dir() / "accel" / f"kvm-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def record_verdict(kernel: Path, ok: bool, why: str, qemu: str = QEMU) -> Path:
    """Keep a verdict (the probe's, or a node's that did not boot under KVM after all)."""
    path = verdict_path(kernel, qemu)
    data = {"kvm": ok, "why": why, "kernel": str(kernel.resolve()), "qemu": which(qemu),
            "host": os.uname().nodename, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime())}
    atomic_write_bytes(path, json.dumps(data, indent=2).encode() + b"\n")
    return path


def _cached_verdict(path: Path) -> tuple[bool, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("kvm"), bool):
        return None
    return data["kvm"], f"{data.get('why', '')} (cached in {path}; remove it to probe again)"


def kernel_boots_under_kvm(kernel: Path, qemu: str = QEMU) -> tuple[bool, str]:
    """The cached verdict for ``kernel`` on this host, probing once when there is none."""
    if not kvm_device_usable():
        return False, f"{KVM_DEVICE} is missing or not accessible"
    path = verdict_path(kernel, qemu)
    if (cached := _cached_verdict(path)) is not None:
        return cached
    ok, why = boot_to_marker(kernel, "kvm", qemu=qemu)
    record_verdict(kernel, ok, why, qemu)
    return ok, why


@cache
def kvm_works(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether a 512-byte guest runs to completion under KVM (for appliances with no kernel
    of their own); with the reason when not."""
    if not kvm_device_usable():
        return False, f"{KVM_DEVICE} is missing or not accessible"
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


def host_linux_under_kvm() -> tuple[bool, str]:
    """The KVM verdict for the host's newest /boot kernel (what libguestfs boots)."""
    kernels = [k for k in sorted(Path("/boot").glob("vmlinuz-*")) if os.access(k, os.R_OK)]
    return kernel_boots_under_kvm(kernels[-1]) if kernels else kvm_works()

"""Boot QEMU in tests and talk to its serial console (a small pexpect look-alike).

    argv = qemu_argv(kernel=k, initrd=i, append="console=ttyS0 ...", disks=[Disk(p, "scsi")])
    with VM(argv) as vm:
        vm.expect(r"login:", timeout=60)
        vm.sendline("root")
        assert vm.wait_exit(timeout=30) == 0

The guest's ttyS0 is QEMU's stdio (a pipe): everything it prints is kept in ``vm.output``.
``expect`` searches from the end of the previous match, like pexpect. QEMU is killed on close.
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from minivm.kinds import ConsoleKind
from minivm.vm.console import CURSOR_REPORT, DSR
from minivm.vm.qemu import Console, Drive, Machine, UdpTunnel, command_line

# Disks are attached by minivm's own builder, as GNS3 attaches them: a test boots what a
# GNS3 node boots. Disk(path, interface, format, snapshot).
Disk = Drive


def scsi_disk_at(path: Path, target: int, size_mb: int = 4) -> list[str]:
    """QEMU arguments for a blank raw disk at ``target`` of the first SCSI controller (GNS3
    puts its disks at target 0); in the guest its size is ``size_mb`` * 2048 sectors."""
    with path.open("wb") as f:
        f.truncate(size_mb << 20)
    return ["-drive", f"file={path},format=raw,if=none,id=at{target},snapshot=on",
            "-device", f"scsi-hd,drive=at{target},scsi-id={target}"]


def size_at_target(target: int) -> str:
    """A shell command printing the size in sectors of the disk at SCSI target ``target``."""
    return f"cat /sys/class/scsi_device/*:0:{target}:0/device/block/*/size 2>/dev/null"


def qemu_argv(*, kernel: Path, initrd: Path | None = None, append: str = "console=ttyS0",
              disks: list[Disk] | None = None, adapters: Sequence[UdpTunnel | None] = (),
              adapter_type: str = "virtio-net-pci", qmp: Path | None = None,
              machine: str = "pc", memory: int = 256,
              extra: list[str] | None = None) -> list[str]:
    """The QEMU command line of minivm's own builder (``qemu.Machine``, GNS3's shape) under
    TCG, the serial console on stdio; then the machine type, ``-no-reboot`` (a guest that
    reboots or panics ends QEMU) and ``extra`` arguments the builder has no field for."""
    m = Machine(name="minivm-test", node_id=uuid.uuid4(), ram=memory, kernel=kernel,
                initrd=initrd, append=append, drives=tuple(disks or ()),
                adapters=tuple(adapters), adapter_type=adapter_type, qmp=qmp,
                console=Console(ConsoleKind.STDIO))
    return [*command_line(m), "-M", machine, "-no-reboot", "-vga", "none", *(extra or [])]


def user_nics(count: int = 1, model: str = "virtio-net-pci") -> list[str]:
    """QEMU arguments for ``count`` adapters on QEMU's user network (its own DHCP server),
    behind a PCI bridge as GNS3 adds adapters: the one kind of NIC minivm's builder has no
    field for (a lab's adapters are UDP tunnels: ``qemu_argv(adapters=...)``)."""
    if not count:
        return []
    args = ["-device", "i82801b11-bridge,id=dmi", "-device",
            "pci-bridge,id=br1,bus=dmi,chassis_nr=1,addr=0x1,shpc=off"]
    for i in range(count):
        args += ["-device", f"{model},netdev=n{i},bus=br1,addr={i:#x},"
                 f"mac=52:54:00:12:34:{0x50 + i:02x}", "-netdev", f"user,id=n{i}"]
    return args


class VM:
    """A running QEMU whose serial console is read into ``output`` as it arrives."""

    def __init__(self, argv: list[str], *, log: Path | None = None) -> None:
        self.argv = argv
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, bufsize=0)
        self._text = ""
        self._pos = 0
        self._cond = threading.Condition()
        self._eof = False
        self._typing = threading.Lock()
        self._log = log.open("ab") if log else None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if DSR in chunk:  # busybox ash asks where the cursor is before its prompt: a
                self.send(CURSOR_REPORT.decode())  # console that never answers loses input

            with self._cond:
                self._text += decoder.decode(chunk, final=not chunk).replace("\r", "")
                self._eof = not chunk
                if self._log and chunk:
                    self._log.write(chunk)
                    self._log.flush()
                self._cond.notify_all()
            if not chunk:
                return

    @property
    def output(self) -> str:
        """Everything the guest printed so far (CRs removed)."""
        with self._cond:
            return self._text

    def expect(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Wait until ``pattern`` appears after the previous match; return the match.

        Raises AssertionError (with the console's tail) on timeout or when QEMU exits first.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if match := regex.search(self._text, self._pos):
                    self._pos = match.end()
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    why = "QEMU exited" if self._eof else f"{timeout:.0f} s passed"
                    raise AssertionError(f"{regex.pattern!r} not seen ({why}); console tail:\n"
                                         + self._text[-3000:])
                self._cond.wait(min(left, 0.5))

    def _tail(self, chars: int = 3000) -> str:
        with self._cond:
            return self._text[-chars:]

    def send(self, text: str) -> None:
        """Type ``text`` on the console."""
        assert self.proc.stdin is not None
        with self._typing:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()

    def sendline(self, text: str = "") -> None:
        self.send(text + "\n")

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit (the guest powered off); return its exit code."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"QEMU still running after {timeout:.0f} s; console tail:\n"
                                 + self._tail()) from None
        self._reader.join(timeout=5)
        return code

    @property
    def seconds(self) -> float:
        """Seconds since QEMU was started."""
        return time.monotonic() - self.started

    def close(self) -> None:
        """Kill QEMU if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdin:
            self.proc.stdin.close()
        if self._log:
            self._log.close()

    def __enter__(self) -> VM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def busybox_root_disk(path: Path, *, init: str, label: str = "minivm-root",
                      size_mb: int = 32, init_path: str = "sbin/init",
                      files: dict[str, str] | None = None, lib: str = "dir") -> Path:
    """A raw ext4 image holding the host's static busybox (with applet links), ``init`` (a
    script) at ``init_path`` and any extra ``files``; made with ``mke2fs -d`` (run as root).

    ``lib``: "dir" (a plain /lib), "link" (/lib -> usr/lib, as merged-/usr distributions have),
    "abslink" (/lib -> /usr/lib) or "none" (no /lib at all)."""
    tree = path.with_name(path.name + ".tree")
    shutil.rmtree(tree, ignore_errors=True)
    for folder in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (tree / folder).mkdir(parents=True)
    if lib == "dir":
        (tree / "lib").mkdir()
    elif lib in ("link", "abslink"):
        (tree / "usr/lib").mkdir(parents=True)
        (tree / "lib").symlink_to("usr/lib" if lib == "link" else "/usr/lib")
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    shutil.copy2(busybox, tree / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (tree / "bin" / applet).symlink_to("busybox")
    for name, text in {init_path: init, **(files or {})}.items():
        target = tree / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o755)
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mb << 20)
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-L", label, "-d", str(tree), str(path)],
                   check=True)
    shutil.rmtree(tree)
    return path

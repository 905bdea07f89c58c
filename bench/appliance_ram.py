"""The smallest RAM each shipped appliance boots with, reliably, under TCG.

    .venv/bin/python -m bench.appliance_ram [--flavour cloud] [--runs 3] [--ram 48 64 96 128]

Boots each bundle of bench/bundle_sizes.py from its .gns3a as GNS3 would (minivm/qemu.py,
linked-clone overlays) with the RAM overridden; a run passes when the main process starts
(its "Welcome to" line) and the power button (QMP ``system_powerdown``) makes QEMU exit 0. Prints
passes/runs and the mean seconds to the main process per RAM size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import uuid
from pathlib import Path

from bench import kits
from bench.bundle_sizes import bundles
from minivm.errors import MinivmError
from minivm.gns3 import reader
from minivm.gns3.machine import machine_from_appliance
from minivm.kinds import ConsoleKind
from minivm.paths import build_dir
from minivm.ui import Reporter
from minivm.vm import qemu, vmctl
from tests.vm import VM

REPO = Path(__file__).resolve().parent.parent


def boot_once(bundle: Path, ram: int) -> float | None:
    """Seconds to the main process, or None when the boot or the power-down failed."""
    app = reader.load(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        disks = qemu.create_overlays(app.images, work)
        qmp = work / "qmp.sock"
        machine = machine_from_appliance(app, name="ram", node_id=uuid.uuid4(), disks=disks,
                                         ram=ram, console=qemu.Console(ConsoleKind.STDIO),
                                         qmp=qmp)
        with VM(qemu.command_line(machine)) as vm:
            try:
                seen = vm.expect(r"Welcome to .*a MiniVM|Kernel panic|Out of memory|"
                                 r"Killed process", timeout=60)
                if not seen.group(0).startswith("Welcome"):
                    return None
                seconds = vm.seconds
                vm.expect(r"[#$] ", timeout=30)
                vmctl.powerdown(qmp)
                return seconds if vm.wait_exit(timeout=60) == 0 else None
            except (AssertionError, OSError, MinivmError):
                return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kits.add_flavour(parser)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ram", type=int, nargs="+", default=[48, 64, 96, 128])
    args = parser.parse_args()
    written = bundles(build_dir() / "bench-appliance", Reporter(quiet=True), args.flavour)
    print(f"{'appliance':15} {'RAM MB':>6} {'passed':>7} {'s to main':>10}")
    for name, bundle in written.items():
        for ram in args.ram:
            times = [boot_once(bundle.path, ram) for _ in range(args.runs)]
            ok = [t for t in times if t is not None]
            mean = f"{statistics.mean(ok):10.2f}" if ok else f"{'-':>10}"
            print(f"{name:15} {ram:6} {len(ok):>3}/{args.runs:<3} {mean}", flush=True)


if __name__ == "__main__":
    main()

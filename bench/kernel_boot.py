"""Boot time of the kernel kit vs. the floor, under TCG on -M pc, side by side.

floor: the kit's kernel with an initramfs holding only a static busybox whose /init reports
       the uptime and powers off at once (same kernel arguments and devices as the kit run);
kit:   the kit's kernel and initramfs, root disk (busybox, ext4 labelled minivm-root) and the
       module disk on virtio-scsi as GNS3 attaches them, `rw quiet`; the root's /sbin/init
       reports the uptime and powers off.
Measured: guest uptime when the (root's) init starts, and QEMU's wall time to that point.
Runs alternate floor/kit so that load from other work on the machine hits both alike.

    .venv/bin/python bench/kernel_boot.py [--runs 5] [--interface scsi|virtio]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from vm import VM, Disk, busybox_root_disk, qemu_argv

from minivm import initramfs, kernel
from minivm.ui import Reporter

REPORT = 'read u _ < /proc/uptime; echo "UPTIME-AT-INIT $u"\n'


def floor_initrd(path: Path) -> Path:
    tree = initramfs.Tree()
    tree.file("bin/busybox", Path("/bin/busybox").read_bytes(), mode=0o755)
    tree.symlink("bin/sh", "busybox")
    tree.char_device("dev/console", 5, 1)
    tree.dir("proc")
    tree.file("init", ("#!/bin/sh\n/bin/busybox mount -t proc proc /proc\n" + REPORT
                       + "/bin/busybox poweroff -f\n").encode(), mode=0o755)
    initramfs.write(tree, path)
    return path


def boot(argv: list[str]) -> tuple[float, float]:
    with VM(argv) as vm:
        match = vm.expect(r"UPTIME-AT-INIT ([\d.]+)", timeout=180)
        wall = vm.seconds
        vm.wait_exit(timeout=60)
    return float(match.group(1)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interface", default="scsi", choices=["scsi", "virtio", "ide"])
    args = parser.parse_args()
    kit = kernel.build(reporter=Reporter(quiet=True))
    with tempfile.TemporaryDirectory() as tmp:
        floor_img = floor_initrd(Path(tmp) / "floor.img")
        root = busybox_root_disk(Path(tmp) / "root.img",
                                 init="#!/bin/sh\n" + REPORT + "poweroff -f\n")
        # Both get the same kernel arguments and the same devices (disks included): only the
        # initramfs differs.
        append = "console=ttyS0 quiet root=LABEL=minivm-root rw"
        disks = [Disk(root, args.interface, "raw", snapshot=True)]
        if kit.modules:
            disks.append(Disk(kit.modules, args.interface, snapshot=True))
        floor_argv = qemu_argv(kernel=kit.kernel, initrd=floor_img, append=append, disks=disks)
        kit_argv = qemu_argv(kernel=kit.kernel, initrd=kit.initrd, append=append, disks=disks)
        results: dict[str, list[tuple[float, float]]] = {"floor": [], "kit": []}
        for i in range(args.runs):
            results["floor"].append(boot(floor_argv))
            results["kit"].append(boot(kit_argv))
            print(f"run {i + 1}: floor {results['floor'][-1][0]:.2f} s, "
                  f"kit {results['kit'][-1][0]:.2f} s (guest uptime at init)", flush=True)
    med = {k: (statistics.median(u for u, _ in v), statistics.median(w for _, w in v))
           for k, v in results.items()}
    print(f"\n{'':18}{'floor':>10}{'kit':>10}{'ratio':>8}")
    for label, idx in (("uptime at init", 0), ("QEMU wall to init", 1)):
        f, k = med["floor"][idx], med["kit"][idx]
        print(f"{label:18}{f:>9.2f}s{k:>9.2f}s{k / f:>7.2f}x")
    print(f"(medians of {args.runs} runs; disks on {args.interface}; "
          f"initramfs {kit.initrd.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

"""Boot time of the kernel kit vs. the floor, under TCG on -M pc, side by side.

floor:     the kit's kernel with an initramfs holding only a static busybox whose /init reports
           and powers off at once (same kernel arguments and devices as the kit runs);
kit:       the kit's kernel and initramfs, a root disk shaped as `minivm build` makes them
           (busybox, ext4 labelled minivm-root, its init at /.minivm/init) and the module disk,
           on virtio-scsi as GNS3 attaches them, `rw quiet`; the root's init reports and powers
           off. The initramfs leaves the IDE, network and power-button drivers and the SCSI
           targets above 3 to the MiniVM init, which loads them while the main process starts
           (bench/init_figures.py measures that whole chain);
other init: the same root with its init at /sbin/init: the initramfs does all of that itself.
Measured: QEMU's wall time from its start to the report on the serial console (the figure),
and the guest's uptime at the report.
Runs alternate floor/kit/other so that load from other work on the machine hits all alike.

    .venv/bin/python -m bench.kernel_boot [--flavour cloud] [--runs 9] [--nics 1]
                                          [--interface scsi|virtio|ide]
                                          [--compare OLD-INITRD] [--bound]
"""
from __future__ import annotations

import argparse
import shutil
import stat
import statistics
import tempfile
from pathlib import Path

from bench import kits
from minivm.kit import initramfs, kernel
from tests.vm import VM, Disk, busybox_root_disk, qemu_argv, user_nics

# Builtins only (read, echo): a fork or two would cost the floor and the kit ~0.05 s each.
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


# The least any initramfs must do with this kernel to reach a root on virtio-scsi with the
# NIC GNS3 gives: load the drivers (one modprobe), wait for the disk, mount it, move /dev,
# /proc and /sys over, switch_root.
# No checks, no coldplug, no module disk, no fallbacks: a lower bound, not something to ship.
BOUND_INIT = """#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
modprobe -a virtio_pci virtio_scsi sd_mod virtio_net
until [ -b /dev/sda ]; do sleep 0.01; done
mount -t ext4 -o rw /dev/sda /newroot
for fs in dev proc sys; do mount --move /$fs /newroot/$fs; done
exec switch_root /newroot /.minivm/init
"""


def bound_initrd(kit: kernel.Kit, path: Path) -> Path:
    """The kit's initramfs (busybox, modules) with BOUND_INIT as its /init."""
    entries = [e for e in initramfs.read_cpio(initramfs.decompress(kit.initrd.read_bytes()))
               if e.path != "init"]
    entries.append(initramfs.Entry("init", stat.S_IFREG | 0o755, BOUND_INIT.encode()))
    path.write_bytes(initramfs.compress(initramfs.cpio_bytes(entries), "gzip"))
    return path


def in_memory(kit: kernel.Kit, work: Path) -> kernel.Kit:
    """The kit copied into ``work`` (on tmpfs: see ``memory_dir``)."""
    folder = work / "kit"
    shutil.copytree(kit.folder, folder)
    return kernel.Kit(folder=folder, manifest=kit.manifest)


def memory_dir() -> str | None:
    """Where benches keep what QEMU reads: /dev/shm when it exists. Page cache on this machine
    is reclaimed behind our back (DAMON), so files on disk put host I/O into some boots and not
    others (the kit reads its disks, the floor does not): measure the guest, not the host disk."""
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def boot(argv: list[str]) -> tuple[float, float]:
    """(guest uptime, QEMU wall time) at the report (read to its end of line: a match on a
    half-received line read whole seconds before)."""
    with VM(argv) as vm:
        match = vm.expect(r"UPTIME-AT-INIT ([\d.]+)\n", timeout=180)
        wall = vm.seconds
        vm.wait_exit(timeout=60)
    return float(match.group(1)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kits.add_flavour(parser)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--interface", default="scsi", choices=["scsi", "virtio", "ide"])
    parser.add_argument("--nics", type=int, default=1, help="network adapters (GNS3: >= 1)")
    parser.add_argument("--compare", type=Path, metavar="INITRD",
                        help="also boot the MiniVM-shaped root with this initramfs (e.g. one "
                             "built from an older commit), side by side")
    parser.add_argument("--bound", action="store_true",
                        help="also boot the least initramfs possible (BOUND_INIT): the floor "
                             "any initramfs with this kernel and these devices stands on")
    args = parser.parse_args()
    init = "#!/bin/sh\n" + REPORT + "poweroff -f\n"
    with tempfile.TemporaryDirectory(dir=memory_dir()) as tmp:
        work = Path(tmp)
        kit = in_memory(kits.kit(args.flavour), work)
        initrd_mb = kit.initrd.stat().st_size / 1e6
        floor_img = floor_initrd(work / "floor.img")
        roots = {"kit": busybox_root_disk(work / "root.img", init=init, init_path=".minivm/init"),
                 "other init": busybox_root_disk(work / "other.img", init=init)}
        # All get the same kernel arguments and the same devices (disks included): only the
        # initramfs, or where the root's init is, differs.
        append = "console=ttyS0 quiet root=LABEL=minivm-root rw"
        argvs = {}
        variants = [("floor", floor_img, roots["kit"]), ("kit", kit.initrd, roots["kit"]),
                    ("other init", kit.initrd, roots["other init"])]
        if args.compare:
            variants.append(("compared", args.compare, roots["kit"]))
        if args.bound:
            variants.append(("bound", bound_initrd(kit, work / "bound.img"), roots["kit"]))
        for name, initrd, root in variants:
            disks = [Disk(root, args.interface, "raw", snapshot=True)]
            if kit.modules:
                disks.append(Disk(kit.modules, args.interface, snapshot=True))
            argvs[name] = qemu_argv(kernel=kit.kernel, initrd=initrd, append=append,
                                    disks=disks, extra=user_nics(args.nics))
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in argvs}
        for i in range(args.runs):
            for name, argv in argvs.items():
                results[name].append(boot(argv))
            print(f"run {i + 1} (wall): " + ", ".join(f"{k} {v[-1][1]:.2f} s"
                                                      for k, v in results.items()), flush=True)
    med = {k: (statistics.median(t for t, _ in v), statistics.median(w for _, w in v))
           for k, v in results.items()}
    print(f"\n{'':22}" + "".join(f"{k:>12}" for k in med) + "  ratios to the floor")
    for label, idx in (("QEMU wall to init", 1), ("guest uptime at init", 0)):
        f = med["floor"][idx]
        print(f"{label:22}" + "".join(f"{v[idx]:>11.2f}s" for v in med.values()) + "  "
              + ", ".join(f"{k} {v[idx] / f:.2f}x" for k, v in med.items() if k != "floor"))
    print(f"(medians of {args.runs} runs; disks on {args.interface}, {args.nics} NIC(s); "
          f"initramfs {initrd_mb:.2f} MB)")


if __name__ == "__main__":
    main()

"""Boot to the image's main process with each kernel flavour, GNS3's command line, TCG, side by
side with the floor (Debian's cloud kernel and an initramfs that reports at once).

floor (cloud):   the cloud kit's kernel, an initramfs holding only a static busybox whose /init
                 reports its uptime and powers off (no driver loaded, no root mounted): the
                 least any boot with the distribution kernel can take;
floor (minimal): the same initramfs on the minimal kit's kernel;
IMAGE/FLAVOUR:   the flavour's kit (kernel, initramfs, module disk) booting the image (root
                 disk as `minivm build` makes it), whose ENTRYPOINT first prints the uptime.
Every variant runs the same QEMU command line, built by minivm.qemu as GNS3 3.0.6 builds it
(disks on scsi = virtio-scsi, one adapter of --adapter behind GNS3's PCI bridge, the
appliance's RAM and kernel arguments); only the kernel, initramfs and root differ.
Measured: QEMU's wall time from its start to the marker on the serial console, and the guest
uptime at the marker. Runs alternate between the variants so that load hits all alike.

    .venv/bin/python -m bench.kernel_flavours [--runs 5] [--adapter e1000] [--interface sata]
        [--firmware seabios qboot]

--firmware names the firmware of each variant (QEMU's default SeaBIOS, or qboot, QEMU's
minimal firmware, given as `-bios qboot.rom` in the appliance's options): with two, every
variant runs with each, side by side, and the ratios are against the first one's cloud floor.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import uuid
from pathlib import Path

from bench.init_figures import image_disks
from bench.kernel_boot import floor_initrd, in_memory, memory_dir
from minivm.gns3.render import BASE_KERNEL_ARGS
from minivm.kit import kernel
from minivm.ui import QUIET
from minivm.vm import qemu
from tests.vm import VM

REPO = Path(__file__).resolve().parent.parent

FLAVOURS = ("cloud", "minimal")
FIRMWARE_OPTIONS = {"seabios": [], "qboot": ["-bios", "qboot.rom"]}


def with_firmware(variant: str, firmware: str) -> str:
    """A variant's name, marked with its firmware unless that is QEMU's default."""
    return variant if firmware == "seabios" else f"{variant} {firmware}"


def argv_for(kit: kernel.Kit, initrd: Path, root: Path, args: argparse.Namespace,
             firmware: str = "seabios") -> list[str]:
    """GNS3's command line for a node with this kernel, initramfs, root disk and firmware."""
    drives = [qemu.Drive(root, args.interface)]
    if kit.modules:
        drives.append(qemu.Drive(kit.modules, args.interface))
    machine = qemu.Machine(
        name="bench", node_id=uuid.UUID(int=1), ram=args.ram, kernel=kit.kernel, initrd=initrd,
        append=BASE_KERNEL_ARGS, drives=tuple(drives), adapter_type=args.adapter,
        adapters=(None,), console=qemu.Console("stdio"))
    # -no-reboot: the floor's poweroff -f and the images' exit end QEMU at once; -snapshot:
    # every run starts from the same disks.
    return qemu.command_line(machine) + FIRMWARE_OPTIONS[firmware] + ["-no-reboot", "-snapshot"]


def measure(argv: list[str], marker: str) -> tuple[float, float]:
    """(guest uptime at the marker, QEMU's wall time to it)."""
    with VM(argv) as vm:
        match = vm.expect(marker + r" ([\d.]+)\n", timeout=180)
        wall = vm.seconds
    return float(match.group(1)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--adapter", default="virtio-net-pci",
                        help="GNS3 adapter type (e1000 is GNS3's default)")
    parser.add_argument("--interface", default="scsi", choices=["scsi", "virtio", "sata", "ide"])
    parser.add_argument("--ram", type=int, default=256)
    parser.add_argument("--firmware", nargs="+", default=["seabios"],
                        choices=sorted(FIRMWARE_OPTIONS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=memory_dir()) as tmp:
        work = Path(tmp)
        kits = {}
        for flavour in FLAVOURS:
            built = kernel.build(reporter=QUIET, flavour=flavour, make_current=False)
            kits[flavour] = in_memory(built, work / flavour)
        floor = floor_initrd(work / "floor.img")
        images = image_disks(work)
        first = next(iter(images.values()))
        variants = {}
        for fw in args.firmware:
            for f in FLAVOURS:
                variants[with_firmware(f"floor ({f})", fw)] = (
                    argv_for(kits[f], floor, first, args, fw), "UPTIME-AT-INIT")
            for name, disk in images.items():
                for f in FLAVOURS:
                    variants[with_firmware(f"{name}/{f}", fw)] = (
                        argv_for(kits[f], kits[f].initrd, disk, args, fw), "UPTIME-AT-MAIN")
        sizes = {f: {role: kits[f].manifest.files[role].size / 1e6
                     for role in ("kernel", "initrd", "modules")} for f in FLAVOURS}
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
        for i in range(args.runs):
            for name, (argv, marker) in variants.items():
                results[name].append(measure(argv, marker))
            print(f"run {i + 1} (wall): " + ", ".join(f"{k} {v[-1][1]:.2f} s"
                                                      for k, v in results.items()), flush=True)
    base = with_firmware("floor (cloud)", args.firmware[0])
    for idx, what in ((1, "QEMU wall time"), (0, "guest uptime")):
        med = {k: statistics.median(x[idx] for x in v) for k, v in results.items()}
        print(f"\nto the marker ({what}, medians of {args.runs} runs)")
        print(f"{'':34}{'seconds':>9}{'vs ' + base:>20}")
        for name, value in med.items():
            print(f"{name:34}{value:>8.2f}s{value / med[base]:>19.2f}x")
    print(f"\n(disks on {args.interface}, 1 {args.adapter}, {args.ram} MB, "
          f"append {BASE_KERNEL_ARGS!r})")
    for f, s in sizes.items():
        print(f"{f:8} kernel {s['kernel']:.2f} MB, initramfs {s['initrd']:.2f} MB, "
              f"module disk {s['modules']:.2f} MB")
    print("(* alpine-minivm's look-alike: its etc/ on the busybox base)")


if __name__ == "__main__":
    main()

"""The init's figures, under TCG on -M pc, side by side with their baselines.

boot:  QEMU's wall time (from its start to the marker on the serial console) and the guest
       uptime when the image's main process starts, for alpine-minivm's look-alike and
       debian-minivm (each wrapped so that its ENTRYPOINT first prints the uptime), vs. the
       floor (the kit's kernel, an initramfs that reports and powers off at once) and vs. the
       kit alone (kit initramfs, a busybox root whose /sbin/init reports and powers off: the
       difference to it is what minivm's init costs);
power: seconds from QMP system_powerdown (GNS3's stop) to QEMU's exit, idle guest;
size:  bytes the injected tree (init + toolbox + hooks) adds to an image.
Runs alternate between the variants so that machine load hits all alike.

    .venv/bin/python -m bench.init_figures [--flavour cloud] [--runs 5]
"""

from __future__ import annotations

import argparse
import gzip
import io
import statistics
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bench import kits
from bench.kernel_boot import REPORT, floor_initrd, in_memory, memory_dir
from minivm.image import inject
from minivm.paths import images_dir
from minivm.ui import QUIET
from minivm.vm import vmctl
from tests.imagefactory import alpine_lookalike
from tests.initvm import (
    BASE_APPEND,
    boot,
    build_disk,
    writable_copy,
    write_context,
)
from tests.vm import VM, Disk, busybox_root_disk, qemu_argv, user_nics

REPO = Path(__file__).resolve().parent.parent

WRAP = """\
    FROM {base}
    RUN mv /etc/init.sh /etc/init.real \\
     && printf '#!/bin/sh\\n%s\\nexec /etc/init.real\\n' \\
        'read u _ </proc/uptime; echo UPTIME-AT-MAIN $u' >/etc/init.sh \\
     && chmod 755 /etc/init.sh
"""


def image_disks(work: Path) -> dict[str, Path]:
    """Root disks of the two shipped images, wrapped to report the uptime at main start."""
    lookalike = alpine_lookalike(work / "lookalike")
    disks = {}
    for name, ctx in (("alpine-minivm*", lookalike), ("debian-minivm", images_dir() /
                                                        "debian-minivm")):
        tag = f"minivm-bench/{name.rstrip('*')}:latest"
        subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True,
                       capture_output=True)
        wrapped = write_context(work / f"wrap-{name.rstrip('*')}",
                                {"Dockerfile": WRAP.format(base=tag)})
        disks[name] = writable_copy(build_disk(wrapped, work / "out").qcow2, work / "run")
    return disks


def uptime_to(argv: list[str], marker: str) -> tuple[float, float]:
    """(guest uptime at the marker, QEMU's wall time to it)."""
    with VM(argv) as vm:
        match = vm.expect(marker + r" ([\d.]+)\n", timeout=180)
        wall = vm.seconds
        vm.wait_exit(timeout=60)
    return float(match.group(1)), wall


def boot_and_stop(kit, disk: Path, work: Path) -> tuple[tuple[float, float], float]:
    """((uptime, wall) at main start, seconds from the power button to QEMU's exit)."""
    qmp = work / "qmp.sock"
    with boot(kit, disk, qmp=qmp, user_nics=1) as vm:
        match = vm.expect(r"UPTIME-AT-MAIN ([\d.]+)\n", timeout=180)
        wall = vm.seconds
        vm.expect(r"Welcome to", timeout=60)
        vm.expect(r"[#$] ", timeout=60)
        # An idle guest: DHCP done, nothing running but the shell.
        vm.sendline("until ip -4 addr show eth0 | grep -q inet; do sleep 0.1; done; "
                    "echo SETT''LED")
        vm.expect("SETTLED", timeout=60)
        vm.expect(r"[#$] ", timeout=10)
        pressed = vm.seconds
        vmctl.powerdown(qmp)
        vm.wait_exit(timeout=60)
        return (float(match.group(1)), wall), vm.seconds - pressed


def tree_sizes(root: Path) -> tuple[int, int]:
    """Bytes of the tree's files, and of the tree as a gzip -9 tar (what it adds compressed)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(root, arcname=".")
    return inject.tree_bytes(root), len(gzip.compress(buffer.getvalue(), 9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kits.add_flavour(parser)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}
    power: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=memory_dir()) as tmp:
        work = Path(tmp)
        kit = in_memory(kits.kit(args.flavour), work)
        root = busybox_root_disk(work / "root.img", init="#!/bin/sh\n" + REPORT + "poweroff -f\n",
                                 init_path=".minivm/init")
        disks = [Disk(root, "scsi", "raw", snapshot=True)]
        if kit.modules:
            disks.append(Disk(kit.modules, "scsi", snapshot=True))
        # The floor and the kit alone run on the same machine as the images (same disks, the
        # same NIC behind the same PCI bridges, same kernel arguments): only the initramfs and
        # what runs on the root differ.
        same = {"disks": disks, "append": BASE_APPEND, "extra": user_nics()}
        floor_argv = qemu_argv(kernel=kit.kernel, initrd=floor_initrd(work / "floor.img"), **same)
        kit_argv = qemu_argv(kernel=kit.kernel, initrd=kit.initrd, **same)
        images = image_disks(work)
        for i in range(args.runs):
            results.setdefault("floor", []).append(uptime_to(floor_argv, "UPTIME-AT-INIT"))
            results.setdefault("kit alone", []).append(uptime_to(kit_argv, "UPTIME-AT-INIT"))
            for name, disk in images.items():
                up, stop = boot_and_stop(kit, disk, work)
                results.setdefault(name, []).append(up)
                power.setdefault(name, []).append(stop)
            print(f"run {i + 1} (wall): "
                  + ", ".join(f"{k} {v[-1][1]:.2f} s" for k, v in results.items())
                  + " | power: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in power.items()),
                  flush=True)
    for idx, what in ((1, "QEMU wall time"), (0, "guest uptime")):
        med = {k: statistics.median(x[idx] for x in v) for k, v in results.items()}
        print(f"\nboot to the main process ({what}, medians of {args.runs} runs)")
        print(f"{'':18}{'seconds':>9}{'vs floor':>10}{'vs kit':>9}")
        for name, value in med.items():
            print(f"{name:18}{value:>8.2f}s{value / med['floor']:>9.2f}x"
                  f"{value - med['kit alone']:>+8.2f}s")
    print("\npower button (QMP system_powerdown) to QEMU exit, idle guest")
    for name, values in power.items():
        print(f"{name:18}{statistics.median(values):>8.2f}s (max {max(values):.2f} s)")
    tree = inject.prepare(reporter=QUIET).root
    raw, packed = tree_sizes(tree)
    print("\nbytes the injection adds to an image")
    for rel, size in inject.main_files(tree).items():
        print(f"  {rel:30}{size:>9,}")
    print(f"  {'total (files)':30}{raw:>9,}  ({raw / 1e6:.2f} MB; gzip -9: {packed / 1e6:.2f} MB)")
    print("(* alpine-minivm's look-alike: its etc/ on the busybox base)")


if __name__ == "__main__":
    main()

"""Host memory of one idle MiniVM under TCG, by guest RAM and TCG translation-cache size.

    .venv/bin/python -m bench.node_memory [--runs 3] [--ram 96 64] [--tb-size 0 16 32 64]
        [--appliance alpine-minivm]

Boots the shipped appliance (bench/bundle_sizes.py builds it) from its .gns3a as GNS3 does,
with the RAM and ``-accel tcg,tb-size=N`` (0: QEMU's default) of each variant; runs alternate
between variants. After the main process starts and 10 s of idle, reads the QEMU's RSS and
splits it (/proc/PID/smaps) into guest RAM (the mapping of the guest's size), the translation
cache (the largest executable anonymous mapping) and the rest. Prints medians and the boot time
to the main process (a small translation cache costs retranslation).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench import kits
from bench.bundle_sizes import bundles
from minivm.gns3 import reader
from minivm.gns3.machine import machine_from_appliance
from minivm.kinds import ConsoleKind
from minivm.paths import build_dir
from minivm.ui import Reporter
from minivm.vm import qemu
from tests.vm import VM

READY = r"Welcome to .*a MiniVM"


def smaps(pid: int, ram_mb: int) -> dict[str, float]:
    """RSS in MiB: total, guest RAM, translation cache, rest."""
    guest = tcg = total = 0.0
    size = rss = 0
    perms = ""
    lines = Path(f"/proc/{pid}/smaps").read_text().splitlines() + ["0-0 ---- end"]
    for line in lines:
        head = line.split()
        if "-" in head[0] and len(head) >= 2 and not head[0].endswith(":"):
            if size:
                total += rss
                if size == ram_mb << 10:
                    guest += rss
                elif "x" in perms and size >= 16 << 10 and rss > tcg:
                    tcg = rss
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            size, rss, perms = (hi - lo) >> 10, 0, head[1]
        elif head[0] == "Rss:":
            rss = int(head[1])
    return {"total": total / 1024, "guest": guest / 1024, "tcg": tcg / 1024,
            "rest": (total - guest - tcg) / 1024}


def boot_once(bundle: Path, ram: int, tb_size: int) -> dict[str, float] | None:
    app = reader.load(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        disks = qemu.create_overlays(app.images, work)
        m = machine_from_appliance(app, name="mem", node_id=uuid.uuid4(), disks=disks,
                                        ram=ram, console=qemu.Console(ConsoleKind.STDIO))
        argv = qemu.command_line(m)
        if tb_size:
            i = argv.index("-accel")
            argv[i + 1] = f"tcg,tb-size={tb_size}"
        with VM(argv) as vm:
            try:
                vm.expect(READY + "|Kernel panic|Out of memory", timeout=180)
            except AssertionError:
                return None
            if "Welcome" not in vm.output[-2000:]:
                return None
            boot = vm.seconds
            time.sleep(10)
            return {"boot": boot, **smaps(vm.proc.pid, ram)}


def main() -> None:
    parser = argparse.ArgumentParser()
    kits.add_flavour(parser)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ram", type=int, nargs="+", default=[96, 64])
    parser.add_argument("--tb-size", type=int, nargs="+", default=[0, 16, 32, 64])
    parser.add_argument("--appliance", default="alpine-minivm")
    args = parser.parse_args()
    bundle = bundles(build_dir() / "bench-appliance", Reporter(quiet=True),
                     args.flavour)[args.appliance].path
    variants = list(itertools.product(args.ram, args.tb_size))
    results: dict[tuple[int, int], list[dict[str, float]]] = {v: [] for v in variants}
    failed: dict[tuple[int, int], int] = {v: 0 for v in variants}
    for _ in range(args.runs):
        for ram, tb in variants:
            got = boot_once(bundle, ram, tb)
            if got is None:
                failed[(ram, tb)] += 1
            else:
                results[(ram, tb)].append(got)
    print(f"{args.appliance}, medians of {args.runs}, MiB")
    print(f"{'RAM MB':>6} {'tb-size':>7} {'boot s':>7} {'RSS':>6} {'guest':>6} {'tcg':>6} "
          f"{'rest':>6} failed")
    for (ram, tb), runs in results.items():
        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs) if runs else float("nan")
        print(f"{ram:>6} {tb or 'dflt':>7} {med('boot'):>7.2f} {med('total'):>6.0f} "
              f"{med('guest'):>6.0f} {med('tcg'):>6.0f} {med('rest'):>6.0f} "
              f"{failed[(ram, tb)]}", flush=True)


if __name__ == "__main__":
    main()

"""linux/arm64 beside linux/amd64 on this host: alpine-minivm's look-alike booted under TCG
to its main process with each platform's minimal kit (qemu-system-aarch64 on `virt`,
qemu-system-x86_64 on `pc`), alternated run by run; then each kit's file sizes.

    .venv/bin/python -m bench.platforms [--runs 5]

Each run is a one-node `lab up` (GNS3's command line, TCG) timed until the main process
prints its greeting on the console; the amd64 run is the baseline of the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from bench.lab_common import READY, workdir, write_lab
from minivm import lab
from minivm.kit import kernel
from minivm.platforms import AMD64, ARM64, Platform
from minivm.ui import QUIET
from tests.labs import lookalike_bundle


def boot_seconds(path: Path) -> float:
    """``lab up`` of the one-node lab at ``path`` until its main process runs; then down."""
    the_lab = lab.load(path)
    start = time.monotonic()
    lab.up(the_lab)
    try:
        lab.wait_console(the_lab, READY, timeout=600)
        return time.monotonic() - start
    finally:
        lab.down(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = workdir()
    kits: dict[Platform, kernel.Kit] = {
        p: kernel.build(reporter=QUIET, platform=p, flavour="minimal", make_current=False)
        for p in (AMD64, ARM64)}
    bundles = {p: lookalike_bundle(work / p.arch, kit) for p, kit in kits.items()}
    times: dict[Platform, list[float]] = {p: [] for p in kits}
    for run in range(args.runs):
        for p, bundle in bundles.items():  # a new lab each run: its console log is new too
            folder = work / p.arch / f"run{run}"
            folder.mkdir()
            times[p].append(boot_seconds(write_lab(folder, bundle, {"n1": ""}, [])))
    base = statistics.median(times[AMD64])
    print(f"boot to the main process, TCG, median of {args.runs} (alternated)")
    for p, seconds in times.items():
        med = statistics.median(seconds)
        print(f"  {p.text:<12} {med:6.2f} s  {med / base:5.2f}x   "
              f"({' '.join(f'{s:.2f}' for s in seconds)})")
    print("kit files (minimal flavour), bytes")
    for p, kit in kits.items():
        sizes = {role: f.size for role, f in kit.manifest.files.items()}
        print(f"  {p.text:<12} kernel {sizes['kernel']:>10,}  initrd {sizes['initrd']:>9,}  "
              f"modules {sizes.get('modules', 0):>11,}  ({kit.kernel_version})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

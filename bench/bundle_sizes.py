"""Appliance bundle sizes: every file of the bundle vs the reference's shipped sizes.

    .venv/bin/python -m bench.bundle_sizes [--flavour cloud]

Builds alpine-minivm's look-alike (busybox userland: Alpine's mirror is unreachable here) and
debian-minivm into build/bench-appliance/ (cached after the first run) and writes their
bundles with the kernel kit of --flavour, then prints each file's size beside the reference's
(qemu-minivm: Alpine root 4.5 MB, Debian root 40.8 MB, kernel 14.0 MB, initramfs 2.49 MB,
modules 25.4 MB). Sizes are in MB (10^6 bytes), as the reference gives them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import kits
from minivm.gns3 import appliance
from minivm.gns3.bundle import Bundle
from minivm.image import build
from minivm.paths import build_dir
from minivm.ui import Reporter
from tests.imagefactory import alpine_lookalike

REPO = Path(__file__).resolve().parent.parent

REFERENCE_MB = {
    "alpine-minivm": {"root": 4.5, "kernel": 14.0, "initrd": 2.49, "modules": 25.4},
    "debian-minivm": {"root": 40.8, "kernel": 14.0, "initrd": 2.49, "modules": 25.4},
}


def bundles(out: Path, reporter: Reporter, flavour: str) -> dict[str, Bundle]:
    """Build (or reuse) both images under ``out`` and write their bundles with the kit of
    ``flavour``."""
    kit = kits.kit(flavour)
    context = alpine_lookalike(out / "ctx")
    result = {}
    for name, source in (("alpine-minivm", str(context)), ("debian-minivm", "debian-minivm")):
        built = build.build(source, reporter=reporter, output_dir=out / "build")
        result[name] = appliance.write_bundle(name, reporter=reporter, folder=built.folder,
                                              kit=kit)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kits.add_flavour(parser)
    args = parser.parse_args()
    written = bundles(build_dir() / "bench-appliance", Reporter(quiet=True), args.flavour)
    print(f"{'appliance':15} {'file':8} {'minivm MB':>10} {'reference MB':>13} {'ratio':>6}")
    for name, bundle in written.items():
        ours_total = ref_total = 0.0
        for f in bundle.files:
            ours, ref = f.filesize / 1e6, REFERENCE_MB[name][str(f.role)]
            ours_total, ref_total = ours_total + ours, ref_total + ref
            print(f"{name:15} {f.role!s:8} {ours:10.2f} {ref:13.2f} {ours / ref:6.2f}")
        print(f"{name:15} {'total':8} {ours_total:10.2f} {ref_total:13.2f} "
              f"{ours_total / ref_total:6.2f}")
        print(f"{'':15} {bundle.path}")


if __name__ == "__main__":
    main()

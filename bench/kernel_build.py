"""Kernel kit build time and sizes per flavour: a rebuild (--force) vs. a cached run, side by
side; with --cold the rebuild runs every step of the recipe again (Docker's layer cache
unused: apt download, and for the minimal flavour the whole kernel compile), as CI's first
build does; --twice makes two such rebuilds and compares their files byte for byte.

    .venv/bin/python -m bench.kernel_build [--flavour minimal cloud] [--cold] [--twice]
        [--platform linux/arm64]

Without --cold the rebuild reuses Docker's layer cache (the package download, the compiled
kernel): what is left is export, initramfs and module disk. The cached run is what
`minivm kernel build` costs when nothing changed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from minivm import platforms
from minivm.kit import kernel
from minivm.ui import Reporter

ROLES = ("kernel", "initrd", "modules")


def timed(**kwargs: object) -> tuple[kernel.Kit, float]:
    start = time.monotonic()
    kit = kernel.build(reporter=Reporter(quiet=True), make_current=False,
                       **kwargs)  # type: ignore[arg-type]
    return kit, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", nargs="+", default=["minimal", "cloud"])
    parser.add_argument("--cold", action="store_true",
                        help="rebuild without Docker's layer cache")
    parser.add_argument("--twice", action="store_true",
                        help="two rebuilds, their files compared (reproducibility)")
    parser.add_argument("--platform", default=None,
                        help="Docker's platform of the kit (default: the host's)")
    args = parser.parse_args()
    platform = platforms.parse_list(args.platform)[0]
    scratch_parent = kernel.kits_dir().parent
    scratch_parent.mkdir(parents=True, exist_ok=True)
    for flavour in args.flavour:
        with tempfile.TemporaryDirectory(dir=scratch_parent) as tmp:
            builds = []
            for i in range(2 if args.twice else 1):
                builds.append(timed(force=True, output_root=Path(tmp) / f"full{i}",
                                    flavour=flavour, docker_cache=not args.cold,
                                    platform=platform))
            cached, cached_s = timed(output_root=Path(tmp) / "full0", flavour=flavour,
                                     platform=platform)
        full = builds[0][0]
        assert cached.cached and not full.cached
        what = "cold" if args.cold else "rebuild"
        print(f"\n{flavour} ({full.kernel_version}, {platform.text})")
        print(f"{'':22}" + "".join(f"{what + str(i + 1):>10}" for i in range(len(builds)))
              + f"{'cached':>10}")
        print(f"{'kit build (s)':22}" + "".join(f"{s:>10.2f}" for _, s in builds)
              + f"{cached_s:>10.3f}")
        for stage in sorted(full.seconds):
            print(f"  {stage:20}" + "".join(f"{k.seconds.get(stage, 0):>10.2f}"
                                            for k, _ in builds))
        sizes = {role: rec.size for role, rec in full.manifest.files.items()}
        print(f"kernel {sizes['kernel'] / 1e6:.2f} MB, initramfs {sizes['initrd'] / 1e6:.2f} MB,"
              f" module disk {sizes.get('modules', 0) / 1e6:.2f} MB")
        for role in ROLES:
            md5s = [k.manifest.files[role].md5 for k, _ in builds]
            same = "byte-identical" if len(set(md5s)) == 1 else "DIFFERENT"
            print(f"  {role:8} md5 {' '.join(md5s)}" + (f"  {same}" if args.twice else ""))


if __name__ == "__main__":
    main()

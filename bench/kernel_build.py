"""Kernel kit build time and sizes: a full rebuild (--force) vs. a cached run, side by side.

    .venv/bin/python bench/kernel_build.py

The full rebuild reuses Docker's layer cache for the package download when it has one (a
first-ever build adds the apt download, about 8 s here); the cached run is what
`minivm kernel build` costs when nothing changed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from minivm.kit import kernel
from minivm.ui import Reporter


def timed(**kwargs: object) -> tuple[kernel.Kit, float]:
    start = time.monotonic()
    kit = kernel.build(reporter=Reporter(quiet=True), **kwargs)  # type: ignore[arg-type]
    return kit, time.monotonic() - start


def main() -> None:
    with tempfile.TemporaryDirectory(dir=kernel.kits_dir().parent) as tmp:
        full, full_s = timed(force=True, output_root=Path(tmp))
        cached, cached_s = timed(output_root=Path(tmp))
    assert cached.cached and not full.cached
    print(f"{'':22}{'full':>10}{'cached':>10}")
    print(f"{'kit build (s)':22}{full_s:>10.2f}{cached_s:>10.3f}")
    for stage, seconds in sorted(full.seconds.items()):
        print(f"  {stage:20}{seconds:>10.2f}")
    sizes = {role: rec["size"] for role, rec in full.manifest["files"].items()}
    print(f"kernel {sizes['kernel'] / 1e6:.2f} MB, initramfs {sizes['initrd'] / 1e6:.2f} MB "
          f"(goal <= 2.5), module disk {sizes.get('modules', 0) / 1e6:.2f} MB (goal <= 26)")


if __name__ == "__main__":
    main()

"""Figures for `minivm build`, printed as ratios against baselines run side by side.

    .venv/bin/python -m bench.build_figures [--runs 3]

On one ~200 MB Debian image (debian:bookworm-slim + python3, perl, git, built here):
  * minivm build (engine path, --force) vs. the floor: export + tar -x + mke2fs -d + qemu-img -c
  * minivm build vs. virt-make-fs --format=qcow2 on the same exported tar
  * QCOW2 size vs. `docker save IMAGE | gzip -6`
  * cached rebuild (a second `minivm build`, wall time of the whole command)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minivm.image import engine
from minivm.ui import Reporter

REPO = Path(__file__).resolve().parent.parent

DOCKERFILE = """FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 perl git \\
 && rm -rf /var/lib/apt/lists/*
"""
MINIVM = [sys.executable, "-m", "minivm"]


def timed(cmd: list[str], **kw) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    api = engine.connect()
    work = Path(tempfile.mkdtemp(prefix="minivm-bench-", dir="/var/tmp"))
    env = {**os.environ, "MINIVM_BUILD_DIR": str(work / "out")}
    try:
        context = work / "bench-debian"
        context.mkdir()
        (context / "Dockerfile").write_text(DOCKERFILE)
        image = engine.build_image(api, context, reporter=Reporter(quiet=True),
                                   tag="minivm-bench/debian:latest")
        exported = work / "export.tar"
        floor_times, minivm_times, vmf_times = [], [], []
        for _ in range(runs):
            start = time.monotonic()
            with exported.open("wb") as f, engine.exported_filesystem(api, image) as stream:
                shutil.copyfileobj(stream, f, 1 << 20)
            export_s = time.monotonic() - start
            tree = Path(tempfile.mkdtemp(dir="/dev/shm"))
            raw, qcow2 = work / "floor.raw", work / "floor.qcow2"
            t = export_s + timed(["tar", "-x", "-p", "--numeric-owner", "--xattrs",
                                  "--xattrs-include=*", "-C", str(tree), "-f", str(exported)])
            raw.unlink(missing_ok=True)
            t += timed(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(raw), "512M"])
            t += timed(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(qcow2)])
            floor_times.append(t)
            shutil.rmtree(tree)
            minivm_times.append(timed(MINIVM + ["build", str(context), "--force", "-q"], env=env))
            vmf = work / "vmf.qcow2"
            vmf.unlink(missing_ok=True)
            vmf_times.append(timed(["virt-make-fs", "--format=qcow2", "--type=ext4",
                                    "--size=+200M", str(exported), str(vmf)],
                                   env={**os.environ, "LIBGUESTFS_BACKEND": "direct",
                                        "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}))
        cached = [timed(MINIVM + ["build", str(context), "-q"], env=env) for _ in range(runs)]
        ours = next((work / "out").rglob("bench-debian-*.qcow2"))
        saved = work / "saved.tar.gz"
        with saved.open("wb") as f:
            gzip = subprocess.Popen(["gzip", "-6", "-n"], stdin=subprocess.PIPE, stdout=f)
            for chunk in api.get_image(image):
                gzip.stdin.write(chunk)
            gzip.stdin.close()
            gzip.wait()
        med = statistics.median
        print(f"image: {image[:19]}  exported tar {exported.stat().st_size / 1e6:.1f} MB, "
              f"runs: {runs} (medians)")
        print(f"floor (export + tar -x + mke2fs -d + qemu-img -c): {med(floor_times):6.2f} s")
        print(f"minivm build --force:                               {med(minivm_times):6.2f} s"
              f"   ratio {med(minivm_times) / med(floor_times):.2f}x  (goal <= 1.3x)")
        print(f"virt-make-fs --format=qcow2 (tar already exported): {med(vmf_times):6.2f} s"
              f"   minivm is {med(vmf_times) / med(minivm_times):.2f}x faster (goal >= 2x)")
        print(f"qcow2 {ours.stat().st_size / 1e6:.1f} MB vs docker save | gzip -6 "
              f"{saved.stat().st_size / 1e6:.1f} MB: ratio "
              f"{ours.stat().st_size / saved.stat().st_size:.2f}x  (goal <= 1.1x)")
        print(f"cached rebuild (whole command): {med(cached):.2f} s  (goal < 1 s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What `lab cp` out's checks cost: the checked copy against the unchecked one it replaced,
side by side on the same node and the same guest files.

    .venv/bin/python -m bench.cp_checks [--flavour cloud] [--runs 5] [--mb 40] [--files 2000]

The MiniVM is alpine-minivm's look-alike in a one-node lab (TCG). Three copies out, each run
alternately with both implementations (library calls, one channel session per copy):

* a file of --mb random MiB (GET): before, the bytes written as they came; now, also counted
  against the size the guest announced, in a temporary file renamed in;
* a folder of 4 files of --mb/4 MiB, and a folder of --files files of 4 KiB in 20 folders (tar
  stream): before, Python's tarfile unpacking the stream unfiltered into a temporary folder
  (what `lab cp` did); now, the listing that bounds the stream, minivm's own unpacker with
  every check, and the move into place.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import kits
from bench.lab_common import READY, lookalike_bundle, workdir, write_lab
from minivm import lab
from minivm.vm import control, transfer

MINIVM = str(Path(sys.executable).with_name("minivm"))


def check(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True)
    if done.returncode:
        raise SystemExit(f"{argv} failed: {done.stderr.decode(errors='replace')}")


def before_file(ch: control.Channel, guest: str, target: Path) -> None:
    """The unchecked GET: bytes written as they come, the mode applied."""
    with target.open("wb") as f:
        got = ch.get(guest, f.write)
    os.chmod(target, got.mode & 0o7777)


def before_tree(ch: control.Channel, guest: str, target: Path) -> None:
    """The unchecked folder copy: tarfile on the guest's stream, no filter."""
    target.mkdir()
    read_end, write_end = os.pipe()

    def unpack() -> None:
        with os.fdopen(read_end, "rb") as pipe, tarfile.open(fileobj=pipe, mode="r|") as t:
            for member in t:
                t.extract(member, target)

    thread = threading.Thread(target=unpack, daemon=True)
    thread.start()
    with os.fdopen(write_end, "wb") as pipe:
        code = ch.exec([transfer.TAR, "-C", guest, "-cf", "-", "."], user="0", workdir="/",
                       stdout=pipe.write)
    thread.join()
    assert code == 0


def now(ch: control.Channel, guest: str, target: Path) -> None:
    transfer.copy_out(ch, guest, target)


def timed(sock: Path, copy: Callable[[control.Channel, str, Path], None], guest: str,
          target: Path) -> float:
    shutil.rmtree(target, ignore_errors=True)
    target.unlink(missing_ok=True)
    start = time.perf_counter()
    with control.Channel(sock, what="r1") as ch:
        copy(ch, guest, target)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    kits.add_flavour(ap)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=40)
    ap.add_argument("--files", type=int, default=2000)
    args = ap.parse_args()
    work = workdir()
    bundle = lookalike_bundle(work, args.flavour)
    path = write_lab(work, bundle, {"r1": ""}, [])
    check([MINIVM, "lab", "up", str(path), "--wait", READY, "--quiet"])
    try:
        quarter = args.mb // 4
        per_folder = args.files // 20
        check([MINIVM, "lab", "exec", str(path), "r1", "--", "sh", "-c",
               f"mkdir -p /b/big /b/small && head -c {args.mb << 20} /dev/urandom > /b/file && "
               f"for i in 1 2 3 4; do head -c {quarter << 20} /dev/urandom > /b/big/$i; done && "
               f"for d in $(seq 20); do mkdir /b/small/$d; for f in $(seq {per_folder}); do "
               f"head -c 4096 /dev/urandom > /b/small/$d/$f; done; done"])
        sock = lab.control_socket(path, "r1")
        cases = [(f"file, {args.mb} MiB", "/b/file", args.mb),
                 (f"folder, 4 x {quarter} MiB", "/b/big", 4 * quarter),
                 (f"folder, {20 * per_folder} x 4 KiB", "/b/small", 20 * per_folder * 4 / 1024)]
        print(f"lab cp out, before (unchecked) vs now (checked); median of {args.runs}, MiB/s")
        for label, guest, mib in cases:
            old: list[float] = []
            new: list[float] = []
            for _ in range(args.runs):  # alternately, so that load changes hit both alike
                old.append(timed(sock, before_file if guest == "/b/file" else before_tree,
                                 guest, work / "old"))
                new.append(timed(sock, now, guest, work / "new"))
            rate_old, rate_new = mib / statistics.median(old), mib / statistics.median(new)
            print(f"  {label:24} before {rate_old:7.1f}   now {rate_new:7.1f}   "
                  f"now/before {rate_new / rate_old:.3f}")
    finally:
        subprocess.run([MINIVM, "lab", "down", str(path), "--quiet"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""exec round trip and copy throughput over the control channel, against the serial console
(the only way in before it) and Docker's own `docker exec` / `docker cp` on a container of the
same base image.

    .venv/bin/python -m bench.exec_figures [--flavour cloud] [--runs 20] [--mb 20]

The MiniVM is alpine-minivm's look-alike in a one-node lab (TCG, 1 vCPU). Round trips: the
library (connect, hello, exec `true`, exit code) and the CLI (`minivm lab exec`, Python's start
included); the console: `true; echo $?` typed on the serial console and its answer read back.
Copies: a file of --mb random MiB in and out: the library (`minivm.vm.transfer`, the channel
alone), `minivm lab cp` and `docker cp` (CLI each, their start included).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import kits
from bench.lab_common import READY, lookalike_bundle, workdir, write_lab
from minivm import lab
from minivm.vm import console, control, transfer

MINIVM = str(Path(sys.executable).with_name("minivm"))


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms"


def check(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True)
    if done.returncode:
        raise SystemExit(f"{argv} failed: {done.stderr.decode(errors='replace')}")


def main() -> None:
    ap = argparse.ArgumentParser()
    kits.add_flavour(ap)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mb", type=int, default=20)
    args = ap.parse_args()
    work = workdir()
    bundle = lookalike_bundle(work, args.flavour)
    path = write_lab(work, bundle, {"r1": ""}, [])
    container = f"mvbench-{os.getpid()}"
    check([MINIVM, "lab", "up", str(path), "--wait", READY, "--quiet"])
    check(["docker", "run", "-d", "--name", container, "minivm-test/busybox", "sleep", "3600"])
    try:
        sock = lab.control_socket(path, "r1")

        def library_true() -> None:
            with control.Channel(sock, what="r1") as ch:
                assert ch.exec(["true"]) == 0

        library_true()  # the first exec pages the command in
        lib = timed(library_true, args.runs)
        cli = timed(lambda: check([MINIVM, "lab", "exec", str(path), "r1", "--", "true"]),
                    max(5, args.runs // 2))
        with console.Session(lab.console_address(path, "r1")) as s:
            s.sendline()
            s.expect(r"[#$] ", timeout=30)
            serial = timed(lambda: s.run("true", 30), max(5, args.runs // 2))
        dock = timed(lambda: check(["docker", "exec", container, "true"]),
                     max(5, args.runs // 2))
        print(f"exec `true` round trip, median of {args.runs} (CLI: {len(cli)}):")
        print(f"  control channel, library  {ms(lib)}")
        print(f"  minivm lab exec (CLI)     {ms(cli)}   docker exec {ms(dock)}   "
              f"ratio {statistics.median(cli) / statistics.median(dock):.2f}x")
        print(f"  serial console (typed)    {ms(serial)}   library is "
              f"{statistics.median(serial) / statistics.median(lib):.1f}x faster")

        blob = work / "blob.bin"
        blob.write_bytes(os.urandom(args.mb << 20))
        digest = hashlib.md5(blob.read_bytes()).hexdigest()
        back = work / "back"
        back.mkdir()
        rows = []
        for label, copy_in, copy_out in (
            ("minivm lab cp", [MINIVM, "lab", "cp", str(path), str(blob), "r1:/root/blob.bin"],
             [MINIVM, "lab", "cp", str(path), "r1:/root/blob.bin", str(back / "m.bin")]),
            ("docker cp", ["docker", "cp", str(blob), f"{container}:/root/blob.bin"],
             ["docker", "cp", f"{container}:/root/blob.bin", str(back / "d.bin")]),
        ):
            ins = timed(lambda argv=copy_in: check(argv), 3)
            outs = timed(lambda argv=copy_out: check(argv), 3)
            rows.append((label, args.mb / statistics.median(ins),
                         args.mb / statistics.median(outs)))
        def lib_in() -> None:
            with control.Channel(sock, what="r1") as ch:
                transfer.copy_in(ch, blob, "/root/lib.bin")

        def lib_out() -> None:
            with control.Channel(sock, what="r1") as ch:
                transfer.copy_out(ch, "/root/lib.bin", back / "l.bin")

        ins, outs = timed(lib_in, 3), timed(lib_out, 3)
        rows.insert(0, ("library", args.mb / statistics.median(ins),
                        args.mb / statistics.median(outs)))
        for name in ("m.bin", "d.bin", "l.bin"):
            assert hashlib.md5((back / name).read_bytes()).hexdigest() == digest, name
        print(f"copy of {args.mb} MiB (median of 3; MiB/s):")
        for label, rin, rout in rows:
            print(f"  {label:14} in {rin:7.1f}   out {rout:7.1f}")
        print(f"  ratio minivm lab cp/docker cp: in {rows[1][1] / rows[2][1]:.2f}x, "
              f"out {rows[1][2] / rows[2][2]:.2f}x")
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run([MINIVM, "lab", "down", str(path), "--quiet"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

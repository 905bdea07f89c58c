"""Lab boot time and memory: `lab up` to every node's main process running, 1/2/4/8 nodes
(a chain of links), under TCG; QEMU RSS per idle node.

    .venv/bin/python -m bench.lab_boot [--flavour cloud] [--sizes 1 2 4 8]

Prints per size: seconds of `lab up` itself (QEMUs started, sockets bound), seconds until the
last node's main process runs, that time per node, and the RSS of the idle QEMUs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from bench import kits
from bench.lab_common import READY, lookalike_bundle, workdir, write_lab
from minivm import lab


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    kits.add_flavour(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    work = workdir()
    bundle = lookalike_bundle(work, args.flavour)
    print(f"{'nodes':>5} {'up s':>6} {'all ready s':>12} {'s/node':>7} {'RSS MiB/node':>13}")
    base = None
    for n in args.sizes:
        folder = work / f"lab{n}"
        folder.mkdir()
        names = [f"r{i}" for i in range(1, n + 1)]
        nodes = {name: f"ip=10.0.0.{i}/24:::::eth0:off" for i, name in enumerate(names, 1)}
        links = [f"{a}:eth0 -- {b}:eth0" for a, b in zip(names[::2], names[1::2], strict=False)]
        path = write_lab(folder, bundle, nodes, links)
        the_lab = lab.load(path)
        start = time.monotonic()
        lab.up(the_lab)
        up_s = time.monotonic() - start
        try:
            seen = lab.wait_console(the_lab, READY, timeout=600)
            ready = up_s + max(seen.values())
            time.sleep(5)  # idle: let the guests settle before reading RSS
            state = lab.status(the_lab)
            rss = [rss_mib(node.pid or 0) for node in state.nodes.values()]
        finally:
            lab.down(path)
        base = base or ready / n
        print(f"{n:>5} {up_s:>6.2f} {ready:>12.2f} {ready / n:>7.2f} "
              f"{sum(rss) / len(rss):>13.1f}   (x{ready / n / base:.2f} per node vs 1)")
        sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

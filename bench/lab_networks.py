"""Lab networks: node-to-node throughput and latency over today's point-to-point UDP link and
over a segment (a VDE switch with a plug per member), and `lab up` time of 8 nodes on one
segment against 8 nodes in 4 point-to-point links (medians of --runs, the two alternated).

    .venv/bin/python -m bench.lab_networks [--runs 3] [--seconds 5] [--skip-up]

Each figure comes from the product itself (`minivm lab up`, `minivm lab exec`): iperf3 (TCP,
--seconds long, the receiver's rate) and ping (20 echoes 0.2 s apart, the mean round trip)
between two Debian nodes with iperf3 (one bundle for both labs); the `lab up` times
use alpine-minivm's look-alike and wait for every console's welcome line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import kits
from bench.lab_common import READY, lookalike_bundle, workdir
from minivm.gns3 import appliance
from minivm.image import build
from minivm.ui import QUIET

MINIVM = str(Path(sys.executable).with_name("minivm"))
IPERF_NODE = """\
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iperf3 iputils-ping \\
 && rm -rf /var/lib/apt/lists/*
CMD ["sleep", "infinity"]
"""


def cli(*args: str | Path, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([MINIVM, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"minivm {' '.join(map(str, args))}: {done.stderr.strip()}")
    return done


def sh(path: Path, node: str, command: str) -> str:
    return cli("lab", "exec", "--timeout", "300", path, node, "--", "sh", "-c", command).stdout


def iperf_bundle(work: Path, flavour: str) -> Path:
    """A Debian node with iperf3, as a bundle under ``work`` (built once for both labs)."""
    context = work / "iperf-node"
    context.mkdir()
    (context / "Dockerfile").write_text(IPERF_NODE)
    kit = kits.kit(flavour)
    result = build.build(str(context), reporter=QUIET, output_dir=work / "build")
    return appliance.write_bundle(result.name, reporter=QUIET, folder=result.folder,
                                  kit=kit).path


def pair_lab(folder: Path, mode: str, bundle: Path) -> Path:
    """Two iperf3 nodes at 10.0.0.1 and .2: linked point to point, or on one segment."""
    folder.mkdir(parents=True)
    node = {"appliance": str(bundle)}
    spec: dict[str, Any] = {"accel": "tcg", "nodes": {}}
    if mode == "p2p":
        spec["nodes"] = {n: {**node, "append": f"ip=10.0.0.{i}/24:::::eth0:off"}
                         for i, n in ((1, "a"), (2, "b"))}
        spec["links"] = ["a:eth0 -- b:eth0"]
    else:
        spec["nodes"] = {"a": node, "b": node}
        spec["networks"] = {"lan": {"subnet": "10.0.0.0/24", "members": ["a:eth0", "b:eth0"]}}
    path = folder / "lab.yaml"
    path.write_text(json.dumps(spec))
    return path


def _ready(path: Path, node: str, attempts: int = 5) -> None:
    """Wait until the node's init answers a first command (its main process prints nothing
    to wait for on the console)."""
    for attempt in range(attempts):
        try:
            sh(path, node, "true")
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(2)


def measure_pair(work: Path, bundle: Path, mode: str, runs: int, seconds: int
                 ) -> tuple[float, float]:
    """(Mbit/s, mean RTT ms), medians over ``runs``."""
    path = pair_lab(work / mode, mode, bundle)
    cli("lab", "up", path)
    try:
        for node in ("a", "b"):
            _ready(path, node)
        sh(path, "a", "ping -c 2 -W 5 10.0.0.2 >/dev/null")
        sh(path, "b", "iperf3 -s -D")
        rates, rtts = [], []
        for _ in range(runs):
            out = json.loads(sh(path, "a", f"iperf3 -c 10.0.0.2 -t {seconds} -J"))
            rates.append(out["end"]["sum_received"]["bits_per_second"] / 1e6)
            ping = sh(path, "a", "ping -c 20 -i 0.2 -q 10.0.0.2")
            m = re.search(r"= [\d.]+/([\d.]+)/", ping)
            assert m, ping
            rtts.append(float(m[1]))
        return statistics.median(rates), statistics.median(rtts)
    finally:
        cli("lab", "down", path, "--clean")


def up_time(work: Path, bundle: Path, mode: str) -> float:
    """Seconds of `lab up --wait` for 8 look-alike nodes (one segment, or 4 links)."""
    folder = work / f"up-{mode}"
    folder.mkdir(exist_ok=True)
    names = [f"n{i}" for i in range(1, 9)]
    spec: dict[str, Any] = {"accel": "tcg",
                            "nodes": {n: {"appliance": str(bundle)} for n in names}}
    if mode == "segment":
        spec["networks"] = {"lan": {"subnet": "10.0.0.0/24",
                                    "members": [f"{n}:eth0" for n in names]}}
    else:
        spec["links"] = [f"{a}:eth0 -- {b}:eth0" for a, b in zip(names[::2], names[1::2],
                                                                strict=True)]
    path = folder / "lab.yaml"
    path.write_text(json.dumps(spec))
    start = time.monotonic()
    try:
        cli("lab", "up", path, "--wait", READY)
        return time.monotonic() - start
    finally:
        cli("lab", "down", path, "--clean")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--skip-up", action="store_true", help="only the pair figures")
    kits.add_flavour(parser)
    args = parser.parse_args()
    work = workdir()
    load = os.getloadavg()[0]
    try:
        bundle = iperf_bundle(work, args.flavour)
        pairs = {mode: measure_pair(work, bundle, mode, args.runs, args.seconds)
                 for mode in ("p2p", "segment")}
        base_rate, base_rtt = pairs["p2p"]
        print(f"{'path a -> b':>34} {'Mbit/s':>8} {'vs p2p':>7} {'RTT ms':>8} {'vs p2p':>7}")
        for mode, (rate, rtt) in pairs.items():
            label = ("point-to-point UDP link (today)" if mode == "p2p"
                     else "segment (vde_switch + 2 plugs)")
            print(f"{label:>34} {rate:>8.0f} {rate / base_rate:>6.2f}x {rtt:>8.2f} "
                  f"{rtt / base_rtt:>6.2f}x")
        if not args.skip_up:
            bundle = lookalike_bundle(work, args.flavour)
            times: dict[str, list[float]] = {"links": [], "segment": []}
            for _ in range(args.runs):  # alternated, so that load weighs on both alike
                for mode, took in times.items():
                    took.append(up_time(work, bundle, mode))
            ups = {mode: statistics.median(took) for mode, took in times.items()}
            print(f"{'lab up --wait, 8 nodes':>34} {'seconds':>8} {'vs links':>9}  runs")
            for mode, took in ups.items():
                label = "4 point-to-point links" if mode == "links" else "one segment"
                runs = " ".join(f"{t:.1f}" for t in times[mode])
                print(f"{label:>34} {took:>8.1f} {took / ups['links']:>8.2f}x  {runs}")
        end = os.getloadavg()[0]
        print(f"load average (1 min): {load:.1f} at the start, {end:.1f} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Link throughput and frame loss between two MiniVMs: GNS3's UDP tunnel (what `minivm lab`
wires) vs QEMU's socket multicast on loopback (the same two VMs, the netdev swapped).

    .venv/bin/python -m bench.lab_link [--flavour cloud] [--mb 16] [--runs 3]

Per mode: a TCP transfer of --mb MB r1 -> r2 (busybox nc, timed on the host around the
sender), and frame loss from the NIC counters: frames r1 sent vs frames r2 received during the
transfer (TCP hides loss by retransmitting; the counters do not).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from bench import kits
from bench.lab_common import READY, lookalike_bundle, workdir
from minivm import lab
from minivm.gns3 import reader
from minivm.gns3.machine import machine_from_appliance
from minivm.vm import console, qemu, vmctl


def start_pair(bundle: Path, work: Path, mode: str) -> list[tuple[subprocess.Popen, Path]]:
    """Two VMs, eth0 linked by a UDP tunnel or by one multicast group."""
    app = reader.load(bundle)
    holders = [lab.hold_port() for _ in range(2)]
    ports = [h.getsockname()[1] for h in holders]
    group = f"230.{random.randint(1, 254)}.{random.randint(1, 254)}.1:{ports[0]}"
    vms = []
    for i in range(2):
        d = work / f"{mode}-r{i + 1}"
        d.mkdir()
        disks = qemu.create_overlays(app.images, d)
        tunnel = qemu.UdpTunnel(ports[i], "127.0.0.1", ports[1 - i])
        m = machine_from_appliance(
            app, name=f"r{i + 1}", node_id=uuid.uuid4(), disks=disks, adapters=[tunnel],
            append=f"ip=10.0.0.{i + 1}/24:::::eth0:off", qmp=d / "qmp.sock",
            console=qemu.Console("unix", path=d / "console.sock", log=d / "console.log"))
        argv = qemu.command_line(m)
        if mode == "mcast":
            at = argv.index("-netdev") + 1
            argv[at] = f"socket,id=gns3-0,mcast={group},localaddr=127.0.0.1"
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=(d / "qemu.log").open("wb"))
        vmctl.wait_socket(d / "qmp.sock", pid=proc.pid, timeout=30)
        vms.append((proc, d))
    for h in holders:
        h.close()
    return vms


def wait_log(log: Path, pattern: str, timeout: float) -> None:
    """Bounded poll of a console log for ``pattern``."""
    deadline = time.monotonic() + timeout
    while not (log.exists() and re.search(pattern, log.read_text(errors="replace"))):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pattern!r} not in {log} after {timeout:.0f} s")
        time.sleep(0.1)


def counters(s: console.Session, which: str) -> int:
    _, out = s.run(f"cat /sys/class/net/eth0/statistics/{which}", 30)
    return int(out.strip().splitlines()[-1])


def measure(bundle: Path, work: Path, mode: str, mb: int, runs: int) -> tuple[float, float]:
    vms = start_pair(bundle, work, mode)
    try:
        sessions = []
        for _, d in vms:
            wait_log(d / "console.log", READY, 300)
            s = console.Session(f"unix:{d / 'console.sock'}")
            s.sendline()
            s.expect(r"[#$] ", 30)
            sessions.append(s)
        r1, r2 = sessions
        code, out = r1.run("ping -c 2 -W 5 10.0.0.2", 60)
        assert code == 0, out
        rates, losses = [], []
        for _ in range(runs):
            r2.run("(nc -l -p 5000 > /dev/null; echo RECV-DONE) &", 30)
            tx0, rx0 = counters(r1, "tx_packets"), counters(r2, "rx_packets")
            start = time.monotonic()
            code, out = r1.run(f"dd if=/dev/zero bs=65536 count={mb * 16} 2>/dev/null"
                               " | nc 10.0.0.2 5000", 300)
            seconds = time.monotonic() - start
            r2.expect("RECV-DONE", 60)
            tx, rx = counters(r1, "tx_packets") - tx0, counters(r2, "rx_packets") - rx0
            rates.append(mb * 8 / seconds)
            losses.append(max(0, tx - rx) / tx * 100 if tx else 0.0)
        for s in sessions:
            s.close()
        return statistics.median(rates), statistics.median(losses)
    finally:
        for proc, d in vms:
            vmctl.stop(proc.pid, d / "qmp.sock", timeout=10)
            proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    kits.add_flavour(parser)
    parser.add_argument("--mb", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = workdir()
    bundle = lookalike_bundle(work, args.flavour)
    results = {mode: measure(bundle, work, mode, args.mb, args.runs)
               for mode in ("udp", "mcast")}
    base = results["mcast"][0]
    print(f"{'link':>24} {'Mbit/s':>8} {'frame loss %':>13} {'vs multicast':>13}")
    for mode, (rate, loss) in results.items():
        label = "UDP tunnel (GNS3)" if mode == "udp" else "socket multicast"
        print(f"{label:>24} {rate:>8.1f} {loss:>13.2f} {rate / base:>12.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

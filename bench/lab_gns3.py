"""`lab up --server` (a GNS3 3.0.6 server on this machine) beside the local runner, 2/4/8 nodes.

    .venv/bin/python -m bench.lab_gns3 [--flavour cloud] [--sizes 2 4 8] [--runs 3]

Needs .venv-gns3 (``.venv/bin/python tests/gns3_env.py``). Starts a GNS3 controller
(127.0.0.2) and a second gns3server as a remote compute (127.0.0.3), each with its own files
in a temporary folder, and stops them at the end.

The GNS3 side is measured up to the start: log in, appliance check (a no-op push), project,
nodes, links (``lab up --server --no-start``, in-process). The local runner is measured to the
same point (overlays created, link ports held, each node's QEMU command line built: everything
its ``lab up`` does before starting QEMU), then for real: ``lab up`` and every node's main
process running (``--wait``). Median of ``--runs``; ratio = GNS3 / local at the same point.
Then ``lab up --server --wait`` to every node's main process (once): GNS3 starts QEMU nodes
through uBridge, the installed one or the tests' stand-in (tests/ubridge-standin: the control
protocol only, so the nodes boot for real but links carry no frames).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import kits
from bench.lab_common import READY, lookalike_bundle, workdir, write_lab
from minivm import lab
from minivm.gns3 import push, server
from minivm.lab import control, gns3, ports
from minivm.vm import qemu
from tests import gns3_server as gs


def local_prepare(the_lab: lab.Lab, folder: Path) -> None:
    """What the local ``lab up`` does before it starts QEMU: overlays, ports, argv."""
    with ExitStack() as holders:
        held = {}
        for node, adapter, fixed in ports.endpoints(the_lab):
            sock = holders.enter_context(lab.hold_port(fixed, what="link end"))
            held[f"{node}:eth{adapter}"] = sock.getsockname()[1]
        for name in the_lab.nodes:
            if the_lab.nodes[name].console == "telnet":
                holders.enter_context(lab.hold_port(0, kind=socket.SOCK_STREAM,
                                                    what="console"))
            disks = qemu.create_overlays(the_lab.nodes[name].appliance.images, folder / name)
            m = control.node_machine(the_lab, name, disks=disks,
                                     adapters=ports.tunnels(the_lab, held, name))
            qemu.command_line(m)


def lab_file(folder: Path, bundle: Path, n: int, *, remote: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"r{i}" for i in range(1, n + 1)]
    path = write_lab(folder, bundle,
                     {name: f"ip=10.0.0.{i}/24:::::eth0:off" for i, name in enumerate(names, 1)},
                     [f"{a}:eth0 -- {b}:eth0" for a, b in zip(names[::2], names[1::2],
                                                               strict=False)])
    if remote:  # every second node on the remote compute: each link crosses computes
        data = json.loads(path.read_text())
        for i, name in enumerate(names):
            if i % 2:
                data["nodes"][name]["compute"] = "remote1"
        path.write_text(json.dumps(data))
    return path


def gns3_up(url: str, path: Path) -> float:
    """Seconds for log in + lab up --no-start; the project is deleted afterwards (untimed)."""
    the_lab = lab.load(path)
    start = time.monotonic()
    client = server.connect(server.Credentials(url, gs.USER, gs.PASSWORD))
    gns3.up(the_lab, client, start=False)
    seconds = time.monotonic() - start
    gns3.down(the_lab.path, client, delete=True)
    return seconds


def gns3_boot(url: str, path: Path) -> float:
    """Seconds for lab up --server --wait READY (needs uBridge); the project is deleted after."""
    the_lab = lab.load(path)
    start = time.monotonic()
    client = server.connect(server.Credentials(url, gs.USER, gs.PASSWORD))
    try:
        gns3.up(the_lab, client, wait=READY, timeout=600)
        return time.monotonic() - start
    finally:
        gns3.down(the_lab.path, client, delete=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    kits.add_flavour(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-boot", action="store_true", help="skip the local full boot")
    args = parser.parse_args()
    work = workdir()
    bundle = lookalike_bundle(work, args.flavour)
    app = lab.load(lab_file(work / "probe", bundle, 1, remote=False)).nodes["r1"].appliance
    rows = []
    with tempfile.TemporaryDirectory(prefix="mvbench-gns3-") as tmp, \
            gs.running(Path(tmp) / "controller", host="127.0.0.2",
                       ranges=(35000, 35499, 36000, 36999)) as controller, \
            gs.running(Path(tmp) / "remote", host="127.0.0.3",
                       ranges=(35500, 35999, 37000, 37999)) as remote:
        gs.add_compute(controller, remote, "remote1")
        client = server.connect(server.Credentials(controller.url, gs.USER, gs.PASSWORD))
        t = time.monotonic()
        push.push(client, app)
        first_push = time.monotonic() - t
        t = time.monotonic()
        push.push(client, app)
        again_push = time.monotonic() - t
        print(f"push (4 files, {sum(f.size for f in push.bundle_files(app)) / 1e6:.1f} MB): "
              f"{first_push:.2f} s; again (no-op): {again_push:.2f} s")
        for n in args.sizes:
            one = lab_file(work / f"g{n}", bundle, n, remote=False)
            two = lab_file(work / f"h{n}", bundle, n, remote=True)
            g1 = statistics.median(gns3_up(controller.url, one) for _ in range(args.runs))
            g2 = statistics.median(gns3_up(controller.url, two) for _ in range(args.runs))
            loc = []
            for r in range(args.runs):
                folder = work / f"l{n}-{r}"
                t = time.monotonic()
                local_prepare(lab.load(one), folder)
                loc.append(time.monotonic() - t)
                shutil.rmtree(folder)
            boot = gns3_boot(controller.url, one)
            rows.append([n, g1, g2, statistics.median(loc), boot])
    for row in rows:
        path = lab_file(work / f"b{row[0]}", bundle, row[0], remote=False)
        if args.no_boot:
            row += [float("nan"), float("nan")]
            continue
        the_lab = lab.load(path)
        t = time.monotonic()
        lab.up(the_lab)
        up_s = time.monotonic() - t
        try:
            seen = lab.wait_console(the_lab, READY, timeout=600)
        finally:
            lab.down(path, clean=True)
        row += [up_s, up_s + max(seen.values())]
    print(f"{'nodes':>5} {'GNS3 1 compute':>15} {'GNS3 2 computes':>16} {'local same point':>17} "
          f"{'ratio':>6} {'local up':>9} {'local ready':>12} {'GNS3 ready':>11}")
    for n, g1, g2, loc, boot, up_s, ready in rows:
        print(f"{n:>5} {g1:>14.2f}s {g2:>15.2f}s {loc:>16.2f}s {g1 / loc:>5.1f}x "
              f"{up_s:>8.2f}s {ready:>11.2f}s {boot:>10.2f}s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

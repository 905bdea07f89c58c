"""A 32-node lab of alpine-minivm's look-alike, five rounds in a row, under TCG: `lab up
--wait` for every main process, `lab exec` on every node, `lab down` by every power button.

    .venv/bin/python -m bench.lab_scale [--nodes 32] [--rounds 5] [--ram MB]

Prints per round the seconds of each phase, the QEMUs' total and largest RSS once every node
is up, and what went wrong (a panic on a console, an exec that failed, a node that did not
power off by its button); then the medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics

from bench import kits
from bench.lab_common import lookalike_bundle, workdir
from tests.labround import one_round, write_lab


def main() -> None:
    parser = argparse.ArgumentParser()
    kits.add_flavour(parser)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ram", type=int, help="MB per node (default: the appliance's)")
    args = parser.parse_args()
    work = workdir()
    bundle = lookalike_bundle(work, args.flavour)
    path = write_lab(work / "lab", bundle, args.nodes, ram=args.ram)
    print(f"{args.nodes} nodes, RAM {args.ram or 'of the appliance'}")
    print(f"{'round':>5} {'up+wait s':>10} {'exec all s':>11} {'down s':>7} "
          f"{'RSS total MiB':>14} {'RSS max MiB':>12}  problems")
    rounds = []
    for i in range(1, args.rounds + 1):
        r = one_round(path, args.nodes)
        rounds.append(r)
        print(f"{i:>5} {r.up:>10.1f} {r.exec:>11.1f} {r.down:>7.1f} {r.rss_total:>14.0f} "
              f"{r.rss_max:>12.0f}  {'; '.join(r.problems) or 'none'}", flush=True)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(f"{'median':>6} {med([r.up for r in rounds]):>9.1f} "
          f"{med([r.exec for r in rounds]):>11.1f} {med([r.down for r in rounds]):>7.1f} "
          f"{med([r.rss_total for r in rounds]):>14.0f} {med([r.rss_max for r in rounds]):>12.0f}"
          f"  rounds without a problem: {sum(not r.problems for r in rounds)}/{len(rounds)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

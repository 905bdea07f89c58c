"""A 32-node lab of alpine-minivm's look-alike, five rounds in a row, under TCG: `lab up
--wait` for every main process, `lab exec` on every node, `lab down` by every power button,
each with the CLI's default timeouts.

    .venv/bin/python -m bench.lab_scale [--nodes 32] [--rounds 5] [--ram MB] [--flavour F]

Prints per round the seconds of each phase, the QEMUs' total and largest RSS once every node
is up, and what went wrong (a panic on a console, an exec that failed, a node that did not
power off by its button); then the medians and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics

from bench import kits
from bench.lab_common import lookalike_bundle, workdir
from tests.labround import Round, one_round, write_lab


def row(label: str, r: Round, problems: str) -> str:
    return (f"{label:>6} {r.up:>10.1f} {r.exec:>11.1f} {r.down:>7.1f} {r.rss_total:>14.0f} "
            f"{r.rss_total / max(1, r.nodes):>13.1f} {r.rss_max:>12.0f}  {problems}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kits.add_flavour(parser)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ram", type=int, help="MB per node (default: the appliance's)")
    args = parser.parse_args()
    work = workdir()
    try:
        bundle = lookalike_bundle(work, args.flavour)
        path = write_lab(work / "lab", bundle, args.nodes, ram=args.ram)
        print(f"{args.nodes} nodes, {args.flavour} kit, RAM {args.ram or 'of the appliance'}, "
              f"load before {os.getloadavg()[0]:.2f}")
        print(f"{'round':>6} {'up+wait s':>10} {'exec all s':>11} {'down s':>7} "
              f"{'RSS total MiB':>14} {'RSS/node MiB':>13} {'RSS max MiB':>12}  problems",
              flush=True)
        rounds = []
        for i in range(1, args.rounds + 1):
            r = one_round(path, args.nodes)
            rounds.append(r)
            print(row(str(i), r, "; ".join(r.problems) or "none"), flush=True)

        def med(attr: str) -> float:
            return statistics.median(getattr(r, attr) for r in rounds)

        median = Round(med("up"), med("exec"), med("down"), med("rss_total"), med("rss_max"),
                       nodes=args.nodes)
        print(row("median", median, f"rounds without a problem: "
                                    f"{sum(not r.problems for r in rounds)}/{len(rounds)}; "
                                    f"load after {os.getloadavg()[0]:.2f}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""How long GNS3's stop takes for a Docker node of debian-minivm, side by side with the entry
point it had before (`exec /bin/bash`, which as PID 1 ignores SIGTERM).

    .venv/bin/python -m bench.node_stop [--runs 3] [--grace 10]

Builds images/debian-minivm twice: as it is, and with the init.sh of `git show REF:...`
(default: the commit before the one that added /etc/minivm/container.sh). Starts each as GNS3
starts a node (networking disabled, a tty, GNS3_MAX_ETHERNET=eth0 and a veth moved in as
eth0), waits for its welcome line, then times `docker stop -t GRACE` (GNS3 uses 5; Docker's
default is 10). Runs interleaved; prints the median seconds and exit code of each and their ratio.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from minivm.image import engine
from minivm.ui import QUIET
from tests.gns3node import start_node

HERE = Path(__file__).resolve().parent

INIT = "images/debian-minivm/etc/init.sh"
CONTAINER_SH = "images/debian-minivm/etc/minivm/container.sh"


def build(api, context: Path, tag: str) -> str:
    return engine.build_image(api, context, reporter=QUIET, tag=tag)


def stop_once(api, image: str, grace: int) -> tuple[float, int]:
    node = start_node(api, image)
    try:
        time.sleep(0.3)
        node.add_adapter(0, f"10.213.250.{random.randrange(0, 256, 4) + 1}/30")
        deadline = time.monotonic() + 60
        while "Welcome to" not in node.logs():
            if time.monotonic() > deadline:
                raise SystemExit(f"{image}: no welcome line: {node.logs()[-500:]}")
            time.sleep(0.1)
        time.sleep(0.5)  # the shell is at its prompt
        started = time.monotonic()
        api.stop(node.id, timeout=grace)
        seconds = time.monotonic() - started
        return seconds, int(api.inspect_container(node.id)["State"]["ExitCode"])
    finally:
        node.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--grace", type=int, default=10)
    parser.add_argument("--baseline", help="git ref of the old init.sh")
    args = parser.parse_args()
    api = engine.connect()
    repo = HERE.parent
    if not args.baseline:
        added = subprocess.run(["git", "log", "--format=%H", "--diff-filter=A", "-1", "--",
                                CONTAINER_SH], cwd=repo, check=True, capture_output=True,
                               text=True).stdout.strip()
        args.baseline = f"{added}^"
    old_init = subprocess.run(["git", "show", f"{args.baseline}:{INIT}"], cwd=repo, check=True,
                              capture_output=True).stdout
    with tempfile.TemporaryDirectory(prefix="minivm-node-stop-") as tmp:
        baseline_ctx = Path(tmp) / "debian-minivm"
        shutil.copytree(repo / "images" / "debian-minivm", baseline_ctx)
        (baseline_ctx / "etc" / "init.sh").write_bytes(old_init)
        images = {"baseline": build(api, baseline_ctx, "minivm-bench/node-stop:baseline"),
                  "now": build(api, repo / "images" / "debian-minivm",
                               "minivm-bench/node-stop:now")}
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in images}
    try:
        for _ in range(args.runs):
            for key, image in images.items():
                results[key].append(stop_once(api, image, args.grace))
    finally:
        for key in images:
            engine.remove_image(api, f"minivm-bench/node-stop:{key}")
    medians = {k: statistics.median(s for s, _ in v) for k, v in results.items()}
    print(f"docker stop -t {args.grace} of a debian-minivm GNS3 Docker node, {args.runs} runs")
    for key, runs in results.items():
        codes = sorted({c for _, c in runs})
        print(f"  {key:8s} median {medians[key]:6.2f} s  exit codes {codes}  "
              f"runs {' '.join(f'{s:.2f}' for s, _ in runs)}")
    print(f"  ratio now/baseline {medians['now'] / medians['baseline']:.3f}")


if __name__ == "__main__":
    main()

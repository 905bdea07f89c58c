"""Start-up cost of the command line, side by side with a bare Python start.

    .venv/bin/python -m bench.startup [--runs 15] [--exec]

Runs, interleaved so that the machine's load weighs on each alike: `python -c pass` (the
floor: the interpreter and its site packages), `minivm --help`, and a cached `minivm build` of
a small context (built once first; the cached run asks the engine for the base image's id,
finds the build record unchanged and rewrites nothing). With ``--exec``, a one-node lab of
alpine-minivm's look-alike (TCG) is started first and `minivm lab exec LAB r1 -- true` joins,
end to end (the command runs in the guest), by the `minivm` script (its quick path) and through
the typer app as before it. Prints the median wall time of each and its ratio to the floor.
Goals: `--help` and the cached build each under 0.3 s, `lab exec` under 0.1 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
BUSYBOX_CONTEXT = "FROM minivm-test/busybox\nRUN echo bench > /bench\n"


def wall(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--exec", action="store_true",
                        help="also `minivm lab exec` on a one-node lab (boots a VM)")
    args = parser.parse_args()
    minivm = str(VENV_BIN / "minivm")
    with tempfile.TemporaryDirectory(prefix="minivm-startup-") as tmp:
        work = Path(tmp)
        context = work / "ctx"
        context.mkdir()
        (context / "Dockerfile").write_text(BUSYBOX_CONTEXT)
        subprocess.run([minivm, "build", str(context), "-q"], cwd=work, check=True)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "minivm --help": [minivm, "--help"],
            "minivm build (cached)": [minivm, "build", str(context), "-q"],
        }
        lab = None
        if args.exec:
            from bench.lab_common import READY, lookalike_bundle, write_lab
            from minivm.kit import kernel
            from minivm.paths import kernel_dir
            bundle = lookalike_bundle(work, kernel.flavours(kernel_dir())[1])
            lab = write_lab(work, bundle, {"r1": ""}, [])
            subprocess.run([minivm, "lab", "up", str(lab), "--wait", READY, "-q"], check=True)
            typer_app = ("import sys; from minivm.cli.main import main; "
                         "sys.argv[0] = 'minivm'; main()")
            commands["minivm lab exec -- true"] = [minivm, "lab", "exec", str(lab), "r1", "--",
                                                   "true"]
            commands["same, through typer"] = [sys.executable, "-c", typer_app, "lab", "exec",
                                               str(lab), "r1", "--", "true"]
        times: dict[str, list[float]] = {name: [] for name in commands}
        try:
            for _ in range(args.runs):
                for name, argv in commands.items():
                    times[name].append(wall(argv, work))
        finally:
            if lab is not None:
                subprocess.run([minivm, "lab", "down", str(lab), "-q"], check=False)
    floor = statistics.median(times["python -c pass"])
    print(f"{'command':26}{'median s':>10}{'min s':>8}{'x floor':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:26}{median:>10.3f}{min(values):>8.3f}{median / floor:>9.1f}")


if __name__ == "__main__":
    main()

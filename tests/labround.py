"""One round of a many-node lab through the CLI, as a user drives it: `lab up --wait` for
every main process, `lab exec` on every node, `lab down` with every power button; the time
of each phase, the QEMUs' RSS once every node is up, and any kernel panic on a console.
Used by ``bench/lab_scale.py``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MINIVM = [str(Path(sys.executable).with_name("minivm"))]
READY = r"Welcome to .*a MiniVM"  # the look-alike's main process (/etc/init.sh) started
PANIC = re.compile(rb"Kernel panic|IO-APIC \+ timer doesn't work|Out of memory")


def write_lab(folder: Path, bundle: Path, nodes: int, *, ram: int | None = None) -> Path:
    """``nodes`` nodes r1..rN of ``bundle``, linked in pairs (r1-r2, r3-r4, ...), TCG."""
    names = [f"r{i}" for i in range(1, nodes + 1)]
    spec = {"accel": "tcg", "console": "unix",
            "nodes": {n: {"appliance": str(bundle), **({"ram": ram} if ram else {})}
                      for n in names},
            "links": [f"{a}:eth0 -- {b}:eth0" for a, b in zip(names[::2], names[1::2],
                                                                strict=False)]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lab.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Round:
    """What one round measured (seconds, MiB) and what went wrong (empty: nothing)."""

    up: float = 0.0  # `lab up --wait`: QEMUs started and every main process running
    exec: float = 0.0  # `lab exec NODE -- hostname` on every node, one after the other
    down: float = 0.0  # `lab down`: every node powered off by its ACPI button
    rss_total: float = 0.0
    rss_max: float = 0.0
    problems: list[str] = field(default_factory=list)


def _cli(*args: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MINIVM, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_round(path: Path, nodes: int, *, timeout: float = 900) -> Round:
    """Up, exec, down, and check; the lab is down again afterwards whatever happened."""
    r = Round()
    names = [f"r{i}" for i in range(1, nodes + 1)]
    state = path.with_name(f"{path.stem}.state")
    start = time.monotonic()
    try:
        up = _cli("lab", "up", path, "--wait", READY, "--timeout", str(timeout), "--json",
                  "--quiet", timeout=timeout + 60)
        r.up = time.monotonic() - start
        if up.returncode != 0:
            r.problems.append(f"lab up: {up.stderr.strip()[-500:]}")
            return r
        info = json.loads(up.stdout)
        rss = [rss_mib(int(info["nodes"][n]["pid"])) for n in names]
        r.rss_total, r.rss_max = sum(rss), max(rss)
        start = time.monotonic()
        for name in names:
            done = _cli("lab", "exec", path, name, "--", "hostname", timeout=120)
            if (done.returncode, done.stdout.strip()) != (0, name):
                r.problems.append(f"exec on {name}: exit {done.returncode}, "
                                  f"{done.stdout.strip()!r} {done.stderr.strip()!r}")
        r.exec = time.monotonic() - start
    finally:
        start = time.monotonic()
        down = _cli("lab", "down", path, "--timeout", "300", "--json", timeout=600)
        r.down = time.monotonic() - start
        if down.returncode != 0:
            r.problems.append(f"lab down: {down.stderr.strip()[-500:]}")
        else:
            how = json.loads(down.stdout)["stopped"]
            if off := {n: h for n, h in how.items() if h != "acpi"}:
                r.problems.append(f"not powered off by the button: {off}")
        for name in names:
            log = state / name / "console.log"
            text = log.read_bytes() if log.exists() else b""
            if m := PANIC.search(text):
                r.problems.append(f"{name}: {m.group(0).decode()} on its console")
    return r

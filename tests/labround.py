"""One round of a many-node lab through the CLI, as a user drives it, with the CLI's default
timeouts: `lab up --wait` for every main process, `lab exec` on every node, `lab down` with
every power button; the time of each phase, the QEMUs' RSS once every node is up, and any
kernel panic on a console. Used by ``tests/test_lab_scale.py`` and ``bench/lab_scale.py``."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.cli import MINIVM
from tests.labs import READY

PANIC = re.compile(rb"Kernel panic[^\n]*|IO-APIC \+ timer doesn't work|Out of memory[^\n]*")


def names(nodes: int) -> list[str]:
    return [f"r{i}" for i in range(1, nodes + 1)]


def write_lab(folder: Path, bundle: Path, nodes: int, *, ram: int | None = None) -> Path:
    """``folder/lab.yaml``: ``nodes`` nodes r1..rN of ``bundle``, linked in pairs (r1-r2,
    r3-r4, ...), TCG, Unix-socket consoles."""
    every = names(nodes)
    spec = {"accel": "tcg", "console": "unix",
            "nodes": {n: {"appliance": str(bundle), **({"ram": ram} if ram else {})}
                      for n in every},
            "links": [f"{a}:eth0 -- {b}:eth0" for a, b in zip(every[::2], every[1::2],
                                                                strict=False)]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lab.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def rss_mib(pid: int) -> float:
    """A process's resident set in MiB (0 when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
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
    nodes: int = 0
    problems: list[str] = field(default_factory=list)


def _cli(*args: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MINIVM, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


def one_round(path: Path, nodes: int, *, timeout: float = 1800) -> Round:
    """Up, exec, down, and check each console's output of this round; the lab is down again
    afterwards whatever happened. ``timeout``: what each command may take before the round
    gives up on it."""
    r = Round(nodes=nodes)
    every = names(nodes)
    folder = path.with_name(f"{path.stem}.state") / "nodes"
    logs = {n: folder / n / "console.log" for n in every}
    before = {n: log.stat().st_size if log.exists() else 0 for n, log in logs.items()}
    try:
        start = time.monotonic()
        up = _cli("lab", "up", path, "--wait", READY, "--json", timeout=timeout)
        r.up = time.monotonic() - start
        if up.returncode != 0:
            r.problems.append(f"lab up: exit {up.returncode}: {up.stderr.strip()[-800:]}")
            return r
        info = json.loads(up.stdout)
        rss = [rss_mib(int(info["nodes"][n]["pid"])) for n in every]
        r.rss_total, r.rss_max = sum(rss), max(rss)
        start = time.monotonic()
        for name in every:
            done = _cli("lab", "exec", path, name, "--", "hostname", timeout=timeout)
            if (done.returncode, done.stdout, done.stderr) != (0, f"{name}\n", ""):
                r.problems.append(f"exec on {name}: exit {done.returncode}, "
                                  f"{done.stdout.strip()!r} {done.stderr.strip()!r}")
        r.exec = time.monotonic() - start
    finally:
        start = time.monotonic()
        down = _cli("lab", "down", path, "--json", timeout=timeout)
        r.down = time.monotonic() - start
        if down.returncode != 0:
            r.problems.append(f"lab down: exit {down.returncode}: {down.stderr.strip()[-800:]}")
        else:
            how = json.loads(down.stdout)["stopped"]
            if off := {n: h for n, h in how.items() if h != "acpi"}:
                r.problems.append(f"not powered off by the button: {off}")
        for name, log in logs.items():  # this round's part of each console log
            text = log.read_bytes()[before[name]:] if log.exists() else b""
            if not text:
                r.problems.append(f"{name}: no console log")
            elif m := PANIC.search(text):
                r.problems.append(f"{name}: {m.group(0).decode(errors='replace')!r} on its "
                                  "console")
    return r

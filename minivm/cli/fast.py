"""The quick way in for ``minivm lab exec``, which scripts call in loops.

The full CLI (typer, rich, the lab file's reader, the QMP client) costs more start-up time
than running a command in a guest. A plain ``minivm lab exec [OPTIONS] LAB NODE -- CMD...``
of a running node needs none of it: the node's control socket from ``state.json``, the pid
check, the control channel. Anything else (help, an unknown or malformed option, a node
that is not running, ``--debug``) returns ``None`` and the full CLI handles it, so its
output, messages and exit codes stay the only ones.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from minivm.errors import MinivmError, one_line

_VALUED = {"-u": "user", "--user": "user", "-w": "workdir", "--workdir": "workdir",
           "-e": "env", "--env": "env", "--timeout": "timeout"}


@dataclass
class ExecArgs:
    """``lab exec``'s arguments."""

    lab: Path
    node: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    timeout: float = 10.0
    interactive: bool = False


def _parse(args: list[str]) -> ExecArgs | None:
    """``lab exec``'s arguments as the full CLI reads them, or None when it must read them."""
    if "--" not in args:
        return None
    cut = args.index("--")
    head, command = args[:cut], args[cut + 1:]
    values: dict[str, str] = {}
    env: dict[str, str] = {}
    interactive = False
    positional: list[str] = []
    items = iter(head)
    for arg in items:
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _VALUED:
            if not eq:
                value = next(items, "")
                if not value or value.startswith("-"):
                    return None
            if _VALUED[name] != "env":
                values[_VALUED[name]] = value
                continue
            key, eq, val = value.partition("=")
            if not eq or not key:
                return None  # the full CLI says what is wrong with it
            env[key] = val
        elif arg in ("-i", "--interactive"):
            interactive = True
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
    if len(positional) != 2 or not command:
        return None
    try:
        timeout = float(values.get("timeout", 10.0))
    except ValueError:
        return None
    return ExecArgs(Path(positional[0]), positional[1], command, env, values.get("user"),
                    values.get("workdir"), timeout, interactive)


def _control_socket(lab_file: Path, node: str) -> Path | None:
    """The running node's control socket from the lab's state (the rule of
    ``lab.spec.state_dir_of``), or None for anything the full CLI must explain."""
    from minivm.vm.vmctl import alive

    lab_file = lab_file.resolve()
    state = lab_file.with_name(f"{lab_file.stem}.state") / "state.json"
    try:
        rec = json.loads(state.read_text())["nodes"][node]
        pid, qmp, control = int(rec["pid"]), rec.get("qmp"), rec.get("control")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not control or not isinstance(control, str) or not alive(pid, marker=qmp):
        return None
    return Path(control)


def _writer(stream: BinaryIO) -> Callable[[bytes], None]:
    def put(data: bytes) -> None:
        stream.write(data)
        stream.flush()
    return put


def lab_exec(args: list[str]) -> int | None:
    """Run ``lab exec`` with ``args`` (what follows ``lab exec``); None: use the full CLI."""
    if os.environ.get("MINIVM_DEBUG", "") not in ("", "0"):
        return None
    parsed = _parse(args)
    if parsed is None:
        return None
    sock = _control_socket(parsed.lab, parsed.node)
    if sock is None:
        return None

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    from minivm.vm import control

    try:
        with control.Channel(sock, what=parsed.node, timeout=parsed.timeout) as ch:
            return ch.exec(parsed.command, env=parsed.env, user=parsed.user,
                           workdir=parsed.workdir,
                           stdin=sys.stdin.buffer if parsed.interactive else None,
                           stdout=_writer(sys.stdout.buffer), stderr=_writer(sys.stderr.buffer))
    except (MinivmError, OSError, KeyboardInterrupt) as e:
        message, code = one_line(e)
        sys.stderr.write(f"error: {message}\n")
        return code


def main(argv: list[str]) -> int | None:
    """The exit code of a command run here, or None: the full CLI runs it."""
    if argv[:2] == ["lab", "exec"]:
        return lab_exec(argv[2:])
    return None

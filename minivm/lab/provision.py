"""What a node gets once it has booted: ``binds`` copied in, then ``exec`` commands run
(containerlab's order), over the control channel (no network needed in the guest)."""

from __future__ import annotations

import shlex
from pathlib import Path

from minivm.errors import MinivmError
from minivm.lab.control import control_socket
from minivm.lab.spec import Lab
from minivm.ui import Reporter
from minivm.vm import control, transfer

BOOT_TIMEOUT = 300.0  # the init serves the channel once the main process runs


def bind_parts(bind: str, where: str) -> tuple[str, str]:
    """``HOST:GUEST[:MODE]`` -> (host path, guest path)."""
    parts = bind.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise MinivmError(f"{where}: bind {bind!r} is not HOST_PATH:/GUEST_PATH[:MODE]")
    return parts[0], parts[1]


def provision(lab: Lab, names: list[str], *, reporter: Reporter,
              timeout: float = BOOT_TIMEOUT) -> dict[str, list[int]]:
    """Copy each started node's binds in and run its exec commands; returns each node's exit
    codes. A failing command is reported and the next one runs (as containerlab does)."""
    codes: dict[str, list[int]] = {}
    for name in names:
        node = lab.nodes[name]
        if not node.binds and not node.exec:
            continue
        codes[name] = []
        with reporter.stage(f"provision:{name}", f"Copying binds and running exec in {name}"), \
                control.Channel(control_socket(lab.path, name), what=name,
                                timeout=timeout) as ch:
            for bind in node.binds:
                host, guest = bind_parts(bind, f"{lab.path.name}: node {name}")
                local = Path(host).expanduser()
                local = local if local.is_absolute() else lab.path.parent / local
                _copy_bind(ch, local, guest)
            for command in node.exec:
                out: list[bytes] = []
                code = ch.exec(shlex.split(command), stdout=out.append, stderr=out.append)
                codes[name].append(code)
                if code != 0:
                    tail = b"".join(out).decode(errors="replace").strip().splitlines()[-1:]
                    reporter.warn(f"{name}: exec {command!r} exited {code}"
                                  + (f": {tail[0][:200]}" if tail else ""))
    return codes


def _copy_bind(ch: control.Channel, local: Path, guest: str) -> None:
    """A bind as a copy: the host folder's content appears at the guest path (merged into a
    folder that exists), a file at the guest path."""
    if not local.exists():
        raise MinivmError(f"bind source {local} does not exist")
    st = ch.stat_path(guest)
    if local.is_dir() and st is not None and st.is_dir:
        for child in sorted(local.iterdir()):
            transfer.copy_in(ch, child, guest)
    else:
        transfer.copy_in(ch, local, guest)

"""``minivm lab``: several MiniVMs linked by UDP tunnels (up, status, console, down)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from minivm.cli.common import Json, Quiet, emit_json, reporter, user_errors
from minivm.kinds import AccelChoice

app = typer.Typer(help="Boot and control a lab of linked MiniVMs (a GNS3 topology without "
                       "GNS3). See `minivm lab up --help` for the lab file.",
                  no_args_is_help=True)

LabFile = Annotated[Path, typer.Argument(help="The lab file (YAML).", show_default=False)]
Accel = Annotated[AccelChoice | None, typer.Option(
    "--accel", help="auto (probe KVM, fall back to TCG), kvm or tcg; default: the lab's.")]


@app.command("up")
@user_errors
def up(lab_file: LabFile, accel: Accel = None,
       wait: Annotated[str | None, typer.Option(
           "--wait", help="Wait until every started node's console shows this regex.")] = None,
       timeout: Annotated[float, typer.Option(help="Seconds --wait may take.")] = 300.0,
       quiet: Quiet = False, json_output: Json = False) -> None:
    """Start every node of the lab that is not running, in the background.

    Lab file: `nodes:` (name -> appliance, ram, append, adapters), `links:` (`r1:eth0 --
    r2:eth0`, or `r1:eth1 -- udp:HOST:REMOTE_PORT:LOCAL_PORT` to something outside the lab),
    optional `accel:` and `console:` (telnet or unix). State goes to LAB.state/ beside it.
    """
    from minivm import lab as lab_mod
    rep = reporter(quiet=quiet or json_output)
    lab = lab_mod.load(lab_file)
    offsets = {n: _log_size(lab, n) for n in lab.nodes}
    started = lab_mod.up(lab, accel=accel, reporter=rep)
    seconds: dict[str, float] = {}
    if wait and started:
        with rep.stage("wait", f"Waiting for {wait!r} on {len(started)} console(s)"):
            seconds = lab_mod.wait_console(lab, wait, timeout=timeout, names=started,
                                           since=offsets)
    info = lab_mod.status(lab)
    if json_output:
        emit_json({"started": started, "wait_seconds": seconds, **info})
        return
    for name in started:
        rep.info(f"{name}: console {info['nodes'][name]['console']}")


def _log_size(lab: Any, name: str) -> int:
    from minivm import lab as lab_mod

    log = lab_mod.node_dir(lab, name) / "console.log"
    return log.stat().st_size if log.exists() else 0


@app.command("status")
@user_errors
def status(lab_file: LabFile, json_output: Json = False) -> None:
    """What runs: each node's state, console, QEMU pid and link ports (exit 3 if one crashed)."""
    from minivm import lab as lab_mod
    lab = lab_mod.load(lab_file)
    info = lab_mod.status(lab)
    if json_output:
        emit_json(info)
    else:
        for name, node in info["nodes"].items():
            ports = " ".join(f"{k}:{v}" for k, v in node["ports"].items() if v)
            line = f"{name:12} {node['status']:8}"
            if node["status"] != "stopped":
                line += f" pid {node['pid']:<8} {node['console']}"
                if node["status"] == "crashed":
                    line += "  (QEMU is gone: `minivm lab up` starts it again)"
            print(f"{line}  {ports}".rstrip())
    if any(n["status"] == "crashed" for n in info["nodes"].values()):
        raise typer.Exit(3)


@app.command("console")
@user_errors
def console(lab_file: LabFile,
            node: Annotated[str, typer.Argument(help="The node's name.", show_default=False)]
            ) -> None:
    """Attach to a node's serial console (Ctrl-] detaches; the node keeps running)."""
    from minivm import lab as lab_mod
    from minivm.vm import console as console_mod

    console_mod.attach(lab_mod.console_address(lab_file, node))


@app.command("down")
@user_errors
def down(lab_file: LabFile,
         timeout: Annotated[float, typer.Option(
             help="Seconds to wait for the ACPI power-off before quitting QEMU.")] = 10.0,
         clean: Annotated[bool, typer.Option(
             "--clean", help="Also remove the state folder, the nodes' disks included.")] = False,
         quiet: Quiet = False, json_output: Json = False) -> None:
    """Power every node off (ACPI power button), then quit or kill what remains."""
    from minivm import lab as lab_mod
    rep = reporter(quiet=quiet or json_output)
    results = lab_mod.down(lab_file, timeout=timeout, clean=clean, reporter=rep)
    if json_output:
        emit_json({"lab": str(lab_file.resolve()), "stopped": results})

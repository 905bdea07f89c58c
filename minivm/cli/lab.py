"""``minivm lab``: several MiniVMs linked by UDP tunnels (up, status, console, exec, cp, down)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer

from minivm.cli.common import (
    HELP_MARKUP,
    AllowUnsafeOptions,
    Json,
    Quiet,
    emit_json,
    reporter,
    user_errors,
)
from minivm.cli.gns3 import CaCert, Password, ServerUrl, User, connect
from minivm.errors import MinivmError
from minivm.kinds import AccelChoice

if TYPE_CHECKING:
    from minivm.lab.runner import NodeState, Runner

app = typer.Typer(help="Boot and control a lab of linked MiniVMs (a GNS3 topology without "
                       "GNS3). See `minivm lab up --help` for the lab file.",
                  no_args_is_help=True, rich_markup_mode=HELP_MARKUP)

LabFile = Annotated[Path, typer.Argument(help="The lab file (YAML).", show_default=False)]
Accel = Annotated[AccelChoice | None, typer.Option(
    "--accel", help="auto (probe KVM, fall back to TCG), kvm or tcg; default: the lab's.")]


@app.command("up")
@user_errors
def up(lab_file: LabFile, accel: Accel = None,
       wait: Annotated[str | None, typer.Option(
           "--wait", help="Wait until every started node's console shows this regex.")] = None,
       timeout: Annotated[float, typer.Option(help="Seconds --wait may take.")] = 300.0,
       url: ServerUrl = None, user: User = None, password: Password = None,
       ca_cert: CaCert = None,
       no_start: Annotated[bool, typer.Option(
           "--no-start", help="With --server: make the project, nodes and links only.")] = False,
       allow_unsafe_options: AllowUnsafeOptions = False,
       no_build: Annotated[bool, typer.Option(
           "--no-build", help="Never build an `image:` node's source; refuse if one is not "
                              "built.")] = False,
       quiet: Quiet = False, json_output: Json = False) -> None:
    """Start every node of the lab that is not running, in the background.

    Lab file: `nodes:` (name -> appliance, or image: a context folder, reference or archive
    that `up` builds when missing or changed; ram, append, adapters, publish: ["8080:80"]:
    127.0.0.1:8080 on the host reaches the node's port 80; compute: a GNS3 compute, with
    --server; ip: {NETWORK: ADDRESS}), `links:` (`r1:eth0 -- r2:eth0`, or `r1:eth1 --
    udp:HOST:REMOTE_PORT:LOCAL_PORT` to something outside the lab), `networks:` (named
    segments: `lan: {subnet: 10.77.0.0/24, members: [a:eth0, b:eth0, c:eth0]}`; a subnet
    gives each member an address and every node the names of its peers),
    optional `accel:` and `console:` (unix, the default: `minivm lab console LAB NODE`; or
    telnet: 127.0.0.1:PORT, for tools that need it; also per node). State goes to LAB.state/
    beside it (node folders in LAB.state/nodes/).

    With --server the lab runs on a GNS3 server instead: a project named after the lab file,
    one QEMU node per lab node (on its `compute:`, default the controller's own), its links.
    """
    from minivm.lab import images
    from minivm.lab.spec import check_options, load, state_dir_of
    rep = reporter(quiet=quiet or json_output)
    built = images.ensure(lab_file, state_dir_of(lab_file), reporter=rep,
                          allow_build=not no_build)
    lab = load(lab_file)
    for note in lab.notes:
        rep.warn(f"{lab_file.name}: {note}")
    check_options(lab, allow_unsafe=allow_unsafe_options)  # before any server is contacted
    runner = _runner(url, user, password, ca_cert)
    result = runner.up(lab, accel=accel, start=not no_start, wait=wait, timeout=timeout,
                       reporter=rep, allow_unsafe_options=allow_unsafe_options)
    if json_output:
        emit_json(result.to_json() | {"images": built})
        return
    for name, node in result.status.nodes.items():
        where = f" on {node.compute_id}" if node.compute_id else ""
        console = node.console or ""
        if console.startswith("unix:"):  # a socket only this user reaches
            console = f"minivm lab console {lab_file} {name}"
        rep.info(f"{name}: {node.status}{where}" + (f", console {console}" if console else ""))


def _runner(url: str | None, user: str | None, password: str | None,
            ca_cert: Path | None = None) -> Runner:
    """Where the lab runs: on the GNS3 server at ``url``, else here."""
    if url:
        from minivm.lab.gns3 import Gns3Runner
        return Gns3Runner(connect(url, user, password, ca_cert))
    from minivm.lab.local import LocalRunner
    return LocalRunner()


@app.command("status")
@user_errors
def status(lab_file: LabFile, url: ServerUrl = None, user: User = None,
           password: Password = None, ca_cert: CaCert = None, json_output: Json = False) -> None:
    """What runs: each node's state, console, QEMU pid and link ports (exit 3 if one crashed).

    With --server: each node's state in the GNS3 project (started, stopped, absent).
    """
    from minivm.lab.spec import load
    info = _runner(url, user, password, ca_cert).status(load(lab_file))
    if json_output:
        emit_json(info.to_json())
    else:
        for name, node in info.nodes.items():
            print(_status_line(name, node))
        for name, net in info.networks.items():
            subnet = f" {net.subnet}" if net.subnet else ""
            print(f"network {name} ({net.status}{subnet}): {', '.join(net.members)}")
    if info.crashed:
        raise typer.Exit(3)


def _status_line(name: str, node: NodeState) -> str:
    from minivm.lab.runner import PUBLISH_NIC

    line = f"{name:12} {node.status:8}"
    if node.pid is not None:
        line += f" pid {node.pid:<8} {node.console}"
        if node.status == "crashed":
            line += "  (QEMU is gone: `minivm lab up` starts it again)"
    if node.compute_id is not None:
        line += f" {node.compute_id:<12} {node.console or ''}"
    ports = " ".join(f"{k}:{v}" for k, v in (node.ports or {}).items() if v)
    if node.publish:
        ports += f"  {PUBLISH_NIC}: {', '.join(node.publish)}"
    if node.addresses:
        ports += "  " + " ".join(f"{dev} {addr}" for dev, addr in node.addresses.items())
    return f"{line}  {ports}".rstrip()


@app.command("console")
@user_errors
def console(lab_file: LabFile,
            node: Annotated[str, typer.Argument(help="The node's name.", show_default=False)]
            ) -> None:
    """Attach to a node's serial console (Ctrl-] detaches; the node keeps running).

    Consoles are Unix sockets in the lab's state folder that only you can reach (a node or
    the lab with `console: telnet` listens on 127.0.0.1 instead, open to every local user).
    """
    from minivm import lab as lab_mod
    from minivm.vm import console as console_mod

    console_mod.attach(lab_mod.console_address(lab_file, node))


Node = Annotated[str, typer.Argument(help="The node's name.", show_default=False)]
Timeout = Annotated[float, typer.Option(
    "--timeout", help="Seconds to wait for the guest's answer on the control channel.")]


@app.command("exec")
@user_errors
def exec_(lab_file: LabFile, node: Node,
          command: Annotated[list[str], typer.Argument(
              help="The command and its arguments (after `--`).", show_default=False)],
          user: Annotated[str | None, typer.Option(
              "--user", "-u", help="USER[:GROUP] (name or number); default: the image's.")
          ] = None,
          workdir: Annotated[str | None, typer.Option(
              "--workdir", "-w", help="Working folder; default: the image's WORKDIR.")] = None,
          env: Annotated[list[str] | None, typer.Option(
              "--env", "-e", help="KEY=VALUE over the image's environment (repeatable).")
          ] = None,
          interactive: Annotated[bool, typer.Option(
              "--interactive", "-i", help="Pass stdin to the command (EOF closes it).")
          ] = False,
          timeout: Timeout = 10.0) -> None:
    """Run a command in a running node, as `docker exec`: the image's environment, user and
    folder; stdout and stderr apart; its exit code (127: not found, 126: not executable).

    No network is needed in the guest: the init serves a virtio-serial port.

    Example: `minivm lab exec lab.yaml r1 -- sh -c 'ip addr'`
    """
    variables: dict[str, str] = {}
    for item in env or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise MinivmError(f"-e {item!r} is not KEY=VALUE")
        variables[key] = value
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def write(stream: BinaryIO) -> Callable[[bytes], None]:
        def put(data: bytes) -> None:
            stream.write(data)
            stream.flush()
        return put

    code = _runner(None, None, None).exec(
        lab_file, node, command, env=variables, user=user, workdir=workdir,
        stdin=sys.stdin.buffer if interactive else None, stdout=write(out), stderr=write(err),
        timeout=timeout)
    raise typer.Exit(code)


@app.command("cp")
@user_errors
def cp(lab_file: LabFile,
       source: Annotated[str, typer.Argument(help="NODE:PATH or a local path.",
                                             show_default=False)],
       destination: Annotated[str, typer.Argument(help="A local path or NODE:PATH.",
                                                  show_default=False)],
       archive: Annotated[bool, typer.Option(
           "--archive", "-a", help="Copying out: keep the guest's owners (needs root).")
       ] = False,
       timeout: Timeout = 10.0, quiet: Quiet = False) -> None:
    """Copy a file or folder between the host and a running node, as `docker cp`: bytes and
    modes kept, folders as a tar stream; an existing folder as destination receives the source
    under its own name (SRC/. its contents), merged with what is there. Copying out, what the
    guest sends is checked: nothing outside the destination is touched, device nodes and
    FIFOs are skipped, setuid bits dropped, files owned by you (-a: the guest's owners).
    Nothing is left half-written on the host."""
    from rich.markup import escape

    rep = reporter(quiet=quiet)
    written = _runner(None, None, None).cp(lab_file, source, destination, timeout=timeout,
                                           archive=archive,
                                           warn=lambda line: rep.warn(escape(line)))
    rep.info(f"{source} -> {written}")


@app.command("down")
@user_errors
def down(lab_file: LabFile,
         timeout: Annotated[float, typer.Option(
             help="Seconds to wait for the ACPI power-off before quitting QEMU.")] = 10.0,
         clean: Annotated[bool, typer.Option(
             "--clean", help="Also remove the state folder, the nodes' disks included.")] = False,
         url: ServerUrl = None, user: User = None, password: Password = None,
         ca_cert: CaCert = None,
         delete: Annotated[bool, typer.Option(
             "--delete", help="With --server: also delete the GNS3 project.")] = False,
         quiet: Quiet = False, json_output: Json = False) -> None:
    """Power every node off (ACPI power button), then quit or kill what remains.

    With --server: GNS3 stops the nodes (its stop presses the ACPI power button too).
    """
    runner = _runner(url, user, password, ca_cert)
    for flag, given in (("--clean", clean), ("--delete", delete)):
        if given and flag != runner.remove_option:
            raise MinivmError(f"{flag} does not apply to the {runner.where} runner",
                              hint=f"{runner.remove_option} removes what it made")
    result = runner.down(lab_file, timeout=timeout, remove=clean or delete,
                         reporter=reporter(quiet=quiet or json_output))
    if json_output:
        emit_json(result.to_json())


@app.command("export")
@user_errors
def export(lab_file: LabFile,
           output: Annotated[Path, typer.Option(
               "--output", "-o", help="The file to write (.gns3project, or .clab.yml).",
               show_default=False)],
           fmt: Annotated[str, typer.Option(
               "--format", help="gns3project (the project on a GNS3 server, images "
                                "included) or clab (a containerlab topology, no server).")
           ] = "gns3project",
           url: ServerUrl = None, user: User = None, password: Password = None,
         ca_cert: CaCert = None,
           quiet: Quiet = False, json_output: Json = False) -> None:
    """Write the lab's GNS3 project, images included, as one .gns3project file (another GNS3
    user imports it with File > Import portable project; needs --server), or with --format
    clab the lab as a containerlab topology that `minivm lab up` runs again.
    """
    from minivm.lab.spec import load
    rep = reporter(quiet=quiet or json_output)
    lab = load(lab_file)
    if fmt == "clab":
        from minivm.fsutil import atomic_write_bytes
        from minivm.lab import clab
        atomic_write_bytes(output, clab.dump(clab.export(lab, output)).encode())
        if json_output:
            emit_json({"lab": str(lab.path), "file": str(output), "format": "clab"})
        else:
            rep.info(f"wrote {output}")
        return
    if fmt != "gns3project":
        raise MinivmError(f"--format {fmt!r} is neither gns3project nor clab")
    result = _runner(url, user, password, ca_cert).export(lab, output, reporter=rep)
    if json_output:
        emit_json(result.to_json())
    else:
        rep.info(f"wrote {output} ({result.bytes / 1e6:.1f} MB)")


@app.command("graph")
@user_errors
def graph(lab_file: LabFile,
          output: Annotated[Path, typer.Option(
              "--output", "-o", help="The picture to write: .svg, .png (Graphviz) or .dot.",
              show_default=False)],
          url: ServerUrl = None, user: User = None, password: Password = None,
          quiet: Quiet = False) -> None:
    """Draw the lab: nodes, links, networks with their subnets, each interface's address,
    and each node's state (running, stopped, crashed; with --server: on the GNS3 server)."""
    from minivm.lab import graph as graph_mod
    from minivm.lab.spec import load
    rep = reporter(quiet=quiet)
    lab = load(lab_file)
    info = _runner(url, user, password).status(lab)
    graph_mod.draw(lab, output, {name: node.status for name, node in info.nodes.items()})
    rep.info(f"wrote {output}")

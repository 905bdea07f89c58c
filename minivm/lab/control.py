"""Starting, watching and stopping a lab's nodes (QEMU processes in the background)."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from minivm import hostfacts
from minivm.errors import MinivmError
from minivm.fsutil import remove
from minivm.gns3.machine import machine_from_appliance
from minivm.kinds import ConsoleKind, NodeStatus
from minivm.lab import switch
from minivm.lab.networks import addresses_of, member_text
from minivm.lab.ports import (
    endpoints,
    hold_port,
    local_address,
    outside_ends,
    plug_key,
    tunnels,
    tunnels_or_none,
)
from minivm.lab.runner import LabStatus, NetworkState, NodeState
from minivm.lab.spec import (
    LOOPBACK,
    SOCKET_PATH_MAX,
    STOP_TIMEOUT,
    External,
    Lab,
    check_options,
    endpoint_key,
    load,
    state_dir_of,
)
from minivm.lab.state import (
    SOCKETS,
    NodeRecord,
    State,
    clean_runtime,
    locked,
    migrate,
    node_dir,
    private_dir,
    read_state,
    running,
    write_state,
)
from minivm.run import which
from minivm.ui import QUIET, Reporter
from minivm.vm import accel as accel_mod
from minivm.vm import qemu, vmctl
from minivm.vm.launch import launch

# A node started under KVM that prints nothing on its console for this long is not booting.
KVM_SILENCE = 5.0


def node_id(lab: Lab, name: str) -> uuid.UUID:
    """A node's stable id (also its QEMU -uuid and the base of its MAC addresses)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"minivm-lab:{lab.path}:{name}")


def node_machine(lab: Lab, name: str, *, disks: list[Path],
                 adapters: list[qemu.UdpTunnel | None] | None = None,
                 **runtime: Any) -> qemu.Machine:
    """The Machine of a lab node: its appliance with the node's RAM, CPUs, adapters and kernel
    arguments. Both runners use it (locally with overlays and tunnels; on a GNS3 server the
    node's properties are read from it), so the two cannot drift."""
    node = lab.nodes[name]
    if adapters is None:
        adapters = [None] * node.adapters
    return machine_from_appliance(
        node.appliance, name=name, node_id=node_id(lab, name), disks=disks, adapters=adapters,
        append=node.append, ram=node.ram, cpus=node.cpus, **runtime)


def up(lab: Lab, *, accel: str | None = None, reporter: Reporter = QUIET,
       allow_unsafe_options: bool = False) -> list[str]:
    """Start every node that is not running; returns the names started.

    Every node's appliance options pass the allow-list first (unless
    ``allow_unsafe_options``). Nothing is left half-way: when a node fails to start, the
    nodes this call started are stopped again and the overlays it created removed, and the
    error is raised.
    """
    check_options(lab, allow_unsafe=allow_unsafe_options)
    which(qemu.QEMU)
    which("qemu-img")
    if lab.networks:
        switch.check_programs()
    with locked(lab.state_dir):
        state = read_state(lab.state_dir)
        alive = {n for n, rec in state.nodes.items() if running(rec)}
        for name in sorted(set(state.nodes) - alive):
            if state.nodes[name].status == "running":
                reporter.warn(f"{name}: its QEMU is gone (crash or kill); starting it again")
            clean_runtime(lab, name)
            del state.nodes[name]
        if moved := migrate(lab.state_dir, state):
            reporter.info(f"moved the folders of {', '.join(moved)} into "
                          f"{lab.state_dir / 'nodes'} (the state folder's newer layout)")
        if alive and state.digest != lab.digest:
            raise MinivmError(f"{lab.path.name} changed while its lab runs "
                              f"({', '.join(sorted(alive))})",
                              hint=f"run: minivm lab down {lab.path}")
        if stray := alive - set(lab.nodes):
            raise MinivmError(f"nodes {', '.join(sorted(stray))} run but are not in the lab")
        if not alive:
            for rec in state.networks.values():
                switch.stop(rec)
            state.ports, state.networks = {}, {}
        todo = [n for n in lab.nodes if n not in alive]
        if not todo and all(switch.alive(state.networks.get(net.name))
                            for net in lab.networks):
            reporter.info("every node is running already")
            return []
        asked = accel or lab.accel
        kernels = [k for n in todo if (k := lab.nodes[n].appliance.kernel) is not None]
        chosen = accel_mod.choose(asked, reporter=reporter, kernels=kernels)
        for name in todo:
            for sock in SOCKETS:
                path = node_dir(lab, name) / sock
                if len(str(path)) > SOCKET_PATH_MAX:
                    raise MinivmError(f"socket path {path} is too long for a Unix socket",
                                      hint="move the lab file to a shorter path")
        state.lab, state.digest = str(lab.path), lab.digest
        started: list[str] = []
        created: list[Path] = []
        log_offsets: dict[str, int] = {}
        switches: list[str] = []
        try:
            with ExitStack() as holders:
                held = _hold_ports(lab, state, todo, holders)
                _start_networks(lab, state, holders, switches, reporter)
                for name in todo:
                    with reporter.stage(f"start:{name}", f"Starting {name}"):
                        state.nodes[name] = _start_node(
                            lab, state, name, chosen, held[name], holders, created, log_offsets,
                            unsafe_options=allow_unsafe_options)
                    started.append(name)
                if chosen == "kvm" and asked == "auto":
                    _restart_silent_under_tcg(lab, state, started, holders, created,
                                              log_offsets, reporter,
                                              unsafe_options=allow_unsafe_options)
                write_state(lab.state_dir, state)  # the daemonized nodes outlive the block
        except BaseException:
            _rollback(lab, state, started, created, switches)
            raise
        return started


def _restart_silent_under_tcg(lab: Lab, state: State, names: list[str], holders: ExitStack,
                              created: list[Path], log_offsets: dict[str, int],
                              reporter: Reporter, *, unsafe_options: bool = False) -> None:
    """Nodes started under KVM whose console stays empty for :data:`KVM_SILENCE` s: KVM does
    not run this guest here, whatever the probe said. They are killed and started again under
    TCG (one warning line), and the host's KVM verdict for their kernels is set to no."""
    silent = set(names)
    deadline = max(state.nodes[n].started for n in names) + KVM_SILENCE
    while silent:
        for name in sorted(silent):
            log = node_dir(lab, name) / "console.log"
            if log.exists() and log.stat().st_size > log_offsets[name]:
                silent.discard(name)
        if not silent or time.time() > deadline:
            break
        time.sleep(0.1)
    if not silent:
        return
    reporter.warn(f"{', '.join(sorted(silent))}: no console output {KVM_SILENCE:.0f} s after "
                  "starting under KVM (KVM does not run Linux on this host): restarted under "
                  "TCG")
    for name in sorted(silent):
        rec = state.nodes[name]
        vmctl.stop(rec.pid, None)
        kernel = lab.nodes[name].appliance.kernel
        if kernel is not None:
            hostfacts.record_verdict(kernel, False, f"node {name} printed nothing on its "
                                                    f"console {KVM_SILENCE:.0f} s into its boot")
        port = int(rec.console.rsplit(":", 1)[1]) if rec.console.startswith("telnet:") else None
        state.nodes[name] = _start_node(lab, state, name, "tcg", [], holders, created,
                                        log_offsets, console_port=port,
                                        unsafe_options=unsafe_options)


def _hold_ports(lab: Lab, state: State, todo: list[str], holders: ExitStack
                ) -> dict[str, list[socket.socket]]:
    """Per node to start, every port it will listen on (link ends, telnet console, published
    ports), bound now: a port taken is refused before any node starts. The console's comes
    first. New link ports are recorded in ``state.ports``."""
    held: dict[str, list[socket.socket]] = {name: [] for name in todo}
    for name in todo:
        if lab.nodes[name].console == ConsoleKind.TELNET:
            held[name].append(holders.enter_context(
                hold_port(0, kind=socket.SOCK_STREAM, what="console")))
    outside = outside_ends(lab)
    for node, adapter, fixed in endpoints(lab):
        if node not in todo:
            continue
        key = endpoint_key(node, adapter)
        host = local_address(outside[key].host) if key in outside else LOOPBACK
        holder = holders.enter_context(hold_port(state.ports.get(key, fixed), host=host,
                                                 what=f"link end {key}"))
        held[node].append(holder)
        state.ports[key] = holder.getsockname()[1]
    for name in todo:
        held[name] += [holders.enter_context(hold_port(
            p.host_port, kind=socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM,
            what=f"published by {name} as {p.text}")) for p in lab.nodes[name].publish]
    return held


def _start_networks(lab: Lab, state: State, holders: ExitStack, switches: list[str],
                    reporter: Reporter) -> None:
    """Start the switch of every network that does not run (again on the same ports, so the
    running nodes' tunnels still reach it) and plug its members in; the names started go to
    ``switches``. The nodes' own ports are held already (``state.ports``)."""
    for net in lab.networks:
        rec = state.networks.get(net.name)
        if rec and switch.alive(rec):
            continue
        if rec:
            reporter.warn(f"network {net.name}: its switch is gone; starting it again")
            switch.stop(rec)
        folder = switch.folder_of(lab.state_dir, net.name)
        if len(str(folder / "sw" / "ctl")) > SOCKET_PATH_MAX - 16:
            raise MinivmError(f"socket path {folder / 'sw'} is too long for a Unix socket",
                              hint="move the lab file to a shorter path")
        with reporter.stage(f"net:{net.name}", f"Starting the switch of {net.name}"):
            rec = switch.start_switch(net, folder)
            state.networks[net.name] = rec
            switches.append(net.name)
            for member in net.members:
                if isinstance(member, External):
                    switch.start_plug(net, rec, member, local_port=member.local_port,
                                      local_host=local_address(member.host),
                                      remote=(member.host, member.remote_port), folder=folder)
                    continue
                key = plug_key(net.name, member)
                holder = holders.enter_context(hold_port(state.ports.get(key, 0),
                                                         what=f"switch port of {key}"))
                state.ports[key] = holder.getsockname()[1]
                switch.start_plug(net, rec, member, local_port=state.ports[key],
                                  remote=(LOOPBACK, state.ports[endpoint_key(*member)]),
                                  folder=folder, holder=holder)


def _start_node(lab: Lab, state: State, name: str, chosen: accel_mod.Accel,
                held: list[socket.socket], holders: ExitStack, created: list[Path],
                log_offsets: dict[str, int], *, console_port: int | None = None,
                unsafe_options: bool = False) -> NodeRecord:
    """Start one node (its VM killed again when ``holders`` unwinds on an error); where its
    console log starts for this boot goes to ``log_offsets``. ``console_port``: the telnet
    console's port when none is ``held`` (a node started again)."""
    node = lab.nodes[name]
    workdir = node_dir(lab, name)
    private_dir(workdir)
    new = [p for p in qemu.overlay_paths(node.appliance.images, workdir) if not p.exists()]
    disks = qemu.create_overlays(node.appliance.images, workdir)
    created += new
    if node.console == ConsoleKind.TELNET:
        port = held[0].getsockname()[1] if console_port is None else console_port
        console = qemu.Console(ConsoleKind.TELNET, port=port, log=workdir / "console.log")
        address = f"telnet:{LOOPBACK}:{port}"
    else:
        console = qemu.Console(ConsoleKind.UNIX, path=workdir / "console.sock",
                               log=workdir / "console.log")
        address = f"unix:{workdir / 'console.sock'}"
    qmp = workdir / "qmp.sock"
    m = node_machine(lab, name, disks=disks, adapters=tunnels(lab, state.ports, name),
                     accel=chosen, console=console, qmp=qmp, monitor=workdir / "monitor.sock",
                     pidfile=workdir / "qemu.pid", daemonize=True,
                     control=workdir / "control.sock", publish=node.publish,
                     unsafe_options=unsafe_options, tb_size=qemu.TB_SIZE)
    clean_runtime(lab, name)
    with (workdir / "console.log").open("ab") as log:
        log.write(f"\n--- minivm lab up {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
        log_offsets[name] = log.tell()
    started = time.time()
    vm = holders.enter_context(launch(m, log=workdir / "qemu.log", what=f"node {name}",
                                      held=held))
    for sock in SOCKETS:  # QEMU made them with the umask's mode: the node's user only
        if (workdir / sock).exists():
            (workdir / sock).chmod(0o600)
    return NodeRecord(pid=vm.pid, qmp=qmp, console=address, monitor=workdir / "monitor.sock",
                      accel=chosen, started=started, node_id=str(m.node_id), argv=vm.argv,
                      control=workdir / "control.sock",
                      publish=tuple(p.text for p in node.publish),
                      macs=tuple(qemu.mac_address(m.node_id, i) for i in range(node.adapters)))


def _rollback(lab: Lab, state: State, started: list[str], created: list[Path],
              switches: list[str]) -> None:
    for net in switches:
        switch.stop(state.networks.pop(net, None))
    for name in started:
        rec = state.nodes.pop(name, None)
        if rec is not None:
            vmctl.stop(rec.pid, rec.qmp, timeout=0)
        clean_runtime(lab, name)
    for path in created:
        remove(path)
    if not any(running(rec) for rec in state.nodes.values()):
        for net_rec in state.networks.values():
            switch.stop(net_rec)
        state.ports, state.networks = {}, {}
    if state.nodes:
        write_state(lab.state_dir, state)
    else:
        remove(lab.state_dir / "state.json")


def status(lab: Lab) -> LabStatus:
    """What runs: per node its state (running, stopped, crashed), pid, console, QMP status."""
    state = read_state(lab.state_dir)
    nodes: dict[str, NodeState] = {}
    for name in lab.nodes:
        ports = {f"eth{i}": t.local_port if t else None
                 for i, t in enumerate(tunnels_or_none(lab, state.ports, name))}
        rec = state.nodes.get(name)
        if rec is None:
            nodes[name] = NodeState(NodeStatus.STOPPED, ports=ports,
                                    addresses=addresses_of(lab.networks, name))
            continue
        alive_now = running(rec)
        guest = None
        if alive_now:
            try:
                guest = vmctl.query_status(rec.qmp, timeout=3)
            except MinivmError:
                guest = "not answering"
        nodes[name] = NodeState(
            NodeStatus.RUNNING if alive_now else NodeStatus.CRASHED, console=rec.console,
            pid=rec.pid, accel=rec.accel or None, log=str(node_dir(lab, name) / "console.log"),
            guest=guest, publish=rec.publish, ports=ports,
            addresses=addresses_of(lab.networks, name))
    networks = {net.name: NetworkState(
        "running" if switch.alive(state.networks.get(net.name)) else "stopped",
        subnet=str(net.subnet) if net.subnet else None,
        members=tuple(member_text(m) for m in net.members)) for net in lab.networks}
    return LabStatus(lab=lab.path, state=lab.state_dir, nodes=nodes,
                     links=tuple(link.text for link in lab.links), networks=networks)


def down(lab_file: Path, *, timeout: float = STOP_TIMEOUT, clean: bool = False,
         reporter: Reporter = QUIET) -> dict[str, str]:
    """Power every node off (ACPI, all at once, ``timeout`` s), then quit or kill what remains.

    Needs only the state folder (works when the lab file or its appliances changed or went).
    Returns how each node ended (acpi, quit, killed, gone). With ``clean`` the state folder,
    disks included, is removed.
    """
    state_dir = state_dir_of(lab_file)
    if not state_dir.exists():
        reporter.info("the lab is not running")
        return {}
    with locked(state_dir):
        state = read_state(state_dir)
        results: dict[str, str] = {}

        def stop_one(name: str, rec: NodeRecord) -> None:
            results[name] = vmctl.stop(rec.pid, rec.qmp, timeout=timeout)

        threads = [threading.Thread(target=stop_one, args=(n, r)) for n, r in state.nodes.items()
                   if running(r)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in state.nodes:
            results.setdefault(name, "gone")
        for rec in state.networks.values():
            switch.stop(rec)
        for name, how in sorted(results.items()):
            clean_runtime(state_dir, name)
            if how in ("quit", "killed"):
                reporter.warn(f"{name}: did not power off within {timeout:.0f} s ({how})")
            else:
                reporter.info(f"{name}: {'powered off' if how == 'acpi' else 'was not running'}")
        state.nodes, state.ports, state.networks = {}, {}, {}
        migrate(state_dir, state)
        write_state(state_dir, state)
    if clean:
        shutil.rmtree(state_dir, ignore_errors=True)
    return results


def _running_record(lab_file: Path, name: str) -> NodeRecord:
    rec = read_state(state_dir_of(lab_file)).nodes.get(name)
    if rec is None and name not in load(lab_file).nodes:
        raise MinivmError(f"{lab_file.name} has no node {name!r}")
    if not rec or not running(rec):
        raise MinivmError(f"node {name} of {lab_file.name} is not running",
                          hint=f"start it: minivm lab up {lab_file}")
    return rec


def console_address(lab_file: Path, name: str) -> str:
    """Where a running node's console listens (from the state folder alone)."""
    return _running_record(lab_file, name).console


def control_socket(lab_file: Path, name: str) -> Path:
    """The control channel's socket of a running node (from the state folder alone)."""
    rec = _running_record(lab_file, name)
    if rec.control is None:
        raise MinivmError(f"node {name} was started without a control channel",
                          hint=f"restart it: minivm lab down {lab_file}, then up")
    return rec.control


def wait_console(lab: Lab, pattern: str, *, timeout: float, names: list[str] | None = None,
                 since: dict[str, int] | None = None) -> dict[str, float]:
    """Wait until every node's console log (after byte offset ``since[name]``) matches
    ``pattern``; returns the seconds each took. Bounded poll of the log files."""
    regex = re.compile(pattern.encode())
    names = names or list(lab.nodes)
    start = time.monotonic()
    deadline = start + timeout
    seen: dict[str, float] = {}
    while True:
        for name in names:
            if name in seen:
                continue
            log = node_dir(lab, name) / "console.log"
            data = log.read_bytes()[(since or {}).get(name, 0):] if log.exists() else b""
            if regex.search(data):
                seen[name] = time.monotonic() - start
        if len(seen) == len(names):
            return seen
        if time.monotonic() > deadline:
            missing = ", ".join(n for n in names if n not in seen)
            raise MinivmError(f"{missing}: {pattern!r} not on the console within "
                              f"{timeout:.0f} s",
                              hint=f"see {lab.state_dir}/nodes/*/console.log")
        time.sleep(0.1)

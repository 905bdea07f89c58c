"""The local runner: a lab's nodes as QEMU processes here (:mod:`minivm.lab.control`), reached
through their state folder; ``exec`` and ``cp`` through each node's control channel."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from minivm.errors import MinivmError
from minivm.lab import control
from minivm.lab.runner import DownResult, ExportResult, LabStatus, UpResult, Write, ignore
from minivm.lab.spec import STOP_TIMEOUT, Lab, load
from minivm.lab.state import node_dir
from minivm.ui import QUIET, Reporter


class LocalRunner:
    """Labs run by QEMU processes on this host (:class:`minivm.lab.runner.Runner`)."""

    where = "local"
    remove_option = "--clean"

    def up(self, lab: Lab, *, accel: str | None = None, start: bool = True,
           wait: str | None = None, timeout: float = 300.0,
           reporter: Reporter = QUIET, allow_unsafe_options: bool = False) -> UpResult:
        if not start:
            raise MinivmError("--no-start needs --server (a GNS3 server)")
        offsets = {n: _log_size(lab, n) for n in lab.nodes}
        started = control.up(lab, accel=accel, reporter=reporter,
                             allow_unsafe_options=allow_unsafe_options)
        seconds: dict[str, float] = {}
        if wait and started:
            with reporter.stage("wait", f"Waiting for {wait!r} on {len(started)} console(s)"):
                seconds = control.wait_console(lab, wait, timeout=timeout, names=started,
                                               since=offsets)
        from minivm.lab import provision
        codes = provision.provision(lab, started, reporter=reporter, timeout=timeout)
        return UpResult(control.status(lab), tuple(started), seconds, exec_codes=codes)

    def status(self, lab: Lab) -> LabStatus:
        return control.status(lab)

    def down(self, lab_file: Path, *, timeout: float = STOP_TIMEOUT, remove: bool = False,
             reporter: Reporter = QUIET) -> DownResult:
        stopped = control.down(lab_file, timeout=timeout, clean=remove, reporter=reporter)
        return DownResult(lab_file.resolve(), stopped, removed=remove)

    def exec(self, lab_file: Path, node: str, command: list[str], *,
             env: Mapping[str, str], user: str | None, workdir: str | None,
             stdin: BinaryIO | None, stdout: Write, stderr: Write, timeout: float) -> int:
        from minivm.vm.control import Channel

        with Channel(control.control_socket(lab_file, node), what=node, timeout=timeout) as ch:
            return ch.exec(command, env=dict(env), user=user, workdir=workdir, stdin=stdin,
                           stdout=stdout, stderr=stderr)

    def cp(self, lab_file: Path, source: str, destination: str, *, timeout: float,
           archive: bool = False, warn: Callable[[str], None] = ignore) -> str:
        from minivm.vm import transfer
        from minivm.vm.control import Channel

        names = set(load(lab_file).nodes)

        def guest(spec: str) -> tuple[str, str] | None:
            node, colon, path = spec.partition(":")
            return (node, path) if colon and node in names and path else None

        src, dst = guest(source), guest(destination)
        if bool(src) == bool(dst):
            raise MinivmError("one side of `lab cp` is NODE:PATH (a node of the lab), the "
                              "other a local path", hint=f"nodes: {', '.join(sorted(names))}")
        node = (src or dst or ("", ""))[0]
        with Channel(control.control_socket(lab_file, node), what=node, timeout=timeout) as ch:
            if src:
                return str(transfer.copy_out(ch, src[1], destination, archive=archive,
                                             warn=warn))
            assert dst is not None
            return f"{node}:{transfer.copy_in(ch, Path(source), dst[1])}"

    def export(self, lab: Lab, output: Path, *, reporter: Reporter = QUIET) -> ExportResult:
        raise MinivmError("lab export needs --server (or MINIVM_GNS3_URL)",
                          hint="the project is made on a GNS3 server by: minivm lab up --server")


def _log_size(lab: Lab, name: str) -> int:
    log = node_dir(lab, name) / "console.log"
    return log.stat().st_size if log.exists() else 0

"""Labs for the tests and benches: the appliance their nodes boot and a lab file writer."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from minivm.gns3 import appliance
from minivm.image import build
from minivm.kit import initramfs, kernel
from minivm.platforms import host
from minivm.ui import QUIET
from tests.cli import MINIVM, REPO, cli
from tests.imagefactory import alpine_lookalike
from tests.terminal import Terminal

READY = r"Welcome to .*a MiniVM"  # the look-alike's main process (/etc/init.sh) started


def lookalike_bundle(out: Path, kit: kernel.Kit) -> Path:
    """alpine-minivm's look-alike (busybox userland) built under ``out`` as a .gns3a bundle
    booting ``kit``, for the kit's platform (another platform's busybox is the one the kit's
    initramfs carries: static, nearly every applet)."""
    platform = kit.platform
    busybox = None
    if platform is not host():
        entries = initramfs.read_cpio(initramfs.decompress(kit.initrd.read_bytes()))
        busybox = out / f"busybox-{platform.arch}"
        out.mkdir(parents=True, exist_ok=True)
        busybox.write_bytes(next(e.data for e in entries if e.path == "bin/busybox"))
    context = alpine_lookalike(out / "ctx", busybox)
    result = build.build(str(context), reporter=QUIET, output_dir=out / "build",
                         platform=platform)
    return appliance.write_bundle(result.name, reporter=QUIET, folder=result.folder,
                                  kit=kit).path


def write_lab(folder: Path, bundle: Path, nodes: dict[str, str], links: list[str],
              telnet: tuple[str, ...] = ()) -> Path:
    """``folder/lab.yaml``: each node (name -> its kernel arguments) boots ``bundle`` under
    TCG; the nodes in ``telnet`` get a telnet console (the others a Unix socket)."""
    spec = {"accel": "tcg",
            "nodes": {n: {"appliance": str(bundle), "append": a,
                          **({"console": "telnet"} if n in telnet else {})}
                      for n, a in nodes.items()},
            "links": links}
    path = folder / "lab.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def variant(bundle: Path, folder: Path, **qemu_settings: object) -> Path:
    """A copy of the bundle (files linked) with some qemu settings changed."""
    shutil.copytree(bundle.parent, folder, symlinks=True)
    data = json.loads((folder / bundle.name).read_text())
    data["qemu"].update(qemu_settings)
    (folder / bundle.name).write_text(json.dumps(data))
    return folder / bundle.name


def lab_exec(path: Path, node: str, *args: str, stdin: bytes | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """``minivm lab exec LAB NODE ARGS...``, its output as bytes."""
    return subprocess.run([*MINIVM, "lab", "exec", str(path), node, *args],
                          input=stdin, capture_output=True, timeout=timeout)


def sh(lab_file: Path, node: str, command: str, timeout: float = 60) -> str:
    """A shell command in a running node (over the control channel); its stdout."""
    done = cli("lab", "exec", "--timeout", "30", lab_file, node, "--", "sh", "-c", command,
               timeout=timeout)
    assert done.returncode == 0, f"{node}: {command!r} exit {done.returncode}:\n" \
                                 f"{done.stdout}{done.stderr}"
    return done.stdout


def ip(address: str, device: str = "eth0", gateway: str = "") -> str:
    """The kernel argument ``ip=`` giving ``device`` a static ``address`` (CIDR)."""
    return f"ip={address}::{gateway}::{'':s}:{device}:off"


def fsck_overlay(overlay: Path, tmp: Path) -> str:
    """e2fsck -fn on the overlay's filesystem (flattened with qemu-img, nothing mounted)."""
    raw = tmp / f"{overlay.parent.name}-{overlay.stem}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(raw)], check=True)
    try:
        done = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout
    finally:
        raw.unlink()


def run_single_then_resume(bundle: Path, *run_args: str, check: bytes = b"echo $((6*7))",
                           shows: bytes = rb"\n42", timeout: float = 180) -> None:
    """``minivm run BUNDLE --append single``: the initramfs's shell comes before the root is
    mounted; leaving it resumes the boot to the main process, where ``check`` typed prints
    ``shows``; Ctrl-] then detaches, which powers the VM off."""
    with Terminal([*MINIVM, "run", bundle, *run_args, "--append", "single"],
                  cwd=REPO) as term:
        term.expect(rb"single-user shell before mounting the root", timeout)
        term.expect(rb"\(initramfs\) [^\n]*# ", 30)
        assert b"Welcome to" not in term.output
        term.send(b"exit\r")
        term.expect(READY.encode(), timeout)
        term.send(check + b"\r")
        term.expect(shows, 30)
        term.send(b"\x1d")
        assert term.wait(timeout=60) == 0

"""Shared by the lab benchmarks: the appliance under test and a lab writer."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from minivm import appliance, build, kernel
from minivm.ui import QUIET

REPO = Path(__file__).resolve().parent.parent
READY = r"Welcome to .*a MiniVM"  # the look-alike's main process (/etc/init.sh) started
LOOKALIKE = """\
FROM minivm-test/busybox:latest
COPY etc /etc/
ENTRYPOINT ["/etc/init.sh"]
"""


def lookalike_bundle(work: Path) -> Path:
    """alpine-minivm's look-alike (busybox userland) as a bundle under ``work``."""
    kit = kernel.current() or kernel.build(reporter=QUIET)
    context = work / "ctx" / "alpine-minivm"
    shutil.copytree(REPO / "images" / "alpine-minivm" / "etc", context / "etc", symlinks=True)
    (context / "Dockerfile").write_text(LOOKALIKE)
    result = build.build(str(context), reporter=QUIET, output_dir=work / "build")
    return appliance.write_bundle(result.name, reporter=QUIET, folder=result.folder,
                                  kit=kit).path


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mvbench-", dir="/tmp"))


def write_lab(folder: Path, bundle: Path, nodes: dict[str, str], links: list[str]) -> Path:
    spec = {"accel": "tcg",
            "nodes": {n: {"appliance": str(bundle), "append": a} for n, a in nodes.items()},
            "links": links}
    path = folder / "lab.yaml"
    path.write_text(json.dumps(spec))
    return path

"""Shared by the lab benchmarks: the appliance under test and a lab writer."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench import kits
from minivm.gns3 import appliance
from minivm.image import build
from minivm.ui import QUIET
from tests.imagefactory import alpine_lookalike

REPO = Path(__file__).resolve().parent.parent

READY = r"Welcome to .*a MiniVM"  # the look-alike's main process (/etc/init.sh) started


def lookalike_bundle(work: Path, flavour: str) -> Path:
    """alpine-minivm's look-alike (busybox userland) as a bundle under ``work``, booting the
    kit of ``flavour``."""
    kit = kits.kit(flavour)
    context = alpine_lookalike(work / "ctx")
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

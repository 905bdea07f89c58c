"""Shared by the lab benchmarks: the appliance under test (the tests' look-alike, booting the
kit of ``--flavour``) and a temporary folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import kits
from tests import labs
from tests.labs import READY, write_lab

__all__ = ["READY", "lookalike_bundle", "workdir", "write_lab"]


def lookalike_bundle(work: Path, flavour: str) -> Path:
    """alpine-minivm's look-alike (busybox userland) as a bundle under ``work``, booting the
    kit of ``flavour``."""
    return labs.lookalike_bundle(work, kits.kit(flavour))


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mvbench-", dir="/tmp"))

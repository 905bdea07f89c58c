"""minivm as an installed package: the wheel carries everything it needs at run time.

The wheel is built from this checkout, installed into a fresh virtual environment, and run from
an empty folder (so nothing of the checkout is in reach): `minivm kernel build` and `minivm
build` of a context must work, write their outputs to ./build of that folder and share the
kernel kit through the cache folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.imagefactory import alpine_lookalike
from tests.marks import fixture

REPO = Path(__file__).resolve().parent.parent



@fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir",
                    "--wheel-dir", str(out), str(REPO)], check=True, timeout=600)
    (found,) = out.glob("minivm-*.whl")
    return found


def test_wheel_carries_the_resources(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("minivm/resources/kernel/kit.toml", "minivm/resources/kernel/init",
                   "minivm/resources/init/Dockerfile", "minivm/resources/init/src/init.c",
                   "minivm/resources/init/.dockerignore",
                   "minivm/resources/appliances/appliance.gns3a.j2",
                   "minivm/resources/appliances/defaults.yaml",
                   "minivm/resources/images/debian-minivm/Dockerfile",
                   "minivm/resources/images/alpine-minivm/etc/acpi/PWRF/00000080"):
        assert needed in names, needed


def test_installed_wheel_builds_from_an_empty_folder(wheel: Path, tmp_path: Path,
                                                     kernel_kit) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=600)
    work = tmp_path / "empty"
    work.mkdir()
    context = alpine_lookalike(tmp_path / "ctx")
    env = {k: v for k, v in os.environ.items() if k not in ("MINIVM_HOME", "MINIVM_BUILD_DIR")}
    env["PYTHONPATH"] = ""

    def minivm(*args: str) -> dict:
        proc = subprocess.run([str(venv / "bin" / "minivm"), *args, "--json"], cwd=work,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    kit = minivm("kernel", "build")
    # The kit the tests built is the one the installed tool finds: one cache for every project.
    assert kit["cached"] and Path(kit["folder"]) == kernel_kit.folder
    built = minivm("build", str(context))
    root = Path(built["outputs"]["root"]["path"])
    assert root.is_file() and root.is_relative_to(work / "build")
    assert built["appliance"] and Path(built["appliance"]["gns3a"]).is_file()
    assert not (REPO / "minivm" / "resources").exists()  # nothing was written in the checkout

"""linux/arm64 images from the engine, for real: a Dockerfile built for arm64 on this host (its
RUN steps through binfmt emulation, FROM the base's arm64 copy), the aarch64 init injected,
and an image of the wrong architecture refused in one line naming both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from minivm.image import build, engine
from minivm.platforms import ARM64
from minivm.ui import QUIET
from tests.initvm import write_context

pytestmark = [pytest.mark.engine]

MINIVM = str(Path(sys.executable).with_name("minivm"))
ELF_AARCH64 = 183  # e_machine


def read_file(qcow2: Path, path: str, tmp: Path) -> bytes:
    """A file of the ext4 inside a QCOW2, read with debugfs (nothing mounted)."""
    raw = tmp / "root.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
    try:
        return subprocess.run(["debugfs", "-R", f"cat {path}", str(raw)], capture_output=True,
                              check=True).stdout
    finally:
        raw.unlink()


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF", data[:16]
    return int.from_bytes(data[18:20], "little")


@pytest.fixture(scope="module")
def arm64_build(tmp_path_factory: pytest.TempPathFactory, docker_api) -> build.BuildResult:
    out = tmp_path_factory.mktemp("arm64img")
    context = write_context(out / "app", {"Dockerfile": """\
        FROM debian:bookworm-slim
        RUN uname -m > /etc/built-on
        CMD ["cat", "/etc/built-on"]
        """})
    result = build.build(str(context), reporter=QUIET, output_dir=out / "build", platform=ARM64)
    yield result
    engine.remove_image(docker_api, "minivm/app-arm64:latest")


def test_dockerfile_built_for_arm64_with_the_aarch64_init(arm64_build: build.BuildResult,
                                                          docker_api, tmp_path: Path) -> None:
    result = arm64_build
    assert result.name == "app-arm64" and result.folder.name == "app-arm64"
    assert result.record.platform == "linux/arm64"
    assert engine.image_platform(docker_api, result.image_id) == "linux/arm64"
    assert read_file(result.qcow2, "/etc/built-on", tmp_path) == b"aarch64\n"  # RUN via binfmt
    assert elf_machine(read_file(result.qcow2, "/.minivm/init", tmp_path)) == ELF_AARCH64
    assert elf_machine(read_file(result.qcow2, "/.minivm/bin/busybox", tmp_path)) == ELF_AARCH64
    again = build.build(str(result.folder.parent.parent / "app"), reporter=QUIET,
                        output_dir=result.folder.parent, platform=ARM64)
    assert again.cached and again.qcow2 == result.qcow2


def test_wrong_architecture_image_is_refused_naming_both(arm64_build: build.BuildResult,
                                                         tmp_path: Path) -> None:
    done = subprocess.run([MINIVM, "build", "minivm/app-arm64:latest", "--platform",
                           "linux/amd64", "-o", str(tmp_path / "out")], capture_output=True,
                          text=True)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(errors) == 1, done.stderr
    assert "for linux/amd64: the engine has it for linux/arm64 only" in errors[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()

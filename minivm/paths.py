"""Where minivm finds its sources (images/, kernel/, init/, appliances/) and writes its outputs."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_LABEL = "minivm-root"
MODULES_LABEL = "minivm-modules"


def project_root() -> Path:
    """The folder holding images/, kernel/, init/ and appliances/ ($MINIVM_HOME overrides)."""
    if env := os.environ.get("MINIVM_HOME"):
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def build_dir() -> Path:
    """Where outputs go: $MINIVM_BUILD_DIR, else build/ in the project."""
    if env := os.environ.get("MINIVM_BUILD_DIR"):
        return Path(env).resolve()
    return project_root() / "build"


def images_dir() -> Path:
    return project_root() / "images"


def kernel_dir() -> Path:
    return project_root() / "kernel"


def init_dir() -> Path:
    return project_root() / "init"


def appliances_dir() -> Path:
    return project_root() / "appliances"

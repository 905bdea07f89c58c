"""Where minivm finds what it ships and where it writes.

- Resources (``kernel/``, ``init/``, ``appliances/``, ``images/``): inside the installed package
  (``minivm/resources/``, found with importlib.resources), or beside the package in a source
  checkout. ``$MINIVM_HOME`` names another folder holding them (to try a changed recipe).
- Outputs of a build: ``./build`` in the current directory (``$MINIVM_BUILD_DIR`` or a
  command's ``--output`` instead): they belong to the project the user works in.
- What every project shares, the kernel kits and the built init: the user's cache folder,
  ``$MINIVM_CACHE_DIR``, else ``$XDG_CACHE_HOME/minivm``, else ``~/.cache/minivm``.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_LABEL = "minivm-root"
MODULES_LABEL = "minivm-modules"
RESOURCES = ("kernel", "init", "appliances", "images")


def resources_root() -> Path:
    """The folder holding kernel/, init/, appliances/ and images/."""
    if env := os.environ.get("MINIVM_HOME"):
        return Path(env).resolve()
    from importlib.resources import files

    packaged = Path(str(files("minivm"))) / "resources"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent  # a source checkout


def build_dir() -> Path:
    """Where outputs go: $MINIVM_BUILD_DIR, else build/ in the current directory."""
    if env := os.environ.get("MINIVM_BUILD_DIR"):
        return Path(env).resolve()
    return Path.cwd() / "build"


def cache_dir() -> Path:
    """What every project shares (kernel kits, the init): the user's cache folder."""
    if env := os.environ.get("MINIVM_CACHE_DIR"):
        return Path(env).resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "minivm"


def images_dir() -> Path:
    return resources_root() / "images"


def kernel_dir() -> Path:
    return resources_root() / "kernel"


def init_dir() -> Path:
    return resources_root() / "init"


def appliances_dir() -> Path:
    return resources_root() / "appliances"

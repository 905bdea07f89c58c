"""The kernel kit a benchmark boots, named by ``--flavour`` (default: kit.toml's), so that a
figure measured with one flavour can be measured again after the default changed."""

from __future__ import annotations

import argparse

from minivm.kit import kernel
from minivm.paths import kernel_dir
from minivm.ui import QUIET


def add_flavour(parser: argparse.ArgumentParser) -> None:
    """``--flavour NAME``: one of kit.toml's flavours."""
    names, default = kernel.flavours(kernel_dir())
    parser.add_argument("--flavour", choices=names, default=default,
                        help=f"the kernel kit's flavour (default: {default})")


def kit(flavour: str) -> kernel.Kit:
    """The flavour's kit, built first when the cache lacks it; ``current`` is left alone."""
    return kernel.build(reporter=QUIET, flavour=flavour, make_current=False)

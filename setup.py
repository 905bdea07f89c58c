"""Ships kernel/, init/, appliances/ and images/ inside the package, as minivm/resources/.

They stay at the top of the source tree (where people look for them); a build copies them
into the wheel so that an installed minivm finds them with importlib.resources.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = ("kernel", "init", "appliances", "images")
IGNORED = shutil.ignore_patterns("__pycache__")  # as the cache keys (fsutil.sha256_tree)


class BuildPyWithResources(build_py):
    """build_py, plus the resource folders copied under minivm/resources/."""

    def run(self) -> None:
        super().run()
        here = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "minivm" / "resources"
        for name in RESOURCES:
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(here / name, target / name, symlinks=True, ignore=IGNORED)


setup(cmdclass={"build_py": BuildPyWithResources})

"""A separate venv holding GNS3's own validators (gns3-server 3.0.6 model, gns3-gui 3.0.6 schema).

gns3-server pins its own pydantic, jinja2 and fastapi, so it never enters minivm's venv: the
tests run ``tests/gns3_validate.py`` with this venv's python, as a subprocess.

    .venv/bin/python tests/gns3_env.py      # make it (idempotent; what .ci/run calls)

Location: $MINIVM_GNS3_VENV, else .venv-gns3/ in the project (git-ignored).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER = "gns3-server==3.0.6"
GUI = "gns3-gui==3.0.6"
EXTRA = ("email-validator", "jsonschema")
VALIDATOR = Path(__file__).resolve().parent / "gns3_validate.py"


def venv_dir() -> Path:
    return Path(os.environ.get("MINIVM_GNS3_VENV") or REPO / ".venv-gns3")


def python() -> Path:
    return venv_dir() / "bin" / "python"


def ensure() -> Path:
    """Make the venv once (a marker written last tells a whole one from a half-made one)."""
    folder = venv_dir()
    marker = folder / ".minivm-ready"
    wanted = f"{SERVER} {GUI} {' '.join(EXTRA)}\n"
    if marker.is_file() and marker.read_text() == wanted and python().is_file():
        return python()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    pip = [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, SERVER, *EXTRA], check=True)
    # The GUI only for its schema file: without PyQt and the rest of its dependencies.
    subprocess.run([*pip, "--no-deps", GUI], check=True)
    marker.write_text(wanted)
    return python()


def validate(files: list[Path]) -> dict[str, dict[str, str | None]]:
    """{file: {"server": error or None, "gui": ..., "strict": ...}} from GNS3's own code."""
    proc = subprocess.run([str(ensure()), str(VALIDATOR), *map(str, files)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gns3_validate.py failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


if __name__ == "__main__":
    print(ensure())

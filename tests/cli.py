"""The real ``minivm`` program, run as a user runs it (the venv's console script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MINIVM = [str(Path(sys.executable).with_name("minivm"))]


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``minivm ARGS...`` from the repository root, with this test's environment; its output
    as text."""
    return subprocess.run([*MINIVM, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, check=False)

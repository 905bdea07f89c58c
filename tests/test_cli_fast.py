"""`lab exec`'s quick path reads its arguments as the typer app does, or leaves them to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from minivm.cli import fast
from minivm.lab.spec import state_dir_of


def test_plain_forms_are_read_like_the_full_cli() -> None:
    got = fast._parse(["-u", "root", "--workdir=/tmp", "-e", "A=b=c", "--env", "B=", "-i",
                       "--timeout", "3", "lab.yaml", "r1", "--", "sh", "-c", "exit 3"])
    assert got == fast.ExecArgs(Path("lab.yaml"), "r1", ["sh", "-c", "exit 3"],
                                {"A": "b=c", "B": ""}, "root", "/tmp", 3.0, True)
    assert fast._parse(["lab.yaml", "r1", "--", "--", "-x"]).command == ["--", "-x"]


def test_anything_else_is_left_to_the_full_cli() -> None:
    for args in (["lab.yaml", "r1", "true"], ["--help"], ["lab.yaml", "r1", "--"],
                 ["-e", "NOEQUALS", "lab.yaml", "r1", "--", "true"],
                 ["-e", "=v", "lab.yaml", "r1", "--", "true"],
                 ["--timeout", "soon", "lab.yaml", "r1", "--", "true"],
                 ["-uroot", "lab.yaml", "r1", "--", "true"], ["-u"], ["lab.yaml", "--", "x"],
                 ["--debug", "lab.yaml", "r1", "--", "true"]):
        assert fast._parse(args) is None, args
    assert fast.main(["lab", "status", "lab.yaml"]) is None


def test_a_node_that_is_not_running_goes_to_the_full_cli(tmp_path: Path) -> None:
    lab = tmp_path / "my.lab.yaml"
    state = state_dir_of(lab)
    assert fast._control_socket(lab, "r1") is None  # no state at all
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"lab": str(lab), "nodes": {"r1": {
        "pid": os.getpid(), "qmp": str(state / "r1" / "qmp.sock"),
        "control": str(state / "r1" / "control.sock")}}}))
    assert fast._control_socket(lab, "r1") is None  # that pid is not its QEMU
    (state / "state.json").write_text("{not json")
    assert fast._control_socket(lab, "r1") is None


def test_the_quick_path_loads_neither_typer_nor_the_qmp_client(tmp_path: Path) -> None:
    probe = ("import sys; from minivm.cli import fast; fast.main(['lab', 'exec', 'x.yaml', "
             "'r1', '--', 'true']); print(sorted(m for m in ('typer', 'rich', 'yaml', "
             "'pydantic', 'docker', 'qemu.qmp', 'asyncio', 'minivm.lab') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

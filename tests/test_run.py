"""minivm.run.spawn: a child that cannot outlive its ``with`` block."""

from __future__ import annotations

import subprocess

import pytest

from minivm.errors import MinivmError
from minivm.run import spawn
from minivm.vm import vmctl


def test_a_child_is_waited_for_and_its_exit_code_kept() -> None:
    with spawn(["sh", "-c", "exit 3"]) as proc:
        pass
    assert proc.returncode == 3


def test_an_error_in_the_block_kills_the_child() -> None:
    with pytest.raises(KeyError), spawn(["sleep", "600"]) as proc:
        assert vmctl.alive(proc.pid)
        raise KeyError("boom")
    assert proc.returncode == -9
    assert not vmctl.alive(proc.pid)


def test_a_child_reading_stdin_sees_it_closed_at_the_end() -> None:
    with spawn(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        proc.stdin.write(b"x")
    assert proc.returncode == 0


def test_a_missing_program_is_one_clear_error() -> None:
    with pytest.raises(MinivmError, match="is not installed"), spawn(["no-such-program-x"]):
        pass

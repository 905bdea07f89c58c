"""minivm.run.spawn: a child that cannot outlive its ``with`` block."""

from __future__ import annotations

import signal
import subprocess
import sys

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


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM])
def test_a_child_does_not_outlive_minivm_killed(signal_number: int) -> None:
    """minivm killed outright (SIGKILL) or by a closed terminal (SIGHUP) or SIGTERM, in a
    new session as a VM is: its child goes too, instead of running on unowned."""
    code = ("import time\nfrom minivm.run import spawn\n"
            "with spawn(['sleep', '600'], new_session=True) as p:\n"
            "    print(p.pid, flush=True)\n    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert vmctl.alive(child)
    parent.send_signal(signal_number)
    parent.wait(timeout=30)
    assert vmctl.wait_exit(child, 10), f"pid {child} still runs after its parent died"

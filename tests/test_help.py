"""Every command's --help, as a user reads it: no type shown for a flag, a docstring's
paragraphs rewrapped to the terminal (its own line breaks gone), brackets shown as text."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.cli import MINIVM, REPO

COMMANDS = [[], ["build"], ["appliance"], ["run"], ["kernel"], ["kernel", "build"], ["lab"],
            ["lab", "up"], ["lab", "status"], ["lab", "console"], ["lab", "exec"], ["lab", "cp"],
            ["lab", "down"], ["lab", "export"], ["gns3"], ["gns3", "push"]]


def help_text(command: list[str]) -> str:
    proc = subprocess.run([*MINIVM, *command, "--help"], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "COLUMNS": "400"}, timeout=60)
    assert proc.returncode == 0 and not proc.stderr, (command, proc.stderr[-2000:])
    return proc.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "minivm")
def test_help_shows_no_type_for_a_flag(command: list[str]) -> None:
    text = help_text(command)
    assert "--help " in text and "Show this message and exit." in text
    assert "<bool>" not in text


def test_paragraphs_are_rewrapped_and_brackets_are_text() -> None:
    lines = help_text(["lab", "up"]).splitlines()
    # the lab file paragraph is five lines in the docstring: one line at 400 columns
    (lab_file,) = [line for line in lines if "Lab file:" in line]
    assert lab_file.rstrip().endswith("State goes to LAB.state/ beside it.")
    run = help_text(["run"])
    assert "HOST_PORT:GUEST_PORT[/tcp|/udp]" in run  # was read as rich markup: a traceback
    (channel,) = [line for line in run.splitlines() if "Its adapters are not connected" in line]
    assert "listens on DISK_DIR/control.sock." in channel

"""Every command's --help, as a user reads it: no type shown for a flag, a docstring's
paragraphs rewrapped to the terminal (its own line breaks gone), brackets shown as text."""

from __future__ import annotations

import sys

import pytest

from minivm.cli.main import main

COMMANDS = [[], ["build"], ["appliance"], ["run"], ["kernel"], ["kernel", "build"], ["lab"],
            ["lab", "up"], ["lab", "status"], ["lab", "console"], ["lab", "exec"], ["lab", "cp"],
            ["lab", "down"], ["lab", "export"], ["gns3"], ["gns3", "push"]]


@pytest.fixture
def help_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``minivm COMMAND --help`` through the console script's entry point, 1000 columns wide."""
    monkeypatch.setenv("COLUMNS", "1000")

    def run(command: list[str]) -> str:
        monkeypatch.setattr(sys, "argv", ["minivm", *command, "--help"])
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsys.readouterr()
        assert exited.value.code == 0 and not err, (command, err[-2000:])
        return out
    return run


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "minivm")
def test_help_shows_no_type_for_a_flag(help_text, command: list[str]) -> None:
    text = help_text(command)
    assert "--help " in text and "Show this message and exit." in text
    assert "<bool>" not in text


def test_paragraphs_are_rewrapped_and_brackets_are_text(help_text) -> None:
    lines = help_text(["lab", "up"]).splitlines()
    # the lab file paragraph is many lines in the docstring: one line at 1000 columns
    (lab_file,) = [line for line in lines if "Lab file:" in line]
    assert "State goes to LAB.state/ beside it" in lab_file
    run = help_text(["run"])
    assert "HOST_PORT:GUEST_PORT[/tcp|/udp]" in run  # was read as rich markup: a traceback
    (channel,) = [line for line in run.splitlines() if "Its adapters are not connected" in line]
    assert "listens on DISK_DIR/control.sock." in channel


def test_an_example_stands_on_its_own_line(help_text) -> None:
    lines = [line.strip(" │") for line in help_text(["lab", "exec"]).splitlines()]
    assert "Example: minivm lab exec lab.yaml r1 -- sh -c 'ip addr'" in lines
    assert any(line.endswith("serves a virtio-serial port.") for line in lines)

"""Lab files and state folders: whole-name node patterns, keys given twice, node folders apart
from the state's own files (and the older layout moved once), consoles on private sockets by
default. No VM is booted here (tests/test_lab.py boots them)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minivm import lab, yamlfile
from minivm.errors import MinivmError
from minivm.image.config import ImageConfig
from minivm.image.rootfs import run_config
from minivm.kinds import ConsoleKind
from minivm.lab import state as lab_state
from tests.fakeproject import make_appliance

REPO = Path(__file__).resolve().parent.parent
MINIVM = [str(Path(sys.executable).with_name("minivm"))]


def write_lab(folder: Path, text: str) -> Path:
    if not (folder / "app" / "t.gns3a").exists():
        make_appliance(folder / "app", adapters=2)
    path = folder / "lab.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["r1\n", "r1\n ", "-r1", ".hidden", "..", "a/b", "r 1",
                                  "x" * 64, "", "r1:eth0", "é"])
def test_node_names_are_matched_whole(tmp_path: Path, name: str) -> None:
    text = json.dumps({"nodes": {name: {"appliance": "app/t.gns3a"}}})
    with pytest.raises(MinivmError, match=r"node name .* is not valid"):
        lab.load(write_lab(tmp_path, text))


@pytest.mark.parametrize("name", ["state.json", "lock", "nodes", "r1", "R-1.a_b", "x" * 63])
def test_names_of_state_files_are_plain_node_names(tmp_path: Path, name: str) -> None:
    text = json.dumps({"nodes": {name: {"appliance": "app/t.gns3a"}}})
    lab_ = lab.load(write_lab(tmp_path, text))
    assert lab.node_dir(lab_, name) == tmp_path / "lab.state" / "nodes" / name


@pytest.mark.parametrize(("text", "key", "lines"), [
    ("nodes:\n  r1: {appliance: app/t.gns3a}\n  r2: {appliance: app/t.gns3a}\n"
     "  r1: {appliance: app/t.gns3a, ram: 64}\n", "'r1'", "lines 2 and 4"),
    ("nodes:\n  r1:\n    appliance: app/t.gns3a\n    ram: 64\n    ram: 128\n", "'ram'",
     "lines 4 and 5"),
    ("accel: tcg\nnodes: {r1: {appliance: app/t.gns3a}}\naccel: kvm\n", "'accel'",
     "lines 1 and 3"),
    ("nodes: {r1: {appliance: app/t.gns3a}, r1: {appliance: app/t.gns3a}}\n", "'r1'",
     "lines 1 and 1"),
])
def test_a_key_given_twice_names_both_lines(tmp_path: Path, text: str, key: str,
                                            lines: str) -> None:
    with pytest.raises(MinivmError) as info:
        lab.load(write_lab(tmp_path, text))
    assert f"key {key} is given twice ({lines})" in str(info.value)


def test_a_name_given_as_number_and_string_is_one_node_twice(tmp_path: Path) -> None:
    with pytest.raises(MinivmError, match="node 1 is given twice"):
        lab.load(write_lab(tmp_path, "nodes:\n  1: {appliance: app/t.gns3a}\n"
                                     "  '1': {appliance: app/t.gns3a}\n"))


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = "base: &b {ram: 64, cpus: 1}\nr1:\n  <<: *b\n  ram: 128\n"
    assert yamlfile.load(text, where="x")["r1"] == {"ram": 128, "cpus": 1}


def test_appliance_metadata_refuses_keys_given_twice(tmp_path: Path) -> None:
    from minivm.gns3 import metadata

    path = tmp_path / "r1.yaml"
    path.write_text("ram: 128\ndescription: x\nram: 4096\n")
    with pytest.raises(MinivmError, match=r"key 'ram' is given twice \(lines 1 and 3\)"):
        metadata.load_metadata(path)


# --- the state folder's layout -------------------------------------------------------------------

def old_layout(folder: Path, names: list[str]) -> Path:
    """A state folder as the older layout left it (node folders beside state.json)."""
    state_dir = folder / "lab.state"
    for name in names:
        (state_dir / name).mkdir(parents=True)
        (state_dir / name / "hda_disk.qcow2").write_bytes(b"disk of " + name.encode())
        (state_dir / name / "console.log").write_text("log\n")
    (state_dir / "state.json").write_text(json.dumps({"lab": "x", "nodes": {}, "ports": {}}))
    return state_dir


def test_the_older_layout_is_moved_once(tmp_path: Path) -> None:
    state_dir = old_layout(tmp_path, ["r1", "r2"])
    (state_dir / "stray").mkdir()  # not a node folder: left alone
    assert lab_state.migrate(state_dir, lab_state.read_state(state_dir)) == ["r1", "r2"]
    assert (state_dir / "nodes" / "r1" / "hda_disk.qcow2").read_bytes() == b"disk of r1"
    assert not (state_dir / "r1").exists() and (state_dir / "stray").is_dir()
    assert lab_state.migrate(state_dir, lab_state.read_state(state_dir)) == []


def test_the_older_layout_is_not_moved_under_a_running_node(tmp_path: Path) -> None:
    state_dir = old_layout(tmp_path, ["r1"])
    qmp = state_dir / "r1" / "qmp.sock"  # a running node's command line names its QMP socket
    sleeper = subprocess.Popen(["sh", "-c", "sleep 60", str(qmp)])
    cmdline = Path(f"/proc/{sleeper.pid}/cmdline")
    while str(qmp).encode() not in cmdline.read_bytes():  # until the fork has become sh
        time.sleep(0.01)
    try:
        record = lab_state.NodeRecord(pid=sleeper.pid, qmp=qmp, console="unix:x",
                                      monitor=qmp, accel="tcg", started=0, node_id="n",
                                      argv=())
        state = lab_state.State(lab="x", nodes={"r1": record})
        with pytest.raises(MinivmError, match="older layout and r1 still run"):
            lab_state.migrate(state_dir, state)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (state_dir / "r1" / "hda_disk.qcow2").exists()


def test_lab_down_moves_an_older_layout(tmp_path: Path) -> None:
    path = write_lab(tmp_path, "nodes: {r1: {appliance: app/t.gns3a}}\n")
    old_layout(tmp_path, ["r1"])
    done = subprocess.run([*MINIVM, "lab", "down", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "lab.state" / "nodes" / "r1" / "hda_disk.qcow2").is_file()
    assert stat.S_IMODE((tmp_path / "lab.state").stat().st_mode) == 0o700


# --- consoles -----------------------------------------------------------------------------------

def test_consoles_default_to_a_unix_socket_and_telnet_is_asked_for(tmp_path: Path) -> None:
    lab_ = lab.load(write_lab(tmp_path, "nodes:\n  r1: {appliance: app/t.gns3a}\n"
                                        "  r2: {appliance: app/t.gns3a, console: telnet}\n"))
    assert lab_.nodes["r1"].console == ConsoleKind.UNIX
    assert lab_.nodes["r2"].console == ConsoleKind.TELNET
    lab_ = lab.load(write_lab(tmp_path, "console: telnet\nnodes:\n"
                                        "  r1: {appliance: app/t.gns3a}\n"
                                        "  r2: {appliance: app/t.gns3a, console: unix}\n"))
    assert lab_.nodes["r1"].console == ConsoleKind.TELNET
    assert lab_.nodes["r2"].console == ConsoleKind.UNIX
    with pytest.raises(MinivmError, match="console 'vnc' is neither unix nor telnet"):
        lab.load(write_lab(tmp_path, "nodes: {r1: {appliance: app/t.gns3a, console: vnc}}\n"))


# --- image configs the init cannot carry --------------------------------------------------------

@pytest.mark.parametrize(("config", "field"), [
    ({"Env": ["A=1", "B=\x00x"]}, "Env[1]"), ({"User": "nobody\x00"}, "User"),
    ({"Entrypoint": ["/bin/sh", "\x00"]}, "Entrypoint[1]"), ({"WorkingDir": "/\x00"},
                                                              "WorkingDir"),
])
def test_a_nul_in_the_image_config_is_refused_naming_the_field(config: dict, field: str) -> None:
    image = ImageConfig.from_docker("sha256:" + "ab" * 32, config)
    with pytest.raises(MinivmError, match=re.escape(f"config field {field} holds a NUL")):
        run_config(image, name="img")


def test_newlines_and_backslashes_are_carried() -> None:
    image = ImageConfig.from_docker("sha256:" + "ab" * 32,
                                    {"Env": ["A=1\nuser root", "B=\\n"], "User": "nobody"})
    text = run_config(image, name="img")
    assert text.splitlines() == ["name img", "env A=1\\nuser root", "env B=\\\\n", "user nobody"]


def test_socket_folders_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "lab.state" / "nodes" / "r1"
    previous = os.umask(0o022)
    try:
        lab_state.private_dir(folder)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

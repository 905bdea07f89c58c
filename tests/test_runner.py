"""The lab runner protocol's records: the JSON `lab up`, `status` and `down --json` print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minivm.errors import MinivmError
from minivm.lab.gns3 import Gns3Node, Gns3Project, Gns3Runner
from minivm.lab.local import LocalRunner
from minivm.lab.runner import DownResult, LabStatus, Made, NodeState, Runner, UpResult
from minivm.lab.state import NodeRecord, State


def test_local_and_gns3_node_states_keep_their_json_shapes() -> None:
    stopped = NodeState("stopped", ports={"eth0": None})
    running = NodeState("running", console="telnet:127.0.0.1:5000", pid=42, accel="tcg",
                        log="/l/r1/console.log", guest="running",
                        publish=("127.0.0.1:8080->80/tcp",), ports={"eth0": 40000})
    remote = NodeState("started", node_id="n1", compute_id="local", console=None)
    assert stopped.to_json() == {"status": "stopped", "ports": {"eth0": None}}
    assert running.to_json() == {
        "status": "running", "pid": 42, "console": "telnet:127.0.0.1:5000", "accel": "tcg",
        "log": "/l/r1/console.log", "guest": "running", "ports": {"eth0": 40000},
        "publish": {"nic": "publish0", "ports": ["127.0.0.1:8080->80/tcp"]}}
    assert remote.to_json() == {"status": "started", "node_id": "n1", "compute_id": "local",
                                "console": None}
    status = LabStatus(lab=Path("/l/lab.yaml"), state=Path("/l/lab.state"),
                       nodes={"r1": running, "r2": NodeState("crashed", pid=7, console="c")},
                       links=("r1:eth0 -- r2:eth0",))
    assert status.crashed == ["r2"]
    up = UpResult(status, ("r1",), {"r1": 1.5}, Made(True, ("r1",), ()))
    data = json.loads(json.dumps(up.to_json()))
    assert data["started"] == ["r1"] and data["state"] == "/l/lab.state"
    assert data["created_project"] is True and data["appliances"] == {}
    down = DownResult(Path("/l/lab.yaml"), {"r1": "acpi"}, removed=True)
    assert down.to_json() == {"lab": "/l/lab.yaml", "stopped": {"r1": "acpi"}, "deleted": True}


def test_both_runners_have_the_protocol_s_methods() -> None:
    for runner in (LocalRunner, Gns3Runner):
        for name in ("up", "status", "down", "exec", "cp", "export"):
            assert callable(getattr(runner, name)), (runner, name)
    local: Runner = LocalRunner()
    assert local.remove_option == "--clean" and Gns3Runner.remove_option == "--delete"


def test_node_record_round_trips_and_a_foreign_state_is_refused() -> None:
    rec = NodeRecord(pid=9, qmp=Path("/s/q"), console="unix:/s/c", monitor=Path("/s/m"),
                     accel="tcg", started=1.0, node_id="u", argv=("qemu", "-S"),
                     control=Path("/s/k"), publish=(), macs=("0e:00:00:00:00:00",))
    state = State(lab="/l", digest="d", ports={"r1:eth0": 4}, nodes={"r1": rec})
    assert State.from_json(json.loads(json.dumps(state.to_json()))) == state
    with pytest.raises((KeyError, TypeError, ValueError, AttributeError)):
        State.from_json({"lab": "/l", "nodes": {"r1": {"pid": "x"}}})


def test_server_answers_that_are_not_nodes_or_projects_are_one_line_errors() -> None:
    for bad in ({}, {"node_id": "n", "console": "telnet"}, ["x"]):
        with pytest.raises(MinivmError, match="not one"):
            Gns3Node.from_json(bad)  # type: ignore[arg-type]
    with pytest.raises(MinivmError, match="not one"):
        Gns3Project.from_json({"name": "p"})
    node = Gns3Node.from_json({"node_id": 3, "name": "r1", "console": 5000})
    assert (node.node_id, node.console, node.properties) == ("3", 5000, {})

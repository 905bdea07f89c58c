"""``minivm lab graph``: the lab drawn by Graphviz (a real ``dot`` run, no VM)."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import pytest

from minivm import lab
from minivm.errors import MinivmError
from minivm.lab import graph
from tests.fakeproject import fake_lab

LAB = """\
nodes:
  r1: {appliance: app/t.gns3a}
  r2: {appliance: app/t.gns3a}
  h3: {appliance: app/t.gns3a}
links:
  - r1:eth1 -- r2:eth1
  - h3:eth1 -- udp:127.0.0.1:40001:40000
networks:
  lan: {subnet: 10.77.0.0/24, members: [r1:eth0, r2:eth0, h3:eth0]}
"""


def test_svg_names_every_node_link_network_and_address(tmp_path: Path) -> None:
    lab_ = lab.load(fake_lab(tmp_path, LAB))
    out = graph.draw(lab_, tmp_path / "lab.svg", {"r1": "running", "r2": "stopped"})
    svg = html.unescape(out.read_text())
    assert svg.startswith("<?xml") and "</svg>" in svg
    for text in ("r1", "r2", "h3", "lan", "10.77.0.0/24", "10.77.0.3/24", "running",
                 "stopped", "r1:eth1 -- r2:eth1", "h3:eth1 -- udp:127.0.0.1:40001:40000",
                 "udp:127.0.0.1:40001:40000", "r2:eth0 on lan"):
        assert text in svg, text
    assert not list(tmp_path.glob(".lab.svg.tmp*"))


def test_png_and_dot_and_a_bad_suffix(tmp_path: Path) -> None:
    lab_ = lab.load(fake_lab(tmp_path, LAB))
    png = graph.draw(lab_, tmp_path / "lab.png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    text = graph.draw(lab_, tmp_path / "lab.dot").read_text()
    assert text.startswith('graph "lab" {') and '"node:r1" -- "net:lan"' in text
    with pytest.raises(MinivmError, match=r"unknown picture format \.jpg"):
        graph.draw(lab_, tmp_path / "lab.jpg")


def test_hostile_names_stay_inside_their_quotes(tmp_path: Path) -> None:
    text = graph.dot(lab.load(fake_lab(tmp_path, LAB)), {"r1": 'x"] ; evil [label="'})
    assert '\\"] ; evil [label=\\"' in text


def test_cli_graph_of_a_lab_not_running(tmp_path: Path) -> None:
    path = fake_lab(tmp_path, LAB)
    done = subprocess.run([str(Path(sys.executable).with_name("minivm")), "lab", "graph",
                           str(path), "-o", str(tmp_path / "g.svg")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "stopped" in (tmp_path / "g.svg").read_text()

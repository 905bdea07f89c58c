"""A picture of a lab: nodes, links, networks, addresses and, when it runs, each node's state.

The lab becomes a Graphviz graph (DOT text, :func:`dot`); Graphviz's ``dot`` program lays it
out and draws it (:func:`draw`: SVG or PNG, chosen by the output's suffix; ``.dot`` writes the
text itself). Nodes are boxes, networks ellipses with their subnet, outside ``udp:`` ends
plain text; every edge names its interfaces and addresses, and carries the link's text as its
tooltip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from minivm.errors import MinivmError
from minivm.fsutil import atomic_path
from minivm.lab.networks import member_text
from minivm.lab.spec import External, Lab
from minivm.run import run

FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot"}
STATE_COLOURS = {"running": "#c8e6c9", "started": "#c8e6c9", "crashed": "#ffcdd2",
                 "stopped": "#eeeeee", "absent": "#ffffff"}


def _q(text: str) -> str:
    """A DOT string: quoted, with quotes and backslashes escaped and newlines as ``\\n``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _end_id(end: Any) -> str:
    return f"node:{end[0]}" if isinstance(end, tuple) else f"ext:{member_text(end)}"


def dot(lab: Lab, states: dict[str, str] | None = None) -> str:
    """The lab as DOT text; ``states`` (node -> running, stopped, ...) colours the nodes."""
    states = states or {}
    lines = [f"graph {_q(lab.path.stem)} {{",
             "  graph [rankdir=LR, ranksep=1.2, nodesep=0.5, fontname=Helvetica, fontsize=11, "
             f"label={_q(lab.path.name)}, labelloc=t];",
             "  node [fontname=Helvetica, fontsize=10];",
             "  edge [fontname=Helvetica, fontsize=9, color=\"#555555\"];"]
    for name, node in lab.nodes.items():
        state = states.get(name)
        label = f"{name}\n{node.appliance.name}" + (f"\n{state}" if state else "")
        colour = STATE_COLOURS.get(state or "", "#e3f2fd")
        lines.append(f"  {_q('node:' + name)} [label={_q(label)}, shape=box, "
                     f"style=\"rounded,filled\", fillcolor={_q(colour)}];")
    outside = {m for link in lab.links for m in (link.b,) if isinstance(m, External)}
    outside |= {m for net in lab.networks for m in net.members if isinstance(m, External)}
    for end in sorted(outside, key=member_text):
        lines.append(f"  {_q(_end_id(end))} [label={_q(member_text(end))}, shape=plaintext];")
    for net in lab.networks:
        label = net.name + (f"\n{net.subnet}" if net.subnet else "")
        lines.append(f"  {_q('net:' + net.name)} [label={_q(label)}, shape=ellipse, "
                     "style=filled, fillcolor=\"#fff3e0\"];")
        for member in net.members:
            address = net.addresses.get(member) if isinstance(member, tuple) else None
            port = f"eth{member[1]}" if isinstance(member, tuple) else ""
            tail = port + (f"\n{address}" if address else "")
            tip = f"{member_text(member)} on {net.name}"
            lines.append(f"  {_q(_end_id(member))} -- {_q('net:' + net.name)} "
                         f"[taillabel={_q(tail)}, tooltip={_q(tip)}];")
    for link in lab.links:
        head = f"eth{link.b[1]}" if isinstance(link.b, tuple) else ""
        lines.append(f"  {_q(_end_id(link.a))} -- {_q(_end_id(link.b))} "
                     f"[taillabel={_q(f'eth{link.a[1]}')}, headlabel={_q(head)}, "
                     f"tooltip={_q(link.text)}];")
    return "\n".join(lines + ["}", ""])


def draw(lab: Lab, output: Path, states: dict[str, str] | None = None) -> Path:
    """Write the picture to ``output`` (its suffix picks SVG, PNG or DOT), whole or not at
    all."""
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise MinivmError(f"{output}: unknown picture format {output.suffix or '(none)'}",
                          hint="name the output .svg, .png or .dot")
    text = dot(lab, states)
    with atomic_path(output) as tmp:
        if fmt == "dot":
            tmp.write_text(text)
        else:
            run(["dot", f"-T{fmt}", "-o", tmp], input=text.encode(),
                what=f"drawing {output.name} with Graphviz")
    return output

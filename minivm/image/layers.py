"""Apply image layers in order, honouring whiteouts, as one stream of entries.

Pass 1 reads every layer's headers and decides which entry of which layer survives at each
path (``.wh.NAME`` deletes NAME below, ``.wh..wh..opq`` empties a folder of what lower layers
put there, a non-folder replaces a whole lower subtree). Pass 2 reads the layers again and
yields only the survivors, so nothing is ever unpacked to disk.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from minivm.image.archive import Layer
from minivm.image.tarstream import Entry, SymlinkGuard, read_entries

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass
class _Plan:
    """Which (layer, name) survives; hard links whose target did not survive are promoted."""

    survivors: dict[str, int] = field(default_factory=dict)  # path -> layer index
    children: dict[str, set[str]] = field(default_factory=dict)  # folder -> child paths
    promote: dict[tuple[int, str], str] = field(default_factory=dict)  # (layer, target) -> path
    relink: dict[str, str] = field(default_factory=dict)  # link path -> new target


def flatten(layers: list[Layer]) -> Iterator[Entry]:
    """The merged filesystem of ``layers`` (bottom first) as tar entries."""
    plan = _plan(layers)
    for index, layer in enumerate(layers):
        with layer.open() as stream:
            for info, data in read_entries(stream, where=f"layer {layer.name}"):
                name = info.name
                if _is_whiteout(name):
                    continue
                promoted = plan.promote.get((index, name))
                if promoted is not None:
                    info.name = promoted
                    yield info, data
                    continue
                if plan.survivors.get(name) != index:
                    continue
                if info.islnk() and name in plan.relink:
                    info.linkname = plan.relink[name]
                    if info.linkname == name:
                        continue  # this path was already written as the promoted file
                yield info, data


def _is_whiteout(name: str) -> bool:
    return posixpath.basename(name).startswith(WHITEOUT)


def _plan(layers: list[Layer]) -> _Plan:
    plan = _Plan()
    links: dict[str, tuple[int, str]] = {}  # link path -> (layer, target) as written
    for index, layer in enumerate(layers):
        headers: list[tarfile.TarInfo] = []
        guard = SymlinkGuard(f"layer {layer.name}")
        with layer.open() as stream:
            for info, _ in read_entries(stream, where=f"layer {layer.name}"):
                guard.check(info)
                headers.append(info)
        for info in headers:  # whiteouts act on the lower layers only
            folder, base = posixpath.split(info.name)
            if base == OPAQUE:
                for child in list(plan.children.get(folder, ())):
                    _remove(plan, child)
            elif base.startswith(WHITEOUT):
                _remove(plan, posixpath.join(folder, base[len(WHITEOUT):]))
        for info in headers:
            if _is_whiteout(info.name) or not info.name:
                continue
            lower = plan.survivors.get(info.name)
            if lower is not None and not info.isdir():
                _remove(plan, info.name)
            plan.survivors[info.name] = index
            plan.children.setdefault(posixpath.dirname(info.name), set()).add(info.name)
            if info.islnk():
                links[info.name] = (index, info.linkname)
            else:
                links.pop(info.name, None)
    for path, (index, target) in sorted(links.items()):
        if plan.survivors.get(path) != index or plan.survivors.get(target) == index:
            continue
        # The link's target was deleted or replaced above it: the first surviving link
        # becomes the file, and the others point at that one.
        key = (index, target)
        if key not in plan.promote:
            plan.promote[key] = path
        plan.relink[path] = plan.promote[key]
    return plan


def _remove(plan: _Plan, path: str) -> None:
    """Forget ``path`` and everything below it."""
    if plan.survivors.pop(path, None) is None and path not in plan.children:
        return
    plan.children.get(posixpath.dirname(path), set()).discard(path)
    for child in list(plan.children.pop(path, ())):
        _remove(plan, child)

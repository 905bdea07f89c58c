"""Kernel module selection: the dependency closure of a few modules, from depmod's text files,
and the module index files (modules.dep, modules.alias, ...) for just that subset.

Works on a ``/lib/modules/<kver>`` folder as ``depmod`` left it; busybox ``modprobe`` reads
the text files this writes (``modules.dep``, ``modules.alias``, ``modules.builtin``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MODULE_SUFFIX = re.compile(r"\.ko(\.(xz|gz|zst))?$")


def module_name(path: str) -> str:
    """The name modprobe knows a module file by: ``kernel/x/virtio-blk.ko`` -> ``virtio_blk``."""
    return MODULE_SUFFIX.sub("", path.rsplit("/", 1)[-1]).replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """``modules.dep`` as {module path: [dependency paths, nearest first]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if sep and path.strip():
            deps[path.strip()] = rest.split()
    return deps


def parse_builtin(text: str) -> set[str]:
    """The names of the modules ``modules.builtin`` lists (built into the kernel)."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


@dataclass(frozen=True)
class Selection:
    """The modules to ship: file paths (relative to the modules folder) plus what was skipped."""

    paths: frozenset[str]
    builtin: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)


def closure(wanted: Iterable[str], deps: dict[str, list[str]],
            builtin: set[str] = frozenset()) -> Selection:  # type: ignore[assignment]
    """The modules named in ``wanted`` and everything they need, by modules.dep.

    A name built into the kernel needs no file; a name the kernel lacks entirely is reported
    in ``missing`` (the caller decides whether that is an error).
    """
    by_name = {module_name(path): path for path in deps}
    chosen: set[str] = set()
    skipped_builtin, missing = [], []
    for raw in wanted:
        name = raw.replace("-", "_")
        if name in by_name:
            todo = [by_name[name]]
            while todo:
                path = todo.pop()
                if path not in chosen:
                    chosen.add(path)
                    todo.extend(deps.get(path, []))
        elif name in builtin:
            skipped_builtin.append(name)
        else:
            missing.append(name)
    return Selection(paths=frozenset(chosen), builtin=tuple(skipped_builtin),
                     missing=tuple(missing),
                     names=frozenset(module_name(p) for p in chosen))


def subset_index(modules_dir: Path, selection: Selection) -> dict[str, bytes]:
    """The index files busybox modprobe reads, restricted to ``selection``.

    Lines keep depmod's order, so the same input always gives the same bytes.
    """
    def read(name: str) -> str:
        path = modules_dir / name
        return path.read_text() if path.exists() else ""

    deps = parse_modules_dep(read("modules.dep"))
    dep_lines = [f"{path}: {' '.join(deps[path])}".rstrip() if deps[path] else f"{path}:"
                 for path in deps if path in selection.paths]
    alias_lines = [line for line in read("modules.alias").splitlines()
                   if _alias_target(line) in selection.names]
    softdep_lines = [line for line in read("modules.softdep").splitlines()
                     if line.startswith("#") or _softdep_target(line) in selection.names]
    order_lines = [line for line in read("modules.order").splitlines()
                   if line.strip() in selection.paths]
    files = {
        "modules.dep": dep_lines,
        "modules.alias": alias_lines,
        "modules.softdep": softdep_lines,
        "modules.order": order_lines,
        "modules.builtin": read("modules.builtin").splitlines(),
    }
    return {name: ("\n".join(lines) + "\n").encode() if lines else b""
            for name, lines in files.items()}


def _alias_target(line: str) -> str | None:
    parts = line.split()
    return parts[2] if len(parts) == 3 and parts[0] == "alias" else None


def _softdep_target(line: str) -> str | None:
    parts = line.split()
    return parts[1] if len(parts) >= 2 and parts[0] == "softdep" else None


"""YAML files minivm reads (lab files, appliance metadata): safe, and strict about keys.

PyYAML keeps the last of two equal keys in a mapping silently (two ``r1:`` nodes: the first
is lost). :func:`load` refuses that, naming the key and both lines; any other YAML error is
one line with its position.
"""

from __future__ import annotations

from typing import Any

import yaml

from minivm.errors import MinivmError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (merge keys ``<<`` aside)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"key {key!r} is given twice (lines {first} and {second})")
        self.key, self.first, self.second = key, first, second


def load(text: str | bytes, *, where: str) -> Any:
    """The YAML document in ``text``; a MinivmError naming ``where`` (and the lines) if it is
    not valid YAML or gives a key twice."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except DuplicateKey as e:
        raise MinivmError(f"{where}: {e}", hint="each name may appear once; remove or rename "
                                               "one of them") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or e
        raise MinivmError(f"{where}{line}: not valid YAML ({' '.join(str(problem).split())})",
                          hint="fix the file") from None

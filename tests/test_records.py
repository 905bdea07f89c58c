"""Data that crosses module boundaries travels as typed records: no dataclass field is an
untyped JSON object (``dict[str, Any]``) but the server's own answer kept at the edge."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minivm"
# The GNS3 server's node properties, compared key by key with what minivm sends: its JSON.
ALLOWED = {"minivm/lab/gns3.py:Gns3Node.properties"}


def test_no_record_field_is_an_untyped_json_object() -> None:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            for item in cls.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) \
                        and "dict[str, Any]" in ast.unparse(item.annotation):
                    rel = path.relative_to(PACKAGE.parent).as_posix()
                    found.add(f"{rel}:{cls.name}.{item.target.id}")
    assert found == ALLOWED

"""Build records: what a previous build produced and from which inputs (the cache key)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from minivm import __version__
from minivm.fsutil import atomic_write_bytes

RECORD = "build.json"


def dump(obj: Any) -> str:
    """Compact, sorted JSON (for cache keys and stored configs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key(**inputs: Any) -> str:
    """A digest of everything an output depends on (minivm's version included)."""
    return hashlib.sha256(dump({"minivm": __version__, **inputs}).encode()).hexdigest()


def load(folder: Path) -> dict[str, Any] | None:
    """The record of the last build in ``folder``, if any and readable."""
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def fresh(folder: Path, cache_key: str) -> dict[str, Any] | None:
    """The record if it was made with ``cache_key`` and its outputs are still there, whole."""
    record = load(folder)
    if not record or record.get("key") != cache_key:
        return None
    for output in record.get("outputs", {}).values():
        path = Path(output["path"])
        if not path.is_file() or path.stat().st_size != output["size"]:
            return None
    return record


def save(folder: Path, record: dict[str, Any]) -> None:
    """Write the build record atomically."""
    atomic_write_bytes(folder / RECORD, (json.dumps(record, indent=2, sort_keys=True) + "\n")
                       .encode())

"""Build records: what a previous build produced and from which inputs (the cache key)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minivm import __version__
from minivm.fsutil import FileRecord, atomic_write_bytes
from minivm.image.config import ImageConfig

RECORD = "build.json"


def dump(obj: Any) -> str:
    """Compact, sorted JSON (for cache keys and stored configs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key(**inputs: Any) -> str:
    """A digest of everything an output depends on (minivm's version included)."""
    return hashlib.sha256(dump({"minivm": __version__, **inputs}).encode()).hexdigest()


@dataclass(frozen=True)
class BuildRecord:
    """``build.json``: what a build made (``outputs``: role -> path, size, md5) from which
    inputs (``key``; ``context_key`` for a build context; ``source_id``: which source)."""

    key: str
    name: str
    source: str
    image_id: str
    backend: str
    outputs: dict[str, FileRecord]
    config: ImageConfig = field(default_factory=lambda: ImageConfig(image_id=""))
    context_key: str | None = None
    source_id: str | None = None
    platform: str = "linux/amd64"  # Docker's platform of the image (and of the kit it needs)
    fs_size: int = 0
    content_bytes: int = 0
    entries: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The root disk (a path; it may have gone since)."""
        root = self.outputs.get("root")
        return Path(root.path if root else "")

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.labels)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "outputs": {k: v.to_json() for k, v in self.outputs.items()},
                "config": self.config.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildRecord:
        """The record ``build.json`` holds; KeyError/TypeError when it is not one."""
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        if not isinstance(known["outputs"], dict):
            raise TypeError("outputs is not an object")
        known["outputs"] = {str(k): FileRecord.from_json(v) for k, v in known["outputs"].items()}
        if "config" in known:
            known["config"] = ImageConfig.from_json(known["config"])
        return cls(**known)


def load(folder: Path) -> BuildRecord | None:
    """The record of the last build in ``folder``, if any and readable."""
    try:
        return BuildRecord.from_json(json.loads((folder / RECORD).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fresh(folder: Path, cache_key: str) -> BuildRecord | None:
    """The record if it was made with ``cache_key`` and its outputs are still there, whole."""
    record = load(folder)
    if not record or record.key != cache_key:
        return None
    for output in record.outputs.values():
        path = Path(output.path)
        if not path.is_file() or path.stat().st_size != output.size:
            return None
    return record


def save(folder: Path, record: BuildRecord) -> None:
    """Write the build record atomically."""
    atomic_write_bytes(folder / RECORD, (json.dumps(record.to_json(), indent=2, sort_keys=True)
                                         + "\n").encode())

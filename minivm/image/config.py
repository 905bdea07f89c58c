"""An image's configuration as Docker stores it, and what the engine adds to every container.

Light on purpose (no Docker SDK): the daemonless path (archives) needs it too.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from minivm.errors import MinivmError

# Files the engine puts in every container (its "init layer"), not the image's own content.
# When they are empty (the image had none), they are dropped from an export so that the
# engine path and the daemonless path give the same tree (see is_container_artifact).
ENGINE_ARTIFACTS = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "dev/console"}
ENGINE_FOLDERS = {"dev/pts", "dev/shm"}
ENGINE_MTAB = ("etc/mtab", "/proc/mounts")
# Of those, the files whose image version the init layer hides: an export always shows them
# empty, so their real content is read from the image's layers (see image_files).
SHADOWED = ("etc/hostname", "etc/hosts", "etc/resolv.conf")


@dataclass(frozen=True)
class ImageConfig:
    """What the init needs from an image's config, as Docker stores it."""

    image_id: str
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    exposed_ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    created: int = 0

    @classmethod
    def from_docker(cls, image_id: str, config: dict[str, Any] | None,
                    created: str | None = None) -> ImageConfig:
        """Read the ``Config`` object of an image (engine inspect or archive config blob)."""
        config = config if isinstance(config, dict) else {}
        return cls(
            image_id=image_id,
            created=_epoch(created),
            entrypoint=_strings(config, "Entrypoint", image_id),
            cmd=_strings(config, "Cmd", image_id),
            env=_strings(config, "Env", image_id),
            workdir=_string(config, "WorkingDir", image_id),
            user=_string(config, "User", image_id),
            exposed_ports=sorted(config.get("ExposedPorts") or {}),
            labels=dict(sorted((config.get("Labels") or {}).items())),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id, "entrypoint": self.entrypoint, "cmd": self.cmd,
            "env": self.env, "workdir": self.workdir, "user": self.user,
            "exposed_ports": self.exposed_ports, "labels": self.labels, "created": self.created,
        }

    @classmethod
    def from_json(cls, data: object) -> ImageConfig:
        """What :meth:`to_json` wrote (build.json); TypeError when it is not that."""
        if not isinstance(data, dict) or not isinstance(data.get("image_id"), str):
            raise TypeError("an image config is an object with an image_id")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _strings(config: dict[str, Any], key: str, image_id: str) -> list[str]:
    """A list-of-strings field (absent or null: empty); anything else is an error naming it
    (a string would otherwise be read as a list of its characters)."""
    value = config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MinivmError(f"image {short_id(image_id)}: config field {key} is not a list of "
                          "strings", hint="fix the image's config (its Dockerfile or archive)")
    return list(value)


def _string(config: dict[str, Any], key: str, image_id: str) -> str:
    value = config.get(key) or ""
    if not isinstance(value, str):
        raise MinivmError(f"image {short_id(image_id)}: config field {key} is not a string",
                          hint="fix the image's config (its Dockerfile or archive)")
    return value


def _epoch(created: str | None) -> int:
    """Seconds since the epoch of an RFC 3339 time as Docker writes it (0 when absent)."""
    if not created:
        return 0
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", created)
    if not match:
        return 0
    return int(datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC).timestamp())


def is_container_artifact(info: tarfile.TarInfo) -> bool:
    """Whether an exported entry (name relative, no ``./``) is one the engine adds to every
    container rather than one of the image's own."""
    if info.name in ENGINE_FOLDERS:
        return info.isdir()
    if info.name == ENGINE_MTAB[0]:
        return info.issym() and info.linkname == ENGINE_MTAB[1]
    return info.name in ENGINE_ARTIFACTS and info.isreg() and info.size == 0


def short_id(image_id: str) -> str:
    """The 12 hex digits that name an image in file names and tags (as ``docker images``)."""
    return image_id.split(":")[-1][:12]


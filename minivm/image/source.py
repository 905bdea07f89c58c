"""What the user named on ``minivm build``: an image folder, a build context, an archive or
an image reference."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from minivm.errors import MinivmError
from minivm.image.archive import is_archive
from minivm.paths import images_dir

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class Kind(Enum):
    CONTEXT = "context"
    ARCHIVE = "archive"
    IMAGE = "image"


@dataclass(frozen=True)
class Source:
    """A classified build input and the appliance name derived from it."""

    kind: Kind
    name: str
    text: str
    path: Path | None = None
    shipped: bool = False

    @property
    def identity(self) -> str:
        """What this source is, whatever the words that named it: two builds with the same
        identity are builds of the same thing (and may share an output folder)."""
        if self.shipped:
            return f"shipped:{self.name}"
        return str(self.path) if self.path else self.text

    def named(self, name: str) -> Source:
        """The same source, its outputs named ``name`` (``minivm build --name``)."""
        if not NAME.fullmatch(name):
            raise MinivmError(f"--name {name!r} is not a usable name",
                              hint="use letters, digits, '.', '_' and '-', starting with a "
                                   "letter or digit")
        return replace(self, name=name)


def classify(text: str) -> Source:
    """Decide what ``text`` names; a MinivmError when it names nothing that exists."""
    shipped = images_dir() / text
    if "/" not in text and (shipped / "Dockerfile").is_file():
        return Source(Kind.CONTEXT, text, text, shipped, shipped=True)
    path = Path(text).expanduser()
    looks_like_path = text.startswith((".", "/", "~")) or text.endswith((".tar", ".tar.gz"))
    if path.is_dir() and (path / "Dockerfile").is_file():
        return Source(Kind.CONTEXT, _name(path.resolve().name), text, path.resolve())
    if path.exists() and is_archive(path):
        stem = path.name.split(".tar")[0] if path.is_file() else path.resolve().name
        return Source(Kind.ARCHIVE, _name(stem), text, path.resolve())
    if path.is_dir():
        raise MinivmError(f"{text} is a folder with no Dockerfile and no OCI layout",
                          hint="name a Docker build context or an OCI image layout")
    if path.is_file():
        raise MinivmError(f"{text} is not a tar archive",
                          hint="give `docker save` output or an OCI image archive")
    if looks_like_path:
        raise MinivmError(f"no such folder or archive: {text}",
                          hint=f"shipped images are in {images_dir()}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", text):
        raise MinivmError(f"{text!r} is not an image folder, a path or an image reference",
                          hint=f"shipped images: {', '.join(shipped_names()) or 'none'}")
    return Source(Kind.IMAGE, _name(text.split("@")[0].rsplit("/", 1)[-1].replace(":", "-")), text)


def shipped_names() -> list[str]:
    """The image folders under images/."""
    root = images_dir()
    return sorted(p.parent.name for p in root.glob("*/Dockerfile")) if root.is_dir() else []


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "image"

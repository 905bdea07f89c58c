"""Lab nodes made straight from sources: ``image:`` (a context folder, a reference, an archive,
as ``minivm build`` takes them) instead of ``appliance:``.

``lab up`` builds each source once (nodes naming the same source share it) through the build
cache, into ``<lab>.state/images/NAME/``, and writes its GNS3 bundle there; an unchanged source
builds nothing. The lab file then reads each such node's appliance from that bundle. A path is
read relative to the lab file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from minivm import cache
from minivm.errors import MinivmError
from minivm.image import source as source_mod
from minivm.lab import clab
from minivm.ui import Reporter

# What `up` did for an image: found it built (--no-build), found it current, or built it.
Built = Literal["present", "cached", "built"]


@dataclass(frozen=True)
class ImageSource:
    """What a node's ``image:`` names, and where its build and bundle go."""

    text: str  # as minivm build takes it (a path made absolute)
    name: str
    folder: Path

    @property
    def bundle(self) -> Path:
        return self.folder / f"{self.name}.gns3a"


def images_dir(state_dir: Path) -> Path:
    return state_dir / "images"


def resolve(value: Any, lab_file: Path, state_dir: Path, where: str) -> ImageSource:
    """A node's ``image:`` value: a path beside the lab file, else a reference."""
    if not isinstance(value, str) or not value.strip():
        raise MinivmError(f"{where}: 'image' must name a context folder, an archive or an "
                          "image reference")
    text = value.strip()
    local = (lab_file.parent / text).expanduser()
    if not Path(text).is_absolute() and local.exists():
        text = str(local.resolve())
    src = source_mod.classify(text)
    return ImageSource(text=text, name=src.name, folder=images_dir(state_dir) / src.name)


def source_text(spec: dict[str, Any], lab_file: Path) -> str | None:
    """A node's ``image:`` as written (None for an ``appliance:`` node)."""
    return str(spec["image"]) if "image" in spec else None


def sources(lab_file: Path, state_dir: Path) -> dict[str, ImageSource]:
    """Each ``image:`` node's source, read from the lab file (before its appliances are)."""
    try:
        data = yaml.safe_load(lab_file.read_bytes())
    except (OSError, yaml.YAMLError):
        return {}  # the lab file's own loader says what is wrong with it
    if clab.is_clab(lab_file, data):
        data = clab.to_lab(data, lab_file.name)[0]
    nodes = data.get("nodes") if isinstance(data, dict) else None
    out = {}
    for name, spec in (nodes or {}).items():
        if isinstance(spec, dict) and "image" in spec:
            out[str(name)] = resolve(spec["image"], lab_file, state_dir,
                                     f"{lab_file.name}: node {name}")
    return out


def ensure(lab_file: Path, state_dir: Path, *, reporter: Reporter,
           allow_build: bool = True) -> dict[str, Built]:
    """Build what the ``image:`` nodes need and is missing or changed; with ``allow_build``
    False, refuse instead. Returns, per source name, whether it was built or found."""
    from minivm.gns3 import appliance
    from minivm.image import build
    from minivm.kit import kernel

    done: dict[str, Built] = {}
    for node, src in sources(lab_file, state_dir).items():
        if src.name in done:
            continue
        if not allow_build:
            if not src.bundle.is_file() or cache.load(src.folder) is None:
                raise MinivmError(f"{lab_file.name}: node {node}: its image {src.text} is not "
                                  "built, and --no-build forbids building it",
                                  hint=f"run: minivm lab up {lab_file} (without --no-build)")
            done[src.name] = "present"
            continue
        with reporter.stage(f"image:{src.name}", f"Building the image of {node} ({src.text})"):
            result = build.build(src.text, reporter=reporter, output_dir=src.folder.parent)
            kit = kernel.current() or kernel.build(reporter=reporter)
            appliance.write_bundle(result.name, reporter=reporter, folder=result.folder, kit=kit)
        done[src.name] = "cached" if result.cached else "built"
    return done

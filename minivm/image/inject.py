"""What ``minivm build`` injects into every image: the init and its toolbox, built from ``init/``.

``init/`` is a Docker build context whose final stage (``FROM scratch``) holds the tree to
overlay: ``.minivm/`` (the init, the toolbox, the DHCP hook) and default files under ``etc/``.
It is built per platform (build argument ``ARCH``: compiled natively or cross-compiled) and
cached in the user's cache folder, ``<cache>/init/<digest of init/>-<arch>/``: a second build
with the same sources needs no engine.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from minivm import paths
from minivm.errors import MinivmError
from minivm.fsutil import atomic_path, sha256_tree
from minivm.image import engine
from minivm.image.config import is_container_artifact
from minivm.paths import init_dir
from minivm.platforms import Platform, host
from minivm.ui import Reporter

TREE = "tree"
# Reproducible builds: the same date is compiled into every init/toolbox.
SOURCE_DATE_EPOCH = "1700000000"
# What the engine adds to every exported container, not part of the tree.
SKIP_TOP = {"dev", "proc", "sys", ".dockerenv"}


@dataclass(frozen=True)
class Injection:
    """The tree to overlay onto an image (``.minivm/...`` always wins, other paths are
    defaults), and the digest of the ``init/`` sources it was built from."""

    root: Path
    digest: str


def cache_dir(digest: str, platform: Platform) -> Path:
    return paths.cache_dir() / "init" / f"{digest}-{platform.arch}"


def prepare(*, reporter: Reporter, source: Path | None = None,
            platform: Platform | None = None) -> Injection:
    """The injected tree for the current ``init/`` sources and ``platform`` (default: the
    host's), built on first use."""
    source = source or init_dir()
    platform = platform or host()
    if not (source / "Dockerfile").is_file():
        raise MinivmError(f"no init sources at {source}",
                          hint="restore init/ from the minivm sources (or set MINIVM_HOME)")
    digest = sha256_tree(source)
    folder = cache_dir(digest, platform)
    if (folder / TREE / ".minivm" / "init").is_file():
        return Injection(folder / TREE, digest)
    client = engine.connect()
    with reporter.stage("init", f"Building the init and its toolbox (init/) for "
                                f"{platform.text}"):
        image_id = engine.build_image(client, source, reporter=reporter,
                                      buildargs={"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
                                                 "ARCH": platform.arch})
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            with engine.exported_filesystem(client, image_id) as stream:
                _extract(stream, tmp / TREE)
            if not (tmp / TREE / ".minivm" / "init").is_file():
                raise MinivmError(f"the build of {source} made no .minivm/init",
                                  hint="its last stage must hold /.minivm/init")
    reporter.info(f"init tree: {folder / TREE} ({tree_bytes(folder / TREE) / 1e3:.0f} kB)")
    return Injection(folder / TREE, digest)


def _extract(stream: BinaryIO, dest: Path) -> None:
    """Unpack the exported tree: directories, files and symlinks only, engine artifacts left
    out, nothing outside ``dest`` (an absolute name, a ``..`` or a path through a symlink is
    refused), each member's mode and owner exactly as built."""
    dest.mkdir()
    top = dest.resolve()
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.name.startswith("/") or ".." in info.name.split("/"):
                raise MinivmError(f"the init build holds a path outside its tree: "
                                  f"{info.name!r}")
            name = info.name.removeprefix("./").strip("/")
            if not name or name.split("/")[0] in SKIP_TOP:
                continue
            info.name = name
            if is_container_artifact(info):
                continue
            if not (info.isdir() or info.isreg() or info.issym()):
                continue
            # Symlink targets are the guest's paths (often absolute): never followed here, as
            # no member is written through a symlink, nor over one.
            target = dest / name
            if not (target.parent if info.issym() else target).resolve().is_relative_to(top):
                raise MinivmError(f"the init build holds a path through a symlink: {name!r}")
            _write(tar, info, target)
    for path in sorted(dest.rglob("*"), reverse=True):  # folders the artifacts left empty
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()


def _write(tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path) -> None:
    """One checked member at ``target``, written by minivm itself rather than by tarfile
    (whose filters, where this Python has them, would change the setuid and group-writable
    modes the image must get): a symlink already there is replaced, never followed; mode,
    owner (when root) and time as the member says."""
    if target.is_symlink():
        target.unlink()
    if info.isdir():
        target.mkdir(exist_ok=True)
    elif info.issym():
        target.unlink(missing_ok=True)
        os.symlink(info.linkname, target)
    else:
        source = tar.extractfile(info)
        assert source is not None  # a regular file's data
        with source, target.open("wb") as out:
            shutil.copyfileobj(source, out)
    if os.geteuid() == 0:
        os.chown(target, info.uid, info.gid, follow_symlinks=False)
    if not info.issym():
        os.chmod(target, info.mode)
    os.utime(target, (info.mtime, info.mtime), follow_symlinks=False)


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files in a tree (what the injection adds to an image)."""
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def main_files(root: Path) -> dict[str, int]:
    """Size of each regular file under ``.minivm`` (for reports)."""
    base = root / ".minivm"
    return {os.fspath(p.relative_to(root)): p.stat().st_size
            for p in sorted(base.rglob("*")) if p.is_file() and not p.is_symlink()}

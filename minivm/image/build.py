"""``minivm build``: from an image (folder, context, reference or archive) to a root QCOW2.

Data flows one way: image -> tar entries -> (cleaning, injection) -> ext4 -> QCOW2.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from minivm import cache
from minivm.errors import MinivmError
from minivm.fsutil import file_record, remove, sha256_tree
from minivm.image import disk, engine, inject, layers
from minivm.image.archive import open_archive
from minivm.image.config import SHADOWED, ImageConfig, short_id
from minivm.image.rootfs import RootfsStats, compose, run_config
from minivm.image.source import Kind, Source, classify
from minivm.image.tarstream import Entry, read_entries
from minivm.paths import ROOT_LABEL, build_dir, init_dir
from minivm.platforms import Platform, host
from minivm.ui import Reporter

UUID_NAMESPACE = uuid.UUID("6f1c1c3e-4a7e-4c55-9a57-6d696e69766d")


@dataclass(frozen=True)
class BuildResult:
    """What ``minivm build`` produced (or found up to date)."""

    name: str
    folder: Path
    qcow2: Path
    image_id: str
    config: ImageConfig
    backend: str
    cached: bool
    record: cache.BuildRecord


def build(
    text: str,
    *,
    reporter: Reporter,
    size: int | None = None,
    backend: str = "auto",
    output_dir: Path | None = None,
    force: bool = False,
    name: str | None = None,
    platform: Platform | None = None,
) -> BuildResult:
    """Build the root disk of ``text`` (see :func:`minivm.image.source.classify`) for
    ``platform`` (default: the host's) into ``<output>/<name>/``; ``name`` defaults to one
    derived from the source, and carries the platform's suffix (``NAME-arm64``)."""
    started = time.monotonic()
    platform = platform or host()
    source = classify(text)
    if name:
        source = source.named(name)
    source = replace(source, name=platform.named(source.name))
    folder = (output_dir or build_dir()) / source.name
    _check_owner(folder, source, reporter)
    chosen = disk.pick_backend(backend)
    inputs = {"name": source.name, "init": sha256_tree(init_dir()), "size": size,
              "backend": chosen, "platform": platform.arch}
    with ExitStack() as stack:
        client = None if source.kind is Kind.ARCHIVE else engine.connect()
        context_key = (_context_key(client, source, inputs, platform)
                       if source.kind is Kind.CONTEXT else None)
        if context_key and not force and (record := _fresh_by_context(folder, context_key)):
            return _cached(record, folder, reporter, started)
        image_id, config, entries, shadowed = stack.enter_context(
            _open_image(client, source, reporter=reporter, platform=platform))
        key = cache.key(image=image_id, **inputs)
        if not force and (record := cache.fresh(folder, key)):
            return _cached(record, folder, reporter, started)
        run_config(config, name=source.name)  # what the init cannot carry fails first
        injection = inject.prepare(reporter=reporter, platform=platform)
        qcow2 = folder / f"{source.name}-{short_id(image_id)}.qcow2"
        composed = compose(entries, config=config, name=source.name, injection=injection.root,
                           stats=RootfsStats(), from_engine=client is not None, where=source.text,
                           stamp=_timestamp(config), shadowed=shadowed)
        result = disk.write_qcow2(
            composed, qcow2, label=ROOT_LABEL, uuid=uuid.uuid5(UUID_NAMESPACE, key),
            timestamp=_timestamp(config), size=size, backend=chosen, reporter=reporter)
    for stale in folder.glob(f"{source.name}-*.qcow2"):
        if stale != qcow2:
            remove(stale)
    reporter.seconds["total"] = round(time.monotonic() - started, 3)
    record = cache.BuildRecord(
        key=key, context_key=context_key, name=source.name, source=source.text,
        source_id=source.identity, platform=platform.text, image_id=image_id,
        config=config,
        backend=result.backend, fs_size=result.fs_size, content_bytes=result.content_bytes,
        entries=result.entries, outputs={"root": file_record(qcow2)},
        seconds=dict(reporter.seconds))
    cache.save(folder, record)
    reporter.info(f"[green]✓[/] {qcow2} ({qcow2.stat().st_size / 1e6:.1f} MB, "
                  f"backend {result.backend}, {reporter.seconds['total']:.1f} s)")
    return BuildResult(source.name, folder, qcow2, image_id, config, result.backend, False, record)


def _check_owner(folder: Path, source: Source, reporter: Reporter) -> None:
    """Refuse to build into a folder that holds the build of another source that still
    exists: the new build would replace (delete) the other's disk. ``./a/app`` and ``./b/app``
    both want ``app``. A folder source that is gone (a moved checkout, a temporary folder)
    leaves a build nobody can rebuild: it is replaced, with a note."""
    record = cache.load(folder)
    if record and record.source_id not in (None, source.identity):
        gone = record.source_id.startswith("/") and not Path(record.source_id).exists()
        if gone:
            reporter.info(f"note: {folder} held the build of {record.source}, whose folder "
                          f"{record.source_id} is gone: this build of {source.text} replaces it")
            return
        raise MinivmError(
            f"{folder} holds the build of {record.source} ({record.source_id}), "
            f"not of {source.text}",
            hint=f"give this build another name: minivm build {source.text} --name NAME")


def _cached(record: cache.BuildRecord, folder: Path, reporter: Reporter,
            started: float) -> BuildResult:
    qcow2 = record.root
    reporter.seconds = {"total": round(time.monotonic() - started, 3)}
    reporter.info(f"[green]✓[/] up to date (image {short_id(record.image_id)} and injected "
                  f"files unchanged): {qcow2}")
    return BuildResult(record.name, folder, qcow2, record.image_id, record.config, record.backend,
                       True, record)


def _fresh_by_context(folder: Path, context_key: str) -> cache.BuildRecord | None:
    record = cache.load(folder)
    if record and record.context_key == context_key:
        return cache.fresh(folder, record.key)
    return None


def _context_key(client: Any, source: Source, inputs: dict[str, Any],
                 platform: Platform) -> str | None:
    """A key for a build context that needs no docker build: the context's files and the ids
    of its base images for the platform. None when a base is unknown (then docker build
    decides)."""
    assert source.path is not None
    bases = []
    for ref in _from_refs(source.path / "Dockerfile"):
        try:
            image_id = engine.local_for_platform(client, ref, platform.text)
        except Exception:
            return None
        if image_id is None:
            return None
        bases.append(image_id)
    return cache.key(context=sha256_tree(source.path), bases=bases, **inputs)


FROM_LINE = re.compile(r"(\s*FROM\s+)((?:--\S+\s+)*)(\S+)((?:\s+AS\s+(\S+))?.*)", re.IGNORECASE)


def _from_refs(dockerfile: Path) -> list[str]:
    """The external images a Dockerfile starts FROM (stage names excluded)."""
    refs, stages = [], set()
    for line in dockerfile.read_text(errors="replace").splitlines():
        match = FROM_LINE.match(line)
        if match:
            if match.group(3).lower() not in stages and match.group(3) != "scratch":
                refs.append(match.group(3))
            if match.group(5):
                stages.add(match.group(5).lower())
    return refs


def _dockerfile_for(client: Any, context: Path, platform: Platform, *, reporter: Reporter,
                    folder: Path) -> str | None:
    """A copy of the context's Dockerfile (in ``folder``) whose bases are the platform's
    images, when the engine's own tag of a base names another platform's image (one tag, one
    image: a classic image store keeps one platform per name). None when none needs it."""
    lines = (context / "Dockerfile").read_text(errors="replace").splitlines(keepends=True)
    stages: set[str] = set()
    changed = False
    for n, line in enumerate(lines):
        match = FROM_LINE.match(line)
        if not match:
            continue
        ref = match.group(3)
        external = (ref.lower() not in stages and ref != "scratch" and "$" not in ref
                    and "--platform" not in match.group(2))
        if match.group(5):
            stages.add(match.group(5).lower())
        found = engine.image_platform(client, ref) if external else None
        if found is None or found == platform.text:
            continue
        image_id = engine.resolve_for_platform(client, ref, platform.text, reporter=reporter)
        lines[n] = f"{match.group(1)}{match.group(2)}{image_id}{match.group(4)}\n"
        changed = True
    if not changed:
        return None
    path = folder / "Dockerfile"
    path.write_text("".join(lines))
    return str(path)


Shadowed = Callable[[], dict[str, tuple[tarfile.TarInfo, bytes]]] | None


@contextmanager
def _open_image(client: Any, source: Source, *, reporter: Reporter, platform: Platform,
                ) -> Iterator[tuple[str, ImageConfig, Iterator[Entry], Shadowed]]:
    """The image's id, config and flattened entries for ``platform``, from the engine or an
    archive; for the engine, also the image's own versions of the files its export hides."""
    if source.kind is Kind.ARCHIVE:
        assert source.path is not None
        archive = open_archive(source.path, platform)
        reporter.info(f"reading {source.path} ({len(archive.layers)} layers, no engine)")
        yield archive.config.image_id, archive.config, layers.flatten(archive.layers), None
        return
    if source.kind is Kind.CONTEXT:
        assert source.path is not None
        with reporter.stage("docker_build", f"Building {source.path} with the Docker engine "
                                            f"for {platform.text}"), \
                tempfile.TemporaryDirectory(prefix="minivm-dockerfile-") as tmp:
            dockerfile = _dockerfile_for(client, source.path, platform, reporter=reporter,
                                         folder=Path(tmp))
            image_id = engine.build_image(client, source.path, reporter=reporter,
                                          dockerfile=dockerfile, platform=platform.text,
                                          tag=f"minivm/{source.name.lower()}:latest")
    else:
        image_id = engine.resolve_for_platform(client, source.text, platform.text,
                                               reporter=reporter)
    found = engine.image_platform(client, image_id)
    if found != platform.text:
        raise MinivmError(f"{source.text} is a {found} image, not {platform.text}",
                          hint=f"build it for {platform.text}, or use --platform {found}")
    config = engine.image_config(client, image_id)
    reporter.info(f"exporting image {short_id(image_id)} from the engine (streamed, never run)")
    with ThreadPoolExecutor(max_workers=1) as pool, \
            engine.exported_filesystem(client, image_id) as stream:
        # Read alongside the export, on a client of its own; needed only at the end.
        hidden = pool.submit(engine.image_files, engine.connect(), image_id, SHADOWED)
        yield (image_id, config, read_entries(stream, where=f"export of {source.text}"),
               hidden.result)


def _timestamp(config: ImageConfig) -> int:
    """The filesystem's creation time: the image's, so that rebuilds are identical."""
    return config.created or 1



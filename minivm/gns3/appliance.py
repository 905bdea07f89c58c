"""GNS3 appliance bundles: ``<name>.gns3a`` plus every file it names, side by side.

Stages: metadata (:mod:`minivm.gns3.metadata`) -> files (the root disk from the build record,
the kernel kit linked beside it, md5 and size of each) -> JSON rendered from
``appliances/appliance.gns3a.j2`` (:mod:`minivm.gns3.render`) -> GNS3's rules
(:mod:`minivm.gns3.model`), the same ``minivm appliance --check`` applies -> the file written
atomically, with the record of its inputs (:mod:`minivm.gns3.bundle`).
"""

from __future__ import annotations

from pathlib import Path

from minivm import cache
from minivm.errors import MinivmError
from minivm.fsutil import atomic_write_bytes, md5_file, plain_name_problem, remove
from minivm.gns3 import docker_node
from minivm.gns3.bundle import (
    Bundle,
    BundleFile,
    build_record,
    bundle_inputs,
    named_files,
    place,
    record_inputs,
    unchanged_bundle,
)
from minivm.gns3.metadata import required_metadata
from minivm.gns3.model import (
    IMAGE_REQUIRED,
    file_problems,
    kernel_problems,
    model_problems,
    options_problem,
    parse,
    summary,
)
from minivm.gns3.render import record_platform, render, values
from minivm.image.config import short_id
from minivm.kit import kernel
from minivm.paths import appliances_dir
from minivm.platforms import AMD64, Platform
from minivm.ui import Reporter
from minivm.vm import options as qemu_options

TEMPLATE = "appliance.gns3a.j2"


def current_kit(platform: Platform = AMD64) -> kernel.Kit:
    """The current kernel kit of ``platform``, or an error saying how to make one."""
    kit = kernel.current(platform)
    if kit is None:
        raise MinivmError(f"no {platform.text} kernel kit in {kernel.kits_dir()}",
                          hint=f"run `minivm kernel build{platform.option}` first")
    return kit


def _file(role: str, path: Path, version: str,
          known: tuple[int | None, str | None] | None = None) -> BundleFile:
    """A file's entry in the appliance. ``known``: the record (size, md5) written with the
    file when it was made (build record, kit manifest): its md5 is reused while the size
    matches, so that an unchanged bundle costs no hashing of ~50 MB."""
    size = path.stat().st_size
    md5 = known[1] if known and known[0] == size and known[1] else None
    return BundleFile(path.name, size, role=role, version=version,
                      md5sum=md5 or md5_file(path))


def write_bundle(name: str, *, reporter: Reporter, folder: Path | None = None,
                 kit: kernel.Kit | None = None) -> Bundle:
    """Write ``<folder>/<name>.gns3a`` and link the kit beside the root disk."""
    folder, record, root = build_record(name, folder)
    kit = kit or current_kit(record_platform(record))
    if kit.platform != record_platform(record):
        raise MinivmError(f"{name} is a {record.platform} image, the kernel kit is for "
                          f"{kit.platform.text}",
                          hint=f"run `minivm kernel build{record_platform(record).option}`")
    inputs = bundle_inputs(name, record, kit=kit.manifest.key, kit_folder=kit.folder.name)
    if unchanged := unchanged_bundle(folder / f"{name}.gns3a", inputs):
        reporter.info(f"[green]✓[/] appliance {unchanged.path} is up to date")
        return unchanged
    meta = required_metadata(name, record)
    kit_files = {"kernel": kit.kernel, "initrd": kit.initrd, "modules": kit.modules}
    for role, path in kit_files.items():
        if path is not None and not path.is_file():
            raise MinivmError(f"the kernel kit lacks its {role} file {path}",
                              hint="run `minivm kernel build`")
    image12 = short_id(record.image_id)
    gns3a = folder / f"{name}.gns3a"
    previous = named_files(gns3a)
    how = {role: place(path, folder / path.name)
           for role, path in kit_files.items() if path is not None}
    made = {role: (f.size, f.md5) for role, f in kit.manifest.files.items()}
    built = record.outputs.get("root")
    files = {"root": _file("root", root, image12, (built.size, built.md5) if built else None),
             "kernel": _file("kernel", folder / kit.kernel.name, kit.kernel_version,
                             made.get("kernel")),
             "initrd": _file("initrd", folder / kit.initrd.name, kit.folder.name,
                             made.get("initrd"))}
    if kit.modules is not None:
        files["modules"] = _file("modules", folder / kit.modules.name, kit.folder.name,
                                 made.get("modules"))
    data = values(name, meta, record, version=image12, files=files)
    text = render(TEMPLATE, a=data)
    appliance = parse(text, where=f"{appliances_dir() / TEMPLATE} (rendered for {name})")
    problems = model_problems(appliance) + kernel_problems(appliance)
    if problems:
        raise MinivmError(f"{appliances_dir() / TEMPLATE} rendered an appliance GNS3 would "
                          f"refuse for {name}: {summary(problems)}", hint="fix the template")
    atomic_write_bytes(gns3a, text.encode())
    record_inputs(gns3a, inputs, list(files.values()))
    for stale in previous - {f.filename for f in files.values()} - {root.name, gns3a.name}:
        if not plain_name_problem(stale):
            remove(folder / stale)
    total = sum(f.filesize for f in files.values())
    if copied := [role for role, h in how.items() if h == "copy"]:
        reporter.info(f"  copied (not hard-linked: another filesystem): {', '.join(copied)}")
    reporter.info(f"[green]✓[/] appliance {gns3a} ({len(files)} files, {total / 1e6:.1f} MB)")
    return Bundle.of(gns3a, appliance, tuple(files.values()))


def after_build(name: str, *, folder: Path, reporter: Reporter) -> Bundle | None:
    """The end of ``minivm build``: write the bundle when a kernel kit exists, else say how."""
    record = cache.load(folder)
    platform = record_platform(record) if record else AMD64
    kit = kernel.current(platform)
    if kit is None:
        reporter.info(f"no {platform.text} kernel kit yet, so no GNS3 appliance: run "
                      f"`minivm kernel build{platform.option}`, then "
                      f"`minivm appliance {name}`")
        return None
    return write_bundle(name, reporter=reporter, folder=folder, kit=kit)


def check_bundle(path: Path, *, allow_unsafe_options: bool = False) -> Bundle:
    """Verify a bundle: GNS3's model rules, minivm's (options on the allow-list, plain file
    names), every file present and intact, sane kernel args (a Docker-node appliance: GNS3's
    rules and its image at hand)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MinivmError(f"no such appliance file: {path}",
                          hint="bundles are written as build/<name>/<name>.gns3a") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MinivmError(f"cannot read {path}: {e}") from None
    data = parse(text, where=str(path))
    if "docker" in data and "qemu" not in data:
        return docker_node.check(path, data)
    qemu = data.get("qemu")
    if isinstance(qemu, dict) and isinstance(qemu.get("options"), str) and \
            (why := options_problem(qemu["options"], allow_unsafe=allow_unsafe_options)):
        raise MinivmError(f"{path}: qemu.options: {why}", hint=qemu_options.HINT)
    problems = model_problems(data, allow_unsafe=allow_unsafe_options) + kernel_problems(data)
    if problems:
        raise MinivmError(f"{path}: {summary(problems)}", hint="GNS3 would refuse or "
                          "misboot it; rewrite it with `minivm appliance NAME`")
    problems = file_problems(data, path.parent)
    if problems:
        raise MinivmError(f"{path}: {summary(problems)}",
                          hint="the bundle was changed after it was written; rewrite it with "
                               "`minivm appliance NAME`")
    files = tuple(BundleFile.from_json({k: i[k] for k in IMAGE_REQUIRED})
                  for i in data["images"])
    return Bundle.of(path, data, files)

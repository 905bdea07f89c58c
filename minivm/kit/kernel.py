"""The shared kernel kit: a kernel, minivm's own initramfs, and a module disk.

``kernel/kit.toml`` describes flavours: ``minimal`` compiles Debian's kernel source with the
drivers a MiniVM boots with built in, ``cloud`` unpacks Debian's cloud kernel as shipped.
Stages: fetch (Docker build of the flavour's recipe folder, ``kernel/<recipe>/``: the kernel
and its modules, plus static busybox and e2fsck) -> export (the ``/kit`` folder of that
image, read as a tar stream) -> initramfs (cpio of busybox, e2fsck, ``kernel/init`` and the
modules needed to reach the root) -> module disk (every module, ext4 labelled
``minivm-modules`` in a QCOW2). The result goes to ``<cache>/kernel/<kver>-<hash>/`` in the
user's cache folder (shared by every project); ``<cache>/kernel/current-<arch>`` points at the
kit of that platform built (or found in the cache) last.

Platforms: a flavour lists the ones it builds for (``platforms``, Docker's architecture names);
linux/amd64 builds ``<recipe>/Dockerfile``, another platform ``<recipe>/<arch>/Dockerfile``
with the same build context (the recipe folder), so it can use the amd64 recipe's files.

Nothing changed (same flavour settings, platform, recipe files, shared init and e2fsck, base
image, minivm) -> the kit is reused. Each flavour and platform has its own key.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minivm import __version__, cache
from minivm.errors import MinivmError
from minivm.fsutil import (
    atomic_path,
    atomic_write_bytes,
    file_record,
    md5_file,
    remove,
    sha256_tree,
)
from minivm.image import engine
from minivm.image.tarstream import SymlinkGuard, read_entries
from minivm.kit import initramfs, kmod
from minivm.paths import MODULES_LABEL, cache_dir, kernel_dir
from minivm.platforms import AMD64, PLATFORMS, Platform, host
from minivm.ui import Reporter

MANIFEST = "manifest.json"
# Kits kept in the cache after a new one is built: the new one and the most recent others
# (going back to an earlier kernel/ is then a cache hit). Appliances hold their own links or
# copies of the kit's files, so removing a kit breaks none of them.
KEEP_KITS = 3
KIT_PREFIX = "kit/"
UUID_NAMESPACE = uuid.UUID("6f1d6a53-3a2e-4c52-9a0b-6b8d2b1f6d11")


# Files of the kernel folder every flavour's kit is made with (beside its recipe folder).
SHARED_FILES = ("init", "e2fsck")


@dataclass(frozen=True)
class KitConfig:
    """One flavour of ``kernel/kit.toml``: where the kernel comes from and what the initramfs
    carries."""

    base: str
    package: str
    flavour: str = "cloud"
    recipe: str = "cloud"
    initramfs_modules: tuple[str, ...] = ()
    boot_modules: tuple[str, ...] = ()
    async_modules: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    compression: str = "gzip"
    module_disk: bool = True
    platform: Platform = AMD64
    # The flavour's whole table as canonical JSON: all of it goes into the kit's key.
    settings: str = field(default="{}", compare=False)

    @property
    def dockerfile(self) -> str:
        """The recipe's Dockerfile for this platform, relative to the recipe folder."""
        return "Dockerfile" if self.platform == AMD64 else f"{self.platform.arch}/Dockerfile"


@dataclass(frozen=True)
class KitFile:
    """A file of a kit, as its manifest records it."""

    name: str
    size: int
    md5: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "md5": self.md5}

    @classmethod
    def of(cls, path: Path) -> KitFile:
        return cls(path.name, path.stat().st_size, md5_file(path))


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says of a kit: its key (the inputs' digest), the kernel and the
    packages it came from, the modules its initramfs carries, its files by role (kernel,
    initrd, modules)."""

    key: str
    minivm: str
    kernel_version: str
    flavour: str
    base_ref: str
    base_id: str
    package: str
    packages: tuple[str, ...]
    compression: str
    timestamp: int
    initramfs_modules: tuple[str, ...]
    boot_modules: tuple[str, ...]
    files: dict[str, KitFile]
    arch: str = AMD64.arch  # the platform's (Docker's architecture name)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "minivm": self.minivm, "kernel_version": self.kernel_version,
                "flavour": self.flavour, "base": {"ref": self.base_ref, "id": self.base_id},
                "package": self.package, "packages": list(self.packages),
                "compression": self.compression, "timestamp": self.timestamp,
                "initramfs_modules": list(self.initramfs_modules),
                "boot_modules": list(self.boot_modules), "arch": self.arch,
                "files": {role: f.to_json() for role, f in self.files.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """KeyError/TypeError/ValueError/AttributeError when ``data`` is not a manifest."""
        base = data.get("base") or {}
        if not isinstance(data["files"], dict) or not {"kernel", "initrd"} <= data["files"].keys():
            raise ValueError("a kit has a kernel and an initrd")
        return cls(key=str(data["key"]), minivm=str(data.get("minivm", "")),
                   kernel_version=str(data["kernel_version"]),
                   flavour=str(data.get("flavour", "cloud")),
                   base_ref=str(base.get("ref", "")), base_id=str(base.get("id", "")),
                   package=str(data.get("package", "")),
                   packages=tuple(map(str, data.get("packages") or ())),
                   compression=str(data.get("compression", "gzip")),
                   timestamp=int(data.get("timestamp") or 0),
                   initramfs_modules=tuple(map(str, data.get("initramfs_modules") or ())),
                   boot_modules=tuple(map(str, data.get("boot_modules") or ())),
                   files={str(role): KitFile(str(f["name"]), int(f["size"]), str(f["md5"]))
                          for role, f in data["files"].items()},
                   arch=str(data.get("arch", AMD64.arch)))


@dataclass(frozen=True)
class Kit:
    """A built kernel kit: its folder, files and manifest."""

    folder: Path
    manifest: Manifest
    cached: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def kernel_version(self) -> str:
        return self.manifest.kernel_version

    @property
    def flavour(self) -> str:
        return self.manifest.flavour

    @property
    def platform(self) -> Platform:
        return PLATFORMS.get(self.manifest.arch, AMD64)

    def path(self, role: str) -> Path | None:
        """The file playing ``role`` (kernel, initrd, modules), if the kit has it."""
        record = self.manifest.files.get(role)
        return self.folder / record.name if record else None

    @property
    def kernel(self) -> Path:
        return self.folder / self.manifest.files["kernel"].name

    @property
    def initrd(self) -> Path:
        return self.folder / self.manifest.files["initrd"].name

    @property
    def modules(self) -> Path | None:
        return self.path("modules")

    def to_json(self) -> dict[str, Any]:
        files = {role: {"path": str(self.folder / rec.name), "size": rec.size,
                        "md5": rec.md5} for role, rec in self.manifest.files.items()}
        return {"kernel_version": self.kernel_version, "flavour": self.flavour,
                "platform": self.platform.text, "folder": str(self.folder),
                "cached": self.cached, "files": files, "packages": list(self.manifest.packages),
                "seconds": self.seconds}


def _read_toml(folder: Path) -> tuple[Path, dict[str, Any]]:
    path = folder / "kit.toml"
    try:
        return path, tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise MinivmError(f"no kernel kit configuration at {path}",
                          hint="restore kernel/kit.toml from the minivm sources") from None
    except tomllib.TOMLDecodeError as e:
        raise MinivmError(f"{path} is not valid TOML: {e}", hint="fix the file") from None


def flavours(folder: Path) -> tuple[list[str], str]:
    """The flavours ``kit.toml`` describes, and the default one."""
    path, data = _read_toml(folder)
    table = data.get("flavours")
    if not isinstance(table, dict) or not table:
        raise MinivmError(f"{path} lacks the table 'flavours'",
                          hint="describe each kernel flavour in a [flavours.NAME] table")
    default = str(data.get("default", next(iter(table))))
    if default not in table:
        raise MinivmError(f"{path}: default flavour {default!r} is not one of "
                          f"{', '.join(table)}", hint="fix `default`")
    return list(table), default


def load_config(folder: Path, flavour: str | None = None,
                platform: Platform | None = None) -> KitConfig:
    """Read and check one flavour (default: kit.toml's ``default``) of ``kit.toml``, for
    ``platform`` (default: the host's)."""
    platform = platform or host()
    path, data = _read_toml(folder)
    if "base" not in data:
        raise MinivmError(f"{path} lacks the key 'base'",
                          hint="it needs `base`, `default` and a [flavours.NAME] table each")
    names, default = flavours(folder)
    name = flavour or default
    if name not in names:
        raise MinivmError(f"no kernel flavour {name!r} in {path}",
                          hint=f"choose one of: {', '.join(names)}")
    table = data["flavours"][name]
    where = f"{path} [flavours.{name}]"
    try:
        config = KitConfig(
            base=str(data["base"]), package=str(table["package"]), flavour=name,
            recipe=str(table.get("recipe", name)),
            initramfs_modules=tuple(map(str, table.get("initramfs_modules", []))),
            boot_modules=tuple(map(str, table.get("boot_modules", []))),
            async_modules=tuple(map(str, table.get("async_modules", []))),
            blacklist=tuple(map(str, table.get("blacklist", []))),
            compression=str(table.get("compression", "gzip")),
            module_disk=bool(table.get("module_disk", True)),
            platform=platform, settings=cache.dump(table),
        )
    except KeyError as e:
        raise MinivmError(f"{where} lacks the key {e.args[0]!r}",
                          hint="each flavour needs at least `package`") from None
    if config.compression not in initramfs.COMPRESSIONS:
        raise MinivmError(f"{where}: compression {config.compression!r} is not one of "
                          f"{', '.join(initramfs.COMPRESSIONS)}", hint="fix the file")
    if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]*", config.package):
        raise MinivmError(f"{where}: {config.package!r} is not a Debian package name",
                          hint="fix `package`")
    recipe = folder / config.recipe
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config.recipe) \
            or not (recipe / "Dockerfile").is_file():
        raise MinivmError(f"{where}: recipe {config.recipe!r} is not a folder of {folder} "
                          "with a Dockerfile", hint="fix `recipe`")
    arches = table.get("platforms", [AMD64.arch])
    if not isinstance(arches, list) or platform.arch not in arches:
        raise MinivmError(f"kernel flavour {name!r} is not built for {platform.text}",
                          hint=f"it builds for {', '.join(f'linux/{a}' for a in arches)}; "
                               "choose another --flavour or --platform")
    if not (recipe / config.dockerfile).is_file():
        raise MinivmError(f"{where}: no {config.dockerfile} in {recipe} for {platform.text}",
                          hint="add it, or remove the platform from `platforms`")
    return config


def cache_key(source: Path, config: KitConfig, base_id: str) -> str:
    """The flavour's key: its settings, its platform, its recipe files (those of other
    platforms left out), the shared files, the base image."""
    shared = {name: file_record(source / name).md5 for name in SHARED_FILES
              if (source / name).is_file()}
    others = set(PLATFORMS) - {config.platform.arch}
    return cache.key(flavour=config.flavour, settings=json.loads(config.settings),
                     base=base_id, platform=config.platform.arch, shared=shared,
                     recipe=sha256_tree(source / config.recipe, exclude=others))


def kits_dir() -> Path:
    """Where kits live: the user's cache folder, shared by every project."""
    return cache_dir() / "kernel"


def current_link(platform: Platform | None = None) -> str:
    """The name of the link to the current kit of ``platform`` (default: the host's)."""
    return f"current-{(platform or host()).arch}"


def current(platform: Platform | None = None) -> Kit | None:
    """The kit ``<cache>/kernel/current-<arch>`` points at, if it is there and whole."""
    folder = kits_dir() / current_link(platform)
    manifest = _load_manifest(folder)
    return Kit(folder.resolve(), manifest, cached=True) if manifest and _whole(
        folder, manifest) else None


def build(*, reporter: Reporter, force: bool = False, source: Path | None = None,
          output_root: Path | None = None, flavour: str | None = None,
          platform: Platform | None = None, make_current: bool = True,
          docker_cache: bool = True) -> Kit:
    """Build the kernel kit of ``flavour`` (default: kit.toml's) for ``platform`` (default:
    the host's), or reuse the one built from the same inputs; either way it becomes the
    platform's current kit (unless ``make_current`` is false). ``docker_cache=False`` runs
    every step of the recipe again (a cold build)."""
    source = source or kernel_dir()
    output_root = output_root or kits_dir()
    config = load_config(source, flavour, platform)
    label = f"{config.flavour}, {config.platform.text}"
    with reporter.stage("check", "Checking the kernel kit inputs"):
        client = engine.connect()
        base_id = engine.resolve_image(client, config.base, reporter=reporter)
        key = cache_key(source, config, base_id)
    with _sole_builder(output_root, key, reporter):
        if not force and (kit := _find_cached(output_root, key)):
            if make_current:
                _point_current(output_root, kit.folder, config.platform)
            reporter.info(f"kernel kit {kit.kernel_version} ({label}) is up to date: "
                          f"{kit.folder} "
                          "(nothing changed; --force rebuilds it)")
            return Kit(kit.folder, kit.manifest, cached=True, seconds=reporter.seconds)
        try:
            return _build(client, config, source, output_root, key, base_id, reporter,
                          make_current, docker_cache)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                free = shutil.disk_usage(output_root if output_root.exists() else "/").free
                raise MinivmError(f"disk full while building the kernel kit in {output_root} "
                                  f"({free >> 20} MiB free)",
                                  hint="free some space, or point MINIVM_BUILD_DIR elsewhere"
                                  ) from None
            raise


@contextmanager
def _sole_builder(output_root: Path, key: str, reporter: Reporter) -> Iterator[None]:
    """Hold the build lock of the kit ``key``: a second build of the same kit (another
    `minivm kernel build`, a test run beside a build) waits for the first and then finds
    the kit in the cache, instead of compiling it again beside it. The lock files live in
    ``<cache>/locks/``, not among the kits."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"kit-{key[:16]}").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            reporter.info("another minivm is building this kernel kit: waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(client: Any, config: KitConfig, source: Path, output_root: Path, key: str,
           base_id: str, reporter: Reporter, make_current: bool,
           docker_cache: bool = True) -> Kit:
    recipe = source / config.recipe
    with reporter.stage("fetch", f"Making the {config.flavour} kernel for "
                                 f"{config.platform.text} from {config.package} "
                                 f"(docker build of {recipe / config.dockerfile})"):
        image_id = _build_image(client, config, source, reporter, nocache=not docker_cache)
    output_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".work-", dir=output_root) as work_name:
        work = Path(work_name) / "kit"
        with reporter.stage("export", "Reading the kernel, modules and tools from the image"), \
                reporter.bytes("exported") as advance, \
                engine.exported_filesystem(client, image_id, on_bytes=advance) as stream:
            _extract_kit(stream, work, recipe)
        kver = _kernel_version(work)
        timestamp = _timestamp(work, kver)
        folder = output_root / f"{kver}-{key[:12]}"
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            files: dict[str, Path] = {}
            files["kernel"] = tmp / f"vmlinuz-{kver}"
            shutil.copyfile(work / f"vmlinuz-{kver}", files["kernel"])
            if (work / "config").is_file():  # a compiled kernel's configuration, for reference
                shutil.copyfile(work / "config", tmp / f"config-{kver}")
            with reporter.stage("initramfs", "Writing the initramfs"):
                files["initrd"] = tmp / f"initrd-{kver}-{key[:12]}.img"
                selection = write_initramfs(work, kver, config, source, files["initrd"],
                                            timestamp=timestamp, reporter=reporter)
            if config.module_disk:
                with reporter.stage("modules", "Writing the module disk"):
                    files["modules"] = tmp / f"modules-{kver}-{key[:12]}.qcow2"
                    write_module_disk(work / "modules", kver, files["modules"],
                                      timestamp=timestamp, reporter=reporter)
            manifest = Manifest(
                key=key, minivm=__version__, kernel_version=kver, flavour=config.flavour,
                base_ref=config.base, base_id=base_id, package=config.package,
                packages=tuple(_packages(work)), compression=config.compression,
                timestamp=timestamp, initramfs_modules=tuple(sorted(selection.names)),
                boot_modules=tuple(config.boot_modules),
                files={role: KitFile.of(p) for role, p in files.items()},
                arch=config.platform.arch)
            atomic_write_bytes(tmp / MANIFEST, _dump(manifest.to_json()))
    if make_current:
        _point_current(output_root, folder, config.platform)
    reporter.info(f"kernel kit {kver} ({config.flavour}, {config.platform.text}) written to "
                  f"{folder}")
    if removed := prune(output_root, keep=KEEP_KITS):
        reporter.info(f"  removed {len(removed)} older kit(s): {', '.join(removed)}")
    return Kit(folder, manifest, cached=False, seconds=reporter.seconds)


def _build_image(client: Any, config: KitConfig, source: Path, reporter: Reporter, *,
                 nocache: bool = False) -> str:
    try:
        return engine.build_image(client, source / config.recipe, reporter=reporter,
                                  dockerfile=config.dockerfile,
                                  buildargs={"BASE": config.base,
                                             "KERNEL_PACKAGE": config.package},
                                  tag=f"minivm-kernel-{config.platform.named(config.flavour)}"
                                      ":latest",
                                  nocache=nocache)
    except MinivmError as e:
        text = str(e)
        if "Unable to locate package" in text or "has no installation candidate" in text:
            raise MinivmError(
                f"kernel package {config.package!r} not found by apt in {config.base}",
                hint=f"check `package` in {source / 'kit.toml'}") from None
        apt = re.findall(r"(E: [^|]+)", text)
        if apt:
            raise MinivmError(f"fetching {config.package} failed: {apt[-1].strip()}",
                              hint="check the network and the apt sources of "
                                   f"{config.base}") from None
        raise


def _extract_kit(stream: Any, work: Path, recipe: Path) -> None:
    """Write the image's ``/kit`` folder into ``work`` (regular files and folders only)."""
    guard = SymlinkGuard("kernel image export")
    work.mkdir(parents=True)
    for info, data in read_entries(stream, where="kernel image export"):
        if not info.name.startswith(KIT_PREFIX):
            continue
        guard.check(info)
        target = work / info.name[len(KIT_PREFIX):]
        if info.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif info.isreg() and data is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as f:
                shutil.copyfileobj(data, f, 1 << 20)
            os.chmod(target, info.mode & 0o755)
            os.utime(target, (info.mtime, info.mtime))
        elif info.issym():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(info.linkname, target)
    for needed in ("busybox", "busybox.links", "e2fsck", "modules"):
        if not (work / needed).exists():
            raise MinivmError(f"the kernel image has no /kit/{needed}",
                              hint=f"{recipe / 'Dockerfile'} must write it; see its header")


def _kernel_version(work: Path) -> str:
    versions = sorted(p.name for p in (work / "modules").iterdir() if p.is_dir())
    if len(versions) != 1:
        raise MinivmError(f"expected one kernel version in the package, found {versions}",
                          hint="name a package holding one kernel in kernel/kit.toml")
    kver = versions[0]
    if not (work / f"vmlinuz-{kver}").is_file():
        raise MinivmError(f"the package has modules for {kver} but no vmlinuz-{kver}")
    return kver


def _timestamp(work: Path, kver: str) -> int:
    """The package's own date (mtime of a file it ships): the time every output carries."""
    return int((work / "modules" / kver / "modules.builtin").stat().st_mtime)


def _packages(work: Path) -> list[str]:
    return [line for line in (work / "packages").read_text().splitlines() if line.strip()]


def write_initramfs(work: Path, kver: str, config: KitConfig, source: Path, output: Path, *,
                    timestamp: int, reporter: Reporter) -> kmod.Selection:
    """The initramfs: busybox and its applet links, e2fsck, the init, the chosen modules."""
    tree = initramfs.Tree()
    for folder in ("dev", "proc", "sys", "newroot", "root", "tmp", "run", "etc",
                   f"lib/modules/{kver}"):
        tree.dir(folder)
    tree.char_device("dev/console", 5, 1)
    tree.char_device("dev/null", 1, 3, mode=0o666)
    tree.file("bin/busybox", (work / "busybox").read_bytes(), mode=0o755)
    for link in (work / "busybox.links").read_text().split():
        if link.strip("/") != "bin/busybox":
            tree.symlink(link, "/bin/busybox")
    # Compressed apart (see kernel/e2fsck): inflating it cost every boot ~0.03 s under TCG.
    e2fsck = (work / "e2fsck").read_bytes()
    # The dictionary no larger than e2fsck: xz -9's 64 MiB is more than a 96 MB VM can give.
    tree.file("lib/minivm/e2fsck.xz", initramfs.xz(
        e2fsck, dict_size=1 << max(12, (len(e2fsck) - 1).bit_length()), x86=False))
    tree.file("sbin/e2fsck", (source / "e2fsck").read_bytes(), mode=0o755)
    for alias in ("fsck.ext2", "fsck.ext3", "fsck.ext4"):
        tree.symlink(f"sbin/{alias}", "e2fsck")
    tree.file("init", (source / "init").read_bytes(), mode=0o755)
    tree.symlink("etc/mtab", "/proc/mounts")
    # kernel/init mounts these with one `mount -a` (a process costs ~5 ms under TCG).
    tree.file("etc/fstab", b"proc /proc proc nosuid,nodev,noexec 0 0\n"
              b"sysfs /sys sysfs nosuid,nodev,noexec 0 0\n"
              b"devtmpfs /dev devtmpfs nosuid,mode=0755 0 0\n")
    tree.file("etc/e2fsck.conf", b"[options]\n\tbroken_system_clock = true\n")

    modules_dir = work / "modules" / kver
    deps = kmod.parse_modules_dep((modules_dir / "modules.dep").read_text())
    builtin = kmod.parse_builtin((modules_dir / "modules.builtin").read_text())
    selection = kmod.closure(config.initramfs_modules, deps, builtin)
    skipped = [*selection.missing, *(f"{n} (built in)" for n in selection.builtin)]
    if skipped:
        reporter.info(f"  not in this kernel as modules, skipped: {', '.join(skipped)}")
    for rel in sorted(selection.paths):
        tree.file(f"lib/modules/{kver}/{rel}", (modules_dir / rel).read_bytes())
    for name, data in kmod.subset_index(modules_dir, selection).items():
        tree.file(f"lib/modules/{kver}/{name}", data)
    boot = [m for m in config.boot_modules if m.replace("-", "_") in selection.names]
    tree.file("etc/modules-boot", "".join(f"{m}\n" for m in boot).encode())
    tree.file("etc/modprobe.d/minivm.conf", "".join(
        [f"options {m} async_probe=1\n" for m in config.async_modules]
        + [f"blacklist {m}\n" for m in config.blacklist]).encode())
    # Kept from coldplug until kernel/init empties this file (unblock_late).
    tree.file("etc/modprobe.d/minivm-late.conf", "".join(
        f"blacklist {m}\n" for m in config.async_modules if m not in config.boot_modules).encode())
    size = initramfs.write(tree, output, compression=config.compression, mtime=timestamp)
    reporter.info(f"  {len(selection.paths)} modules, {len(tree)} entries, "
                  f"{size / 1e6:.2f} MB ({config.compression})")
    return selection


def module_disk_entries(modules_root: Path, kver: str, timestamp: int) -> Iterator[Any]:
    """``<kver>/...`` as tar entries: sorted, owner 0:0, one mtime (the disk is mounted on
    ``/lib/modules``)."""
    top = modules_root / kver
    paths = [top, *sorted(top.rglob("*"))]
    for path in paths:
        name = path.relative_to(modules_root).as_posix()
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid, info.uname, info.gname = timestamp, 0, 0, "", ""
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
            yield info, None
        elif stat.S_ISDIR(st.st_mode):
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            yield info, None
        else:
            info.size, info.mode = st.st_size, 0o644
            with path.open("rb") as f:
                yield info, f


def write_module_disk(modules_root: Path, kver: str, output: Path, *, timestamp: int,
                      reporter: Reporter) -> None:
    """Every module of the kernel, depmod-ed, in an ext4 labelled minivm-modules (QCOW2)."""
    from minivm.image import disk

    disk.write_qcow2(module_disk_entries(modules_root, kver, timestamp), output,
                     label=MODULES_LABEL, uuid=uuid.uuid5(UUID_NAMESPACE, f"modules:{kver}"),
                     timestamp=timestamp, reporter=reporter)


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def prune(output_root: Path, *, keep: int) -> list[str]:
    """Remove all but the ``keep`` most recently written kits of each flavour and platform
    (the current ones always stay); return the names of the folders removed. Only folders
    holding a kit manifest go."""
    current = {link.resolve() for link in output_root.glob("current-*")}
    kits = [f for f in output_root.iterdir() if not f.is_symlink() and f.is_dir()
            and not f.name.startswith(".") and (f / MANIFEST).is_file()]
    kits.sort(key=lambda f: ((f / MANIFEST).stat().st_mtime, f.name), reverse=True)
    removed, seen = [], dict[tuple[str, str], int]()
    for folder in kits:
        manifest = _load_manifest(folder)
        kind = (manifest.flavour, manifest.arch) if manifest else ("cloud", AMD64.arch)
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] > keep and folder.resolve() not in current:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _load_manifest(folder: Path) -> Manifest | None:
    """The kit's manifest; None when there is none or it is not one."""
    try:
        return Manifest.from_json(json.loads((folder / MANIFEST).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _whole(folder: Path, manifest: Manifest) -> bool:
    for record in manifest.files.values():
        path = folder / record.name
        if not path.is_file() or path.stat().st_size != record.size:
            return False
    return True


def _find_cached(output_root: Path, key: str) -> Kit | None:
    if not output_root.is_dir():
        return None
    for folder in sorted(output_root.glob(f"*-{key[:12]}")):
        manifest = _load_manifest(folder)
        if manifest and manifest.key == key and _whole(folder, manifest):
            return Kit(folder, manifest, cached=True)
    return None


def _point_current(output_root: Path, folder: Path, platform: Platform) -> None:
    """Make the platform's current link point at ``folder``, atomically (a new link renamed
    over the old)."""
    link = output_root / current_link(platform)
    if link.is_symlink() and os.readlink(link) == folder.name:
        return
    tmp = output_root / f".current.tmp-{os.getpid()}"
    remove(tmp)
    os.symlink(folder.name, tmp)
    os.replace(tmp, link)

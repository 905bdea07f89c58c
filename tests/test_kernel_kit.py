"""The kernel kit: build, cache, reproducibility, errors, and real boots under TCG."""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vm import VM, Disk, busybox_root_disk, qemu_argv, scsi_disk_at, size_at_target

from minivm.errors import MinivmError
from minivm.fsutil import md5_file
from minivm.kit import initramfs, kernel
from minivm.paths import kernel_dir
from minivm.ui import QUIET

pytestmark = [pytest.mark.engine]

BOOT_TIMEOUT = 120  # TCG on a shared 2-core machine: a boot takes 2-5 s alone, more under load

ROOT_INIT = r"""#!/bin/sh
echo "ROOT-INIT pid=$$ argc=$#"
for a in "$@"; do echo "ARG<$a>"; done
while read -r dev mnt fs opts _; do
    case "$mnt" in /|/lib/modules|/usr/lib/modules) echo "MOUNT $dev $mnt $fs ${opts%%,*}" ;; esac
done < /proc/mounts
echo "LOADED $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
echo "NET $(ls /sys/class/net | tr '\n' ' ')"
echo "INPUT $(ls /dev/input 2>/dev/null | tr '\n' ' ')"
if modprobe vfat && grep -q '^vfat ' /proc/modules; then echo MODPROBE-OK; fi
echo ROOT-DONE
poweroff -f
"""


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kit-disks")


@pytest.fixture(scope="module")
def root_disk(disks: Path) -> Path:
    return busybox_root_disk(disks / "root.img", init=ROOT_INIT,
                             files={"etc/rootmark": "this-is-the-test-root\n"})


def boot(kit: kernel.Kit, root: Path | None, append: str, *, interface: str = "scsi",
         modules: bool = True, snapshot: bool = True, extra: list[str] | None = None,
         memory: int = 256) -> VM:
    disks = [Disk(root, interface, "raw", snapshot=snapshot)] if root else []
    if modules and kit.modules:
        disks.append(Disk(kit.modules, interface, snapshot=True))
    return VM(qemu_argv(kernel=kit.kernel, initrd=kit.initrd,
                        append=f"console=ttyS0 {append}", disks=disks, extra=extra,
                        memory=memory))


def shell_answers(vm: VM, prompt: str = r"\(initramfs\) .*# ") -> None:
    """The recovery shell is there and works; then power off."""
    vm.expect(prompt, 30)
    vm.sendline("echo ALIVE-$((2+3))")
    vm.expect("ALIVE-5", 30)
    vm.sendline("poweroff -f")


def finish(vm: VM) -> str:
    assert vm.wait_exit(timeout=60) == 0
    assert "Kernel panic" not in vm.output
    return vm.output


# --- the kit itself --------------------------------------------------------------------------

def test_kit_files_sizes_and_manifest(kit: kernel.Kit):
    manifest = json.loads((kit.folder / "manifest.json").read_text())
    kver = manifest["kernel_version"]
    assert kit.kernel.name == f"vmlinuz-{kver}"
    assert kit.folder.name.startswith(kver)
    for record in manifest["files"].values():
        path = kit.folder / record["name"]
        assert path.stat().st_size == record["size"] and md5_file(path) == record["md5"]
    assert kit.initrd.stat().st_size <= 2_500_000, "initramfs over the 2.5 MB goal"
    assert kit.modules and kit.modules.stat().st_size <= 26_000_000, "module disk over 26 MB"
    assert any(p.startswith("linux-image-") for p in manifest["packages"])
    assert (kernel.kits_dir() / "current").resolve() == kit.folder.resolve()


def test_initramfs_contents(kit: kernel.Kit):
    entries = {e.path: e for e in initramfs.read_cpio(
        initramfs.decompress(kit.initrd.read_bytes()))}
    kver = kit.kernel_version
    for needed in ("init", "bin/busybox", "sbin/e2fsck", "sbin/fsck.ext4", "bin/sh",
                   "sbin/switch_root", "sbin/modprobe", "dev/console",
                   f"lib/modules/{kver}/modules.dep", f"lib/modules/{kver}/modules.alias"):
        assert needed in entries, needed
    assert entries["init"].data == (kernel_dir() / "init").read_bytes()
    e2fsck = lzma.decompress(entries["lib/minivm/e2fsck.xz"].data)
    assert e2fsck.startswith(b"\x7fELF") and b"e2fsck" in e2fsck
    modules = {Path(p).name for p in entries if p.endswith(".ko")}
    assert {"virtio_blk.ko", "virtio_scsi.ko", "sd_mod.ko", "ata_piix.ko", "virtio_pci.ko",
            "button.ko", "evdev.ko"} <= modules
    assert "vfat.ko" not in modules  # only what reaches the root; the rest is on the disk
    dep = entries[f"lib/modules/{kver}/modules.dep"].data.decode()
    listed = {p for line in dep.splitlines() for p in re.split(r"[:\s]+", line) if p}
    assert {Path(p).name for p in listed} == modules  # closed over modules.dep, nothing more


def test_cached_build_is_quick_and_says_so(kit: kernel.Kit, capsys):
    from minivm.ui import Reporter

    start = time.monotonic()
    again = kernel.build(reporter=Reporter())
    elapsed = time.monotonic() - start
    assert again.cached and again.folder == kit.folder
    assert elapsed < 1.0, f"cached kit build took {elapsed:.2f} s"
    assert "up to date" in capsys.readouterr().err


def test_cli_json(kit: kernel.Kit):
    proc = subprocess.run([str(Path(sys.executable).parent / "minivm"), "kernel", "build",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["cached"] is True and data["kernel_version"] == kit.kernel_version
    assert set(data["files"]) == {"kernel", "initrd", "modules"}
    assert all(len(f["md5"]) == 32 and f["size"] > 0 for f in data["files"].values())
    assert "check" in data["seconds"]


def test_rebuild_is_byte_identical(kit: kernel.Kit, tmp_path: Path):
    again = kernel.build(reporter=QUIET, force=True, output_root=tmp_path / "kits")
    assert not again.cached
    for role in ("kernel", "initrd", "modules"):
        assert again.manifest["files"][role]["md5"] == kit.manifest["files"][role]["md5"], role


def test_old_kits_are_pruned(tmp_path: Path):
    """After a build, only the newest kits stay; current, hidden work folders and anything
    that is not a kit are left alone."""
    def make_kit(name: str, mtime: int) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "vmlinuz").write_bytes(b"k")
        (folder / kernel.MANIFEST).write_text("{}")
        os.utime(folder / kernel.MANIFEST, (mtime, mtime))
        return folder

    for i in range(5):
        make_kit(f"6.1-{i:012x}", 1_700_000_000 + i)
    (tmp_path / "current").symlink_to("6.1-000000000000")  # the oldest, but current
    (tmp_path / ".work-x").mkdir()
    (tmp_path / "notes").mkdir()
    removed = kernel.prune(tmp_path, keep=3)
    assert sorted(removed) == ["6.1-000000000001"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".work-x", "6.1-000000000000", "6.1-000000000002", "6.1-000000000003",
                    "6.1-000000000004", "current", "notes"]
    assert kernel.prune(tmp_path, keep=3) == []


def test_engine_unreachable(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(MinivmError, match="cannot reach the Docker engine"):
        kernel.build(reporter=QUIET, output_root=tmp_path / "kits")
    assert not (tmp_path / "kits").exists()


def test_unknown_package_is_named(tmp_path: Path):
    source = tmp_path / "kernel"
    shutil.copytree(kernel_dir(), source)
    toml = source / "kit.toml"
    toml.write_text(toml.read_text().replace('package = "linux-image-cloud-amd64"',
                                             'package = "linux-image-minivm-nonexistent"'))
    with pytest.raises(MinivmError, match=r"linux-image-minivm-nonexistent.* not found"):
        kernel.build(reporter=QUIET, source=source, output_root=tmp_path / "kits")
    assert not list((tmp_path / "kits").glob("6*"))  # nothing half-written


def test_bad_config_is_one_line(tmp_path: Path):
    (tmp_path / "kit.toml").write_text('package = "x"\n')
    with pytest.raises(MinivmError, match="lacks the key 'base'"):
        kernel.load_config(tmp_path)


# --- boots ---------------------------------------------------------------------------------

@pytest.mark.boot
@pytest.mark.parametrize("interface,device", [("scsi", "/dev/sda"), ("virtio", "/dev/vda")])
def test_boot_reaches_root_init(kit, root_disk, interface, device):
    nic = ["-device", "vmxnet3,netdev=n0", "-netdev", "user,id=n0"]  # its driver: module disk
    with boot(kit, root_disk, 'root=LABEL=minivm-root rw quiet -- one "two words"',
              interface=interface, extra=nic) as vm:
        vm.expect(r"ROOT-INIT pid=1 argc=2", BOOT_TIMEOUT)
        vm.expect("ROOT-DONE", 60)
        out = finish(vm)
    assert "ARG<one>\nARG<two words>" in out
    assert f"MOUNT {device} / ext4 rw" in out
    assert re.search(r"MOUNT /dev/[sv]db /lib/modules ext4 ro", out)
    loaded = re.search(r"LOADED (.*)", out).group(1).split()
    assert {"button", "evdev"} <= set(loaded)  # the power button works for the root's init
    assert "vmxnet3" in loaded and "eth0" in re.search(r"NET (.*)", out).group(1)
    assert "event" in re.search(r"INPUT (.*)", out).group(1)
    assert "MODPROBE-OK" in out  # a module that is not in the initramfs, from the module disk
    assert "minivm:" not in out  # quiet: no chatter when all is well


@pytest.mark.boot
@pytest.mark.parametrize("init_path", ["sbin/init", ".minivm/init"])
def test_what_the_initramfs_leaves_to_the_minivm_init(kit, disks, init_path):
    """For the MiniVM init (it loads the rest itself, from the module disk, and scans every
    SCSI target while the main process starts) the initramfs loads only what reaches the root,
    scans targets 0-3 only, and leaves the IDE drivers alone; any other init gets it all
    before it starts."""
    script = ROOT_INIT.replace("echo ROOT-DONE",
                               f'echo "TARGET5 <$({size_at_target(5)})>"\necho ROOT-DONE')
    root = busybox_root_disk(disks / f"root-{init_path.replace('/', '-')}.img", init=script,
                             init_path=init_path)
    nic = ["-device", "virtio-net-pci,netdev=n0", "-netdev", "user,id=n0"]
    with boot(kit, root, "root=LABEL=minivm-root rw quiet",
              extra=scsi_disk_at(disks / "extra.img", 5) + nic) as vm:
        vm.expect("ROOT-DONE", BOOT_TIMEOUT)
        out = finish(vm)
    loaded = set(re.search(r"LOADED (.*)", out).group(1).split())
    left = {"ata_piix", "libata"}
    assert {"virtio_scsi", "sd_mod", "virtio_net", "button"} <= loaded
    if init_path == ".minivm/init":
        assert not left & loaded
        assert "TARGET5 <>" in out
    else:
        assert left <= loaded
        assert "TARGET5 <8192>" in out  # the full scan found it
    assert re.search(r"MOUNT /dev/sd[a-z] /lib/modules ext4 ro", out)


@pytest.mark.boot
def test_ide_root_with_the_minivm_init(kit, disks):
    """A root on IDE: its drivers are among those left to the MiniVM init, and are loaded
    as soon as the root is not found without them."""
    root = busybox_root_disk(disks / "root-ide.img", init=ROOT_INIT, init_path=".minivm/init")
    with boot(kit, root, "root=LABEL=minivm-root rw quiet", interface="ide") as vm:
        vm.expect("ROOT-DONE", BOOT_TIMEOUT)
        out = finish(vm)
    assert re.search(r"MOUNT /dev/sd[ab] / ext4 rw", out) and "ata_piix" in out, out[-3000:]


@pytest.mark.boot
def test_single_gives_shell_before_root_then_resumes(kit, root_disk):
    with boot(kit, root_disk, "root=/dev/sda rw single") as vm:
        vm.expect(r"single-user shell before mounting the root \(/dev/sda\)", BOOT_TIMEOUT)
        vm.expect(r"\(initramfs\) .*# ", 30)
        vm.sendline("grep -q ' /newroot ' /proc/mounts && echo ROOT-IS-MOUNTED || "
                    "echo ROOT-NOT-MOUNTED-$((40+2))")
        vm.expect("ROOT-NOT-MOUNTED-42", 30)
        vm.sendline("exit")
        vm.expect("ROOT-INIT pid=1", BOOT_TIMEOUT)
        finish(vm)


@pytest.mark.boot
def test_init_sh_is_a_shell_on_the_root(kit, root_disk):
    with boot(kit, root_disk, "root=LABEL=minivm-root ro init=/bin/sh") as vm:
        vm.expect(r"starting /bin/sh", BOOT_TIMEOUT)
        vm.expect(r"# ", 30)
        vm.sendline("echo PID-$$; cat /etc/rootmark")
        vm.expect("PID-1", 30)
        vm.expect("this-is-the-test-root", 30)
        vm.sendline("poweroff -f")
        out = finish(vm)
    assert "ROOT-INIT" not in out


@pytest.mark.boot
def test_missing_root_gives_message_and_shell(kit):
    with boot(kit, None, "root=LABEL=nothere rootwait=3 rw") as vm:
        vm.expect(r"root device LABEL=nothere did not appear within 3 s", BOOT_TIMEOUT)
        shell_answers(vm)
        finish(vm)


def _debugfs(image: Path, commands: str) -> None:
    subprocess.run(["debugfs", "-w", "-f", "-", str(image)], input=commands.encode(),
                   check=True, capture_output=True)


@pytest.mark.boot
def test_corrupt_root_gives_message_and_shell(kit, disks):
    bad = busybox_root_disk(disks / "bad.img", init=ROOT_INIT)
    _debugfs(bad, "clri <2>\nssv state 0\n")  # no root directory: e2fsck -p must give up
    with boot(kit, bad, "root=/dev/sda rw", snapshot=False) as vm:
        vm.expect(r"e2fsck cannot repair the filesystem on /dev/sda", BOOT_TIMEOUT)
        shell_answers(vm)
        finish(vm)


@pytest.mark.boot
def test_fixable_root_is_repaired_and_reported(kit, disks):
    fixable = busybox_root_disk(disks / "fixable.img", init=ROOT_INIT)
    _debugfs(fixable, "sif /etc links_count 9\nssv state 0\n")
    # With the RAM of the smallest shipped appliance (96 MB): the e2fsck in the initramfs
    # must fit (its xz dictionary once asked for 64 MiB, and a 96 MB node hung unpacking it).
    with boot(kit, fixable, "root=LABEL=minivm-root rw quiet", snapshot=False,
              memory=96) as vm:
        vm.expect(r"e2fsck fixed errors on /dev/sda", BOOT_TIMEOUT)
        vm.expect("ROOT-INIT pid=1", BOOT_TIMEOUT)
        finish(vm)


@pytest.mark.boot
@pytest.mark.parametrize("lib,mode,mounted", [
    ("link", "rw", "/usr/lib/modules"),    # /lib -> usr/lib: mount point made under usr/lib
    ("abslink", "rw", "/usr/lib/modules"),  # /lib -> /usr/lib resolves inside the root
    ("none", "ro", None),                   # read-only, no /lib: boots, says so
])
def test_lib_layouts(kit, disks, lib, mode, mounted):
    root = busybox_root_disk(disks / f"root-{lib}.img", init=ROOT_INIT, lib=lib)
    with boot(kit, root, f"root=LABEL=minivm-root {mode}") as vm:
        vm.expect("ROOT-INIT pid=1", BOOT_TIMEOUT)
        out = finish(vm)
    if mounted:
        assert re.search(rf"MOUNT /dev/sdb {mounted} ext4 ro", out)
        assert "MODPROBE-OK" in out
    else:
        assert "module disk left unmounted" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_is_one_line_and_leaves_nothing(tmp_path: Path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(MinivmError, match="disk full"):
            kernel.build(reporter=QUIET, force=True, output_root=small / "kits")
        assert [p.name for p in (small / "kits").iterdir()] == []  # no partial kit, no temp
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)

"""Module selection: dependency closure over modules.dep and the subset index files."""

from __future__ import annotations

from pathlib import Path

import pytest

from minivm.kit import kmod

V = "kernel/drivers/virtio"
DEP = f"""\
kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/scsi/scsi_mod.ko {V}/virtio_ring.ko {V}/virtio.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
{V}/virtio_ring.ko: {V}/virtio.ko
{V}/virtio.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: {V}/virtio_ring.ko {V}/virtio.ko
kernel/drivers/net/e1000/e1000.ko:
"""
ALIAS = """\
# Aliases extracted from modules themselves.
alias virtio:d00000008v* virtio_scsi
alias virtio:d00000004v* virtio_rng
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
"""


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    (tmp_path / "modules.dep").write_text(DEP)
    (tmp_path / "modules.alias").write_text(ALIAS)
    (tmp_path / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    (tmp_path / "modules.softdep").write_text("# Soft dependencies\nsoftdep virtio_scsi pre: "
                                              "crc32c\nsoftdep e1000 pre: foo\n")
    (tmp_path / "modules.order").write_text("\n".join(line.split(":")[0]
                                                      for line in DEP.splitlines()) + "\n")
    return tmp_path


def test_module_name():
    assert kmod.module_name("kernel/drivers/char/hw_random/virtio-rng.ko") == "virtio_rng"
    assert kmod.module_name("kernel/x/foo.ko.xz") == "foo"


def test_closure_follows_dependencies(modules_dir: Path):
    deps = kmod.parse_modules_dep(DEP)
    sel = kmod.closure(["virtio_scsi"], deps, kmod.parse_builtin("kernel/fs/ext4/ext4.ko\n"))
    assert sel.names == {"virtio_scsi", "scsi_mod", "scsi_common", "virtio_ring", "virtio"}
    assert "kernel/drivers/net/e1000/e1000.ko" not in sel.paths


def test_closure_reports_builtin_and_missing():
    deps = kmod.parse_modules_dep(DEP)
    sel = kmod.closure(["virtio-rng", "ext4", "ahci"], deps, {"ext4"})
    assert sel.names == {"virtio_rng", "virtio_ring", "virtio"}  # dash spelling accepted
    assert sel.builtin == ("ext4",) and sel.missing == ("ahci",)


def test_subset_index_keeps_only_chosen_modules(modules_dir: Path):
    sel = kmod.closure(["virtio_scsi"], kmod.parse_modules_dep(DEP))
    files = kmod.subset_index(modules_dir, sel)
    dep = files["modules.dep"].decode()
    assert "virtio_scsi.ko: kernel/drivers/scsi/scsi_mod.ko" in dep
    assert "e1000" not in dep and "virtio-rng" not in dep
    assert files["modules.alias"] == b"alias virtio:d00000008v* virtio_scsi\n"
    assert b"softdep virtio_scsi" in files["modules.softdep"]
    assert b"e1000" not in files["modules.softdep"]
    assert files["modules.builtin"] == b"kernel/fs/ext4/ext4.ko\n"
    order = files["modules.order"].decode().split()
    assert order == [p for p in order if p in sel.paths] and len(order) == 5
    # every dependency named in the subset is itself in the subset
    for line in dep.splitlines():
        for needed in line.split(":")[1].split():
            assert needed in sel.paths


def test_real_kernel_tree():
    """The host's own kernel modules (the same package the kit uses)."""
    trees = sorted(Path("/lib/modules").glob("*/modules.dep"))
    if not trees:
        pytest.skip("no kernel modules installed on this host")
    deps = kmod.parse_modules_dep(trees[-1].read_text())
    sel = kmod.closure(["virtio_scsi", "sd_mod"], deps)
    assert {"virtio_scsi", "sd_mod", "scsi_mod", "virtio", "virtio_ring"} <= sel.names
    assert not sel.missing

"""The rootless disk backend: libguestfs makes the ext4 and unpacks the tar in its appliance."""

from __future__ import annotations

import os
import uuid as uuidlib
from pathlib import Path
from typing import Any

from minivm import hostfacts
from minivm.errors import MinivmError

DEVICE = "/dev/sda"
INSTALL_HINT = ("install libguestfs with `sudo apt-get install libguestfs-tools python3-guestfs "
                "linux-image-cloud-amd64` and use a venv made with --system-site-packages")


def handle() -> Any:
    """A new guestfs handle (direct backend), or a MinivmError saying what is missing."""
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    if "LIBGUESTFS_BACKEND_SETTINGS" not in os.environ and not hostfacts.host_linux_under_kvm()[0]:
        os.environ["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"  # KVM would hang its appliance
    try:
        import guestfs
    except ImportError:
        raise MinivmError("libguestfs' Python bindings (guestfs) are not importable",
                          hint=INSTALL_HINT) from None
    return guestfs.GuestFS(python_return_dict=True)


def make_filesystem(raw: Path, tar: Path, *, label: str, uuid: uuidlib.UUID, inodes: int) -> None:
    """Make an ext4 on the raw image ``raw`` and unpack ``tar`` into it, keeping xattrs."""
    g = handle()
    try:
        g.add_drive_opts(str(raw), format="raw", readonly=False)
        try:
            g.launch()
        except RuntimeError as e:
            raise MinivmError(f"libguestfs cannot start its appliance: {_first_line(e)}",
                              hint=INSTALL_HINT + "; a kernel must be in /boot") from None
        g.mke2fs(DEVICE, fstype="ext4", blocksize=4096, inodesize=256, label=label,
                 uuid=str(uuid), numberofinodes=inodes, reservedblockspercentage=1)
        g.mount(DEVICE, "/")
        g.tar_in(str(tar), "/", xattrs=True, acls=True)
        g.umount_all()
        g.shutdown()
    except RuntimeError as e:
        text = _first_line(e)
        if "No space left" in text:
            raise MinivmError("the filesystem is too small for the content (libguestfs)",
                              hint="give a larger --size") from None
        raise MinivmError(f"libguestfs failed: {text}") from None
    finally:
        g.close()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or ["no message"])[0]

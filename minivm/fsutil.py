"""Small file helpers: outputs that appear whole or not at all, and checksums."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    On any exception (Ctrl-C included) the temporary file or folder is removed.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    remove(tmp)
    try:
        yield tmp
        os.replace(tmp, final) if not final.is_dir() else _replace_dir(tmp, final)
    except BaseException:
        remove(tmp)
        raise


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, old)
    os.replace(tmp, final)
    remove(old)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def remove(path: Path) -> None:
    """Remove a file, link or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def md5_file(path: Path) -> str:
    """The md5 of a file, as GNS3 lists it (32 lowercase hex digits)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def sha256_tree(root: Path, *, exclude: Collection[str] = ()) -> str:
    """A digest of a folder's names, modes and contents (for cache keys); ``exclude`` names
    folders of ``root`` itself left out."""
    digest = hashlib.sha256()
    names: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"
                   and not (folder == str(root) and d in exclude)]
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        names += [prefix + n for n in dirs + files]
    for rel in sorted(names, key=lambda n: n.split("/")):  # the order Path sorting gives
        path = os.path.join(root, rel)
        st = os.lstat(path)
        digest.update(f"{rel}\0{st.st_mode:o}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            digest.update(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


@dataclass(frozen=True)
class FileRecord:
    """An output file: its path, size and md5 (as build.json keeps it and --json reports it)."""

    path: str
    size: int
    md5: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "md5": self.md5}

    @classmethod
    def from_json(cls, data: object) -> FileRecord:
        """TypeError when ``data`` is not one."""
        if not isinstance(data, dict):
            raise TypeError(f"a file record is an object, not {type(data).__name__}")
        path, size, md5 = data.get("path"), data.get("size"), data.get("md5", "")
        if not (isinstance(path, str) and isinstance(size, int) and isinstance(md5, str)):
            raise TypeError("a file record has a path, a size and an md5")
        return cls(path, size, md5)


def file_record(path: Path) -> FileRecord:
    """Path, size and md5 of an output file."""
    return FileRecord(str(path), path.stat().st_size, md5_file(path))


def plain_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name (one that can only name a file in its own
    folder, on any system: no separator, no dot folder, no control character), or None."""
    if not name:
        return "is empty"
    if "/" in name or "\\" in name:
        return "has a path separator (a plain file name is needed)"
    if name.startswith("."):
        return "starts with a dot (a plain file name is needed)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character (a plain file name is needed)"
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        return "is longer than 255 bytes"
    return None

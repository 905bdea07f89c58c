"""Make test images: Docker build contexts and hand-written `docker save` / OCI archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

from minivm.paths import images_dir

LONG_DIR = "/".join(["d" * 60] * 4)  # a 243-character path: beyond ustar's 100
UNICODE_NAME = "café-日本"
IMAGE_HOSTS = "127.0.0.1 localhost\n10.0.0.1 gateway\n"  # hidden by the engine's init layer

RICH_DOCKERFILE = f"""\
FROM minivm-test/busybox:latest
RUN mkdir -p /data/old && echo doomed > /data/doomed && echo old > /data/old/file \\
 && echo keep > /data/keep
RUN rm /data/doomed && rm -rf /data/old && mkdir /data/old && echo new > /data/old/new
RUN echo secret > /data/suid && chmod 4755 /data/suid \\
 && echo linked > /data/a && ln /data/a /data/b \\
 && mknod /data/null c 1 3 \\
 && mkdir -p /data/{LONG_DIR} && echo deep > /data/{LONG_DIR}/file \\
 && echo unicode > "/data/{UNICODE_NAME}" \\
 && ln -s keep /data/link \\
 && chown 1000:1000 /data/keep && touch -d '2001-02-03 04:05:06' /data/keep
COPY hello.txt /data/hello.txt
COPY hosts /etc/hosts
ENV FOO=bar
WORKDIR /data
USER 1000
EXPOSE 80/tcp
LABEL org.example.purpose="minivm test"
ENTRYPOINT ["/bin/echo"]
CMD ["hi", "there"]
"""


def rich_context(folder: Path) -> Path:
    """A context whose layers delete, replace, link and make special files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(RICH_DOCKERFILE)
    (folder / "hello.txt").write_text("hello from COPY\n")
    (folder / "hosts").write_text(IMAGE_HOSTS)
    return folder


ALPINE_LOOKALIKE = """\
# alpine-minivm's look-alike: its etc/ on a busybox userland (Alpine's mirror is unreachable
# here); the folders are those Alpine's ifupdown expects.
FROM minivm-test/busybox:latest
RUN mkdir -p /var /root /etc/network/if-pre-up.d /etc/network/if-up.d \\
    /etc/network/if-down.d /etc/network/if-post-down.d && ln -s /run /var/run
COPY etc /etc/
ENTRYPOINT ["/etc/init.sh"]
"""


# The same on a static busybox of another architecture: FROM
# scratch, so that no base image of that platform is needed; the RUN step runs through binfmt.
ALPINE_LOOKALIKE_FOREIGN = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-euc", "for a in $(busybox --list); do [ $a = busybox ] \\
 || busybox ln -s busybox /bin/$a; done; mkdir -p /etc /root /var /run /tmp \\
 /etc/network/if-pre-up.d /etc/network/if-up.d /etc/network/if-down.d \\
 /etc/network/if-post-down.d; chmod 1777 /tmp; ln -s /run /var/run; \\
 echo root:x:0:0:root:/root:/bin/sh > /etc/passwd; echo root:x:0: > /etc/group"]
COPY etc /etc/
ENTRYPOINT ["/etc/init.sh"]
"""


def alpine_lookalike(parent: Path, busybox: Path | None = None) -> Path:
    """A build context ``parent/alpine-minivm`` (named as the shipped image, so that its
    metadata applies): images/alpine-minivm's etc/ on the busybox base, or on ``busybox`` (a
    static busybox of another platform) from scratch."""
    context = parent / "alpine-minivm"
    if not (context / "Dockerfile").is_file():
        shutil.copytree(images_dir() / "alpine-minivm" / "etc", context / "etc", symlinks=True)
        if busybox:
            shutil.copyfile(busybox, context / "busybox")
            (context / "busybox").chmod(0o755)
        (context / "Dockerfile").write_text(ALPINE_LOOKALIKE_FOREIGN if busybox
                                            else ALPINE_LOOKALIKE)
    return context


def save_image(api, ref: str, target: Path) -> Path:
    """`docker save` through the Engine API (the classic layout, on this engine)."""
    with target.open("wb") as f:
        for chunk in api.get_image(ref):
            f.write(chunk)
    return target


# --- hand-written archives -------------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes]


def member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
           linkname: str = "", xattrs: dict[str, str] | None = None, mtime: int = 1_000_000_000,
           uid: int = 0) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname, info.uid = kind, mode, mtime, linkname, uid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    return info, data


def layer_tar(members: Sequence[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of ``members`` in this order (nothing checked: any name goes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


CONFIG = {"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
          "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}}


def classic_archive(target: Path, layers: Sequence[Sequence[Member]],
                    config: dict | None = None) -> Path:
    """A `docker save` archive in the classic layout (manifest.json, <id>/layer.tar)."""
    blobs = [layer_tar(layer) for layer in layers]
    cfg = json.dumps({**(config or CONFIG), "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]}
    }).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    names = [f"{hashlib.sha256(b).hexdigest()}/layer.tar" for b in blobs]
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["t:latest"], "Layers": names}])
    files = {cfg_name: cfg, "manifest.json": manifest.encode(),
             **dict(zip(names, blobs, strict=True))}
    _write_tar(target, files)
    return target


def oci_layout(target: Path, classic: Path, *, as_tar: bool, compress: bool = True) -> Path:
    """Re-pack a classic archive as an OCI image layout (a folder, or a tar like Docker 25+
    writes: OCI blobs plus a manifest.json naming them)."""
    with tarfile.open(classic) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]
        config = tar.extractfile(manifest["Config"]).read()
        layers = [tar.extractfile(name).read() for name in manifest["Layers"]]
    files: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        files[f"blobs/sha256/{digest}"] = data
        return f"sha256:{digest}"

    layer_descs = []
    for data in layers:
        packed = gzip.compress(data, mtime=0) if compress else data
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        layer_descs.append({"mediaType": media, "digest": blob(packed), "size": len(packed)})
    config_digest = blob(config)
    image_manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": layer_descs}).encode()
    manifest_digest = blob(image_manifest)
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": len(image_manifest)}]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    if as_tar:
        files["manifest.json"] = json.dumps([{
            "Config": "blobs/sha256/" + config_digest.split(":")[1], "RepoTags": [],
            "Layers": ["blobs/sha256/" + d["digest"].split(":")[1] for d in layer_descs]}]).encode()
        _write_tar(target, files)
    else:
        for name, data in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
    return target


def _write_tar(target: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(target, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

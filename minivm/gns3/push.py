"""Install an appliance bundle on a GNS3 server: its image files, then a QEMU template.

GNS3 3.0 has no API that takes a .gns3a file, so the template is made from the appliance's
``qemu`` section and the files of its first ``versions[]`` entry with ``POST /v3/templates``
(the same settings the GUI's "Import appliance" writes). Files go up with
``POST /v3/images/upload/NAME`` unless the server lists one of that name with the same md5
(``GET /v3/images`` gives each image's checksum). Pushing again changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minivm.errors import MinivmError
from minivm.fsutil import md5_file, plain_name_problem
from minivm.gns3 import reader
from minivm.gns3.server import Client, answers, image_path
from minivm.ui import QUIET, Reporter
from minivm.vm import options

IMAGE_KEYS = ("hda_disk_image", "hdb_disk_image", "hdc_disk_image", "hdd_disk_image",
              "kernel_image", "initrd")
QEMU_KEYS = ("adapter_type", "adapters", "ram", "cpus", "console_type", "kernel_command_line",
             "options", "on_close", "boot_priority", "cpu_throttling", "process_priority",
             "hda_disk_interface", "hdb_disk_interface", "hdc_disk_interface",
             "hdd_disk_interface")


@dataclass(frozen=True)
class ImageFile:
    """A file a node of an appliance needs: its role (``hda_disk_image``, ``initrd``...), name,
    local path, md5 and size."""

    role: str
    filename: str
    path: Path
    md5: str
    size: int


@dataclass(frozen=True)
class Images:
    """What one push did with each file: uploaded, skipped (same md5 there), replaced."""

    uploaded: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {"uploaded": list(self.uploaded), "skipped": list(self.skipped),
                "replaced": list(self.replaced)}


@dataclass(frozen=True)
class Template:
    """The template of a push: its id, and whether it was created, updated (which settings)
    or left unchanged."""

    template_id: str
    action: str
    changed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"template_id": self.template_id, "action": self.action}
        return out | ({"changed": list(self.changed)} if self.action == "updated" else {})


@dataclass(frozen=True)
class Pushed:
    """An appliance installed on a server (``changed`` false: nothing had to be done)."""

    appliance: str
    server: str
    images: Images
    template: Template

    @property
    def changed(self) -> bool:
        return bool(self.images.uploaded) or self.template.action != "unchanged"

    def to_json(self) -> dict[str, Any]:
        return {"appliance": self.appliance, "server": self.server,
                "images": self.images.to_json(), "template": self.template.to_json(),
                "changed": self.changed}


def bundle_data(app: reader.Appliance) -> dict[str, Any]:
    """The decoded .gns3a of a loaded appliance."""
    try:
        return dict(json.loads(app.path.read_text()))
    except (OSError, ValueError) as e:
        raise MinivmError(f"{app.path}: not a readable appliance file: {e}") from e


def bundle_files(app: reader.Appliance) -> list[ImageFile]:
    """The files a node of ``app`` needs: name, local path, md5 and size (from the .gns3a)."""
    data = bundle_data(app)
    listed = {i["filename"]: i for i in data.get("images", [])
              if isinstance(i, dict) and isinstance(i.get("filename"), str)}
    chosen = data["versions"][0]["images"]
    files = []
    for key in IMAGE_KEYS:
        name = chosen.get(key)
        if not name:
            continue
        if not isinstance(name, str) or (why := plain_name_problem(name)):
            raise MinivmError(f"{app.path}: {key} {name!r} {why or 'is not a string'}",
                              hint="an appliance names its files beside it; refusing to "
                                   "upload anything else")
        entry = listed.get(name, {})
        path = reader.bundle_file(app.path, name)
        size = path.stat().st_size
        if entry.get("filesize") not in (None, size):
            raise MinivmError(f"{path} is {size} bytes, {app.path.name} says "
                              f"{entry['filesize']}", hint="rebuild the bundle: minivm appliance")
        files.append(ImageFile(key, name, path, str(entry.get("md5sum") or md5_file(path)),
                                size))
    return files


def template_settings(app: reader.Appliance) -> dict[str, Any]:
    """The GNS3 QEMU template for ``app`` (POST /v3/templates body)."""
    data = bundle_data(app)
    qemu = data["qemu"]
    body: dict[str, Any] = {
        "name": app.name, "template_type": "qemu", "category": data.get("category", "guest"),
        "platform": qemu.get("arch", "x86_64"), "linked_clone": data.get("linked_clone", True),
        "port_name_format": data.get("port_name_format", "eth{0}"),
        "usage": data.get("usage", ""), "default_name_format": "{name}-{0}",
    }
    if data.get("first_port_name"):
        body["first_port_name"] = data["first_port_name"]
    if data.get("port_segment_size") is not None:
        body["port_segment_size"] = data["port_segment_size"]
    body.update({k: qemu[k] for k in QEMU_KEYS if k in qemu})
    body.update({k: v for k, v in data["versions"][0]["images"].items() if k in IMAGE_KEYS})
    return body


@dataclass(frozen=True)
class ServerImage:
    """An image a server has: its file name, its path there and its md5."""

    filename: str
    path: str
    checksum: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerImage:
        """KeyError/TypeError when the server's answer is not an image."""
        return cls(str(data["filename"]), str(data.get("path") or data["filename"]),
                   str(data.get("checksum") or ""))


def server_images(client: Client) -> dict[str, ServerImage]:
    """The server's images by file name."""
    images = (ServerImage.from_json(i) for i in client.items("/images"))
    return {i.filename: i for i in images}


def upload_images(client: Client, app: reader.Appliance, *,
                  reporter: Reporter = QUIET) -> Images:
    """Upload the bundle's files the server lacks; a same-named file with another md5 is
    replaced (GNS3 refuses while a template still uses it, and says so)."""
    have = server_images(client)
    uploaded: list[str] = []
    skipped: list[str] = []
    replaced: list[str] = []
    for f in bundle_files(app):
        old = have.get(f.filename)
        if old and old.checksum == f.md5:
            skipped.append(f.filename)
            continue
        if old:
            client.delete(f"/images/{image_path(old.path)}",
                          what=f"replacing the image {f.filename} (another md5 on the server)")
            replaced.append(f.filename)
        with reporter.bytes(f"uploading {f.filename}", total=f.size) as advance:
            client.upload(f"/images/upload/{image_path(f.filename)}", f.path,
                          what=f"uploading {f.filename}", progress=advance)
        uploaded.append(f.filename)
    return Images(tuple(uploaded), tuple(skipped), tuple(replaced))


def install_template(client: Client, app: reader.Appliance) -> Template:
    """Create the template, or update the one of the same name when its settings differ."""
    wanted = template_settings(app)
    for template in client.items("/templates"):
        if template.get("name") != app.name:
            continue
        if template.get("template_type") != "qemu" or template.get("builtin"):
            raise MinivmError(f"GNS3 already has a template named {app.name!r} that is not a "
                              "QEMU appliance template", hint="rename or delete that template")
        changed = {k: v for k, v in wanted.items() if template.get(k) != v}
        changed.pop("template_type", None)
        tid = str(template["template_id"])
        if not changed:
            return Template(tid, "unchanged")
        client.put(f"/templates/{tid}", changed, what=f"updating the template {app.name}")
        return Template(tid, "updated", tuple(sorted(changed)))
    made = client.post("/templates", wanted, what=f"creating the template {app.name}")
    return Template(str(made["template_id"]), "created")


def push(client: Client, app: reader.Appliance, *, reporter: Reporter = QUIET,
         allow_unsafe_options: bool = False) -> Pushed:
    """Images, then template; returns what was done. The options are checked before
    anything is sent."""
    options.check(app.options, where=str(app.path), allow_unsafe=allow_unsafe_options)
    with answers(client, f"installing {app.name}"):
        with reporter.stage(f"images:{app.name}", f"Images of {app.name} on {client.creds.url}"):
            images = upload_images(client, app, reporter=reporter)
        return Pushed(app.name, client.creds.url, images, install_template(client, app))

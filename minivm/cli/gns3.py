"""``minivm gns3``: install appliances on a GNS3 server (its REST API, GNS3 3.0 or newer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from minivm.cli.common import (
    HELP_MARKUP,
    AllowUnsafeOptions,
    Json,
    Quiet,
    emit_json,
    reporter,
    user_errors,
)

if TYPE_CHECKING:
    from minivm.gns3.server import Client

app = typer.Typer(help="Install MiniVM appliances on a GNS3 server.", no_args_is_help=True,
                  rich_markup_mode=HELP_MARKUP)

ServerUrl = Annotated[str | None, typer.Option(
    "--server", envvar="MINIVM_GNS3_URL", show_envvar=True, show_default=False,
    help="The GNS3 server: https://HOST:3080 (or http:// on a trusted network; a "
         "user:password@ in it is used, never shown).")]
User = Annotated[str | None, typer.Option(
    "--user", envvar="MINIVM_GNS3_USER", show_envvar=True, show_default=False,
    help="GNS3 user (default: admin).")]
Password = Annotated[str | None, typer.Option(
    "--password", envvar="MINIVM_GNS3_PASSWORD", show_envvar=True, show_default=False,
    help="GNS3 password (prefer the environment variable: options show in `ps`).")]


CaCert = Annotated[Path | None, typer.Option(
    "--ca-cert", envvar="MINIVM_GNS3_CA_CERT", show_envvar=True, show_default=False,
    help="A PEM file with the CA that signed the server's https certificate (a private CA); "
         "default: the system's CAs. https is always verified.")]


def connect(url: str | None, user: str | None, password: str | None,
            ca_cert: Path | None = None) -> Client:
    """A logged-in client from the command's options (or their environment variables); a
    warning line when the password would cross a network as plain http."""
    from minivm.gns3 import server
    from minivm.ui import Reporter

    creds = server.credentials(url, user, password, ca_cert)
    if warning := server.plain_http_warning(creds):
        Reporter().warn(warning)
    return server.connect(creds)


@app.command("push")
@user_errors
def push(appliance: Annotated[str, typer.Argument(
             help="A built appliance's name, or a .gns3a file.", show_default=False)],
         url: ServerUrl = None, user: User = None, password: Password = None,
         ca_cert: CaCert = None, allow_unsafe_options: AllowUnsafeOptions = False,
         quiet: Quiet = False, json_output: Json = False) -> None:
    """Upload the appliance's files (those GNS3 lacks, by md5) and install it as a template.

    Pushing again changes nothing and says so.
    """
    from minivm.gns3 import push as push_mod
    from minivm.gns3 import reader
    from minivm.vm import options
    rep = reporter(quiet=quiet or json_output)
    app_ = reader.load(appliance)
    options.check(app_.options, where=str(app_.path), allow_unsafe=allow_unsafe_options)
    client = connect(url, user, password, ca_cert)
    result = push_mod.push(client, app_, reporter=rep, allow_unsafe_options=allow_unsafe_options)
    if json_output:
        emit_json(result.to_json())
        return
    images, template = result.images, result.template
    if not result.changed:
        rep.info(f"{app_.name}: already on {client.creds.url} ({len(images.skipped)} "
                 f"file(s) with the same md5, template unchanged); nothing to do")
        return
    rep.info(f"{app_.name}: {len(images.uploaded)} file(s) uploaded, "
             f"{len(images.skipped)} already there; template {template.action} "
             f"({template.template_id})")

"""``minivm gns3``: install appliances on a GNS3 server (its REST API, GNS3 3.0 or newer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from minivm.cli.common import Json, Quiet, emit_json, reporter, user_errors

if TYPE_CHECKING:
    from minivm.gns3.server import Client

app = typer.Typer(help="Install MiniVM appliances on a GNS3 server.", no_args_is_help=True)

ServerUrl = Annotated[str | None, typer.Option(
    "--server", envvar="MINIVM_GNS3_URL", show_envvar=True, show_default=False,
    help="The GNS3 server (http://HOST:3080).")]
User = Annotated[str | None, typer.Option(
    "--user", envvar="MINIVM_GNS3_USER", show_envvar=True, show_default=False,
    help="GNS3 user (default: admin).")]
Password = Annotated[str | None, typer.Option(
    "--password", envvar="MINIVM_GNS3_PASSWORD", show_envvar=True, show_default=False,
    help="GNS3 password (prefer the environment variable: options show in `ps`).")]


def connect(url: str | None, user: str | None, password: str | None) -> Client:
    """A logged-in client from the command's options (or their environment variables)."""
    from minivm.gns3 import server
    return server.connect(server.credentials(url, user, password))


@app.command("push")
@user_errors
def push(appliance: Annotated[str, typer.Argument(
             help="A built appliance's name, or a .gns3a file.", show_default=False)],
         url: ServerUrl = None, user: User = None, password: Password = None,
         quiet: Quiet = False, json_output: Json = False) -> None:
    """Upload the appliance's files (those GNS3 lacks, by md5) and install it as a template.

    Pushing again changes nothing and says so.
    """
    from minivm.gns3 import push as push_mod
    from minivm.gns3 import reader
    rep = reporter(quiet=quiet or json_output)
    app_ = reader.load(appliance)
    client = connect(url, user, password)
    result = push_mod.push(client, app_, reporter=rep)
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

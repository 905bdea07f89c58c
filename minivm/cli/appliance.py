"""``minivm appliance``: write or check a GNS3 appliance bundle (owned by the appliance work)."""

from __future__ import annotations

from minivm.cli.common import Json, Quiet, fail, user_errors


@user_errors
def appliance(name: str, quiet: Quiet = False, json_output: Json = False) -> None:
    """(Re)write the .gns3a bundle of NAME from existing outputs."""
    raise fail("minivm appliance is not implemented yet")

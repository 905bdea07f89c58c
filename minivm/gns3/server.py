"""A GNS3 server's REST API (v3): one small client over ``requests``.

:func:`connect` checks the server's version (3.0 or newer: ``GET /v3/version``) and logs in
(``POST /v3/access/users/authenticate``); the JWT lives in the client's session only, never
printed or written anywhere. Every failure becomes one :class:`MinivmError` line: GNS3's own
``message`` (or FastAPI's ``detail``) with the request that failed.

    client = server.connect(Credentials(url, user, password))
    projects = client.get("/projects")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from minivm.errors import MinivmError

TIMEOUT = 60.0
LONG_TIMEOUT = 1200.0  # node creation (the controller may push images to a compute), export
CHUNK = 1 << 20
MIN_MAJOR = 3


@dataclass(frozen=True)
class Credentials:
    """Where the server is and who we are (the password is never shown by repr)."""

    url: str
    user: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Credentials(url={self.url!r}, user={self.user!r})"


def credentials(url: str | None, user: str | None, password: str | None) -> Credentials:
    """Credentials from the options, else $MINIVM_GNS3_URL, $MINIVM_GNS3_USER and
    $MINIVM_GNS3_PASSWORD (user ``admin`` by default, GNS3's own)."""
    url = url or os.environ.get("MINIVM_GNS3_URL")
    if not url:
        raise MinivmError("no GNS3 server given",
                          hint="pass --server http://HOST:3080 or set MINIVM_GNS3_URL")
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    return Credentials(url=url.rstrip("/"),
                       user=user or os.environ.get("MINIVM_GNS3_USER") or "admin",
                       password=password if password is not None
                       else os.environ.get("MINIVM_GNS3_PASSWORD", ""))


def _detail(response: requests.Response) -> str:
    """GNS3's error text in one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if body.get("message"):
            return " ".join(str(body["message"]).split())
        detail = body.get("detail")
        if isinstance(detail, list):  # FastAPI's validation errors
            return "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}"
                             for d in detail if isinstance(d, dict))
        if detail:
            return " ".join(str(detail).split())
    text = " ".join(response.text.split())
    return text[:200] or response.reason or f"HTTP {response.status_code}"


class Client:
    """An authenticated session with a GNS3 controller; paths are relative to ``/v3``."""

    def __init__(self, creds: Credentials, session: requests.Session) -> None:
        self.creds = creds
        self.session = session
        self.version = ""

    def request(self, method: str, path: str, *, what: str | None = None,
                timeout: float = TIMEOUT, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """One call; returns the decoded JSON (None when empty). Statuses in ``ok`` are not
        errors (their response is returned as None)."""
        url = f"{self.creds.url}/v3{path}"
        try:
            response = self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as e:
            raise unreachable(self.creds.url, e) from e
        if response.status_code in ok:
            return None
        if response.status_code >= 400:
            action = what or f"{method} {path}"
            raise MinivmError(f"GNS3 server {self.creds.url}: {action} failed "
                              f"({response.status_code}): {_detail(response)}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def upload(self, path: str, file: Path, *, what: str,
               progress: Callable[[int], None] | None = None) -> Any:
        """POST a file's bytes as the raw body, streamed."""
        def chunks() -> Iterator[bytes]:
            with file.open("rb") as f:
                while block := f.read(CHUNK):
                    if progress:
                        progress(len(block))
                    yield block

        return self.request("POST", path, data=chunks(), what=what, timeout=LONG_TIMEOUT,
                            headers={"Content-Type": "application/octet-stream"})

    def download(self, path: str, dest: Path, *, what: str,
                 progress: Callable[[int], None] | None = None) -> int:
        """GET ``path`` into the open file ``dest``; returns the bytes written."""
        url = f"{self.creds.url}/v3{path}"
        try:
            with self.session.get(url, stream=True, timeout=LONG_TIMEOUT) as response:
                if response.status_code >= 400:
                    raise MinivmError(f"GNS3 server {self.creds.url}: {what} failed "
                                      f"({response.status_code}): {_detail(response)}")
                size = 0
                with dest.open("wb") as out:
                    for block in response.iter_content(CHUNK):
                        out.write(block)
                        size += len(block)
                        if progress:
                            progress(len(block))
                return size
        except requests.RequestException as e:
            raise unreachable(self.creds.url, e) from e


def unreachable(url: str, error: Exception) -> MinivmError:
    reason = type(error).__name__
    if isinstance(error, requests.ConnectionError):
        reason = "connection refused or no route"
    elif isinstance(error, requests.Timeout):
        reason = "no answer in time"
    return MinivmError(f"cannot reach the GNS3 server at {url} ({reason})",
                       hint="check the URL (http://HOST:3080) and that gns3server runs")


def image_path(filename: str) -> str:
    """The URL path of a QEMU image (``/images/upload/...`` and friends)."""
    return quote(filename, safe="")


def connect(creds: Credentials) -> Client:
    """A logged-in client, after checking that the server runs GNS3 3.0 or newer."""
    session = requests.Session()
    client = Client(creds, session)
    try:
        response = session.get(f"{creds.url}/v3/version", timeout=TIMEOUT)
    except requests.RequestException as e:
        raise unreachable(creds.url, e) from e
    version = ""
    if response.ok:
        try:
            version = str(response.json().get("version", ""))
        except (ValueError, AttributeError):
            version = ""
    if not version:
        raise MinivmError(f"{creds.url} does not answer GET /v3/version "
                          f"(HTTP {response.status_code}): not a GNS3 3.x server",
                          hint="minivm needs GNS3 3.0 or newer (its API v3)")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_MAJOR:
        raise MinivmError(f"{creds.url} runs GNS3 {version}; minivm needs GNS3 3.0 or newer",
                          hint="upgrade the GNS3 server")
    client.version = version
    try:
        response = session.post(f"{creds.url}/v3/access/users/authenticate",
                                json={"username": creds.user, "password": creds.password},
                                timeout=TIMEOUT)
    except requests.RequestException as e:
        raise unreachable(creds.url, e) from e
    if response.status_code == 401:
        raise MinivmError(f"GNS3 server {creds.url} refused user {creds.user!r}: "
                          f"{_detail(response)}",
                          hint="check --user/--password or MINIVM_GNS3_USER/MINIVM_GNS3_PASSWORD")
    if not response.ok:
        raise MinivmError(f"GNS3 server {creds.url}: logging in failed "
                          f"({response.status_code}): {_detail(response)}")
    session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return client

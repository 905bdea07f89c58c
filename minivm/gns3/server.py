"""A GNS3 server's REST API (v3): one small client over ``requests``.

:func:`connect` checks the server's version (3.0 or newer: ``GET /v3/version``) and logs in
(``POST /v3/access/users/authenticate``); the JWT lives in the client's session only, never
printed or written anywhere. Every failure becomes one :class:`MinivmError` line: GNS3's own
``message`` (or FastAPI's ``detail``) with the request that failed.

    client = server.connect(Credentials(url, user, password))
    projects = client.get("/projects")
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import requests

from minivm import textsafe
from minivm.errors import MinivmError

TIMEOUT = 60.0
LONG_TIMEOUT = 1200.0  # node creation (the controller may push images to a compute), export
CHUNK = 1 << 20
MIN_MAJOR = 3
USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?.*@")  # to the last @: all of it


@dataclass(frozen=True)
class Credentials:
    """Where the server is and who we are. ``url`` never holds the user or password (they
    are taken out of it), so it can be shown anywhere; repr never shows the password."""

    url: str
    user: str
    password: str = ""
    ca_cert: Path | None = None  # a private CA's certificate(s) for https (else the system's)

    def __repr__(self) -> str:
        return f"Credentials(url={self.url!r}, user={self.user!r})"


def redact(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (for messages)."""
    return USERINFO.sub(r"\1***@", url, count=1)


def split_url(text: str) -> tuple[str, str | None, str | None]:
    """``(url, user, password)``: the server's URL without its userinfo, and what that held.
    Only http:// and https:// URLs are taken: a missing scheme is an error, not plain http."""
    shown = textsafe.shown(redact(text.strip()))
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as e:
        raise MinivmError(f"GNS3 server URL {shown!r} is not valid ({e})",
                          hint="e.g. https://gns3.example:3080") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise MinivmError(f"GNS3 server URL {shown!r} does not start with http:// or https://",
                          hint="say which: https://HOST:3080, or http://HOST:3080 for a server "
                               "without TLS (on loopback, say)")
    if parts.query or parts.fragment:
        raise MinivmError(f"GNS3 server URL {shown!r} has a query or fragment",
                          hint="give the server's address only: https://HOST:3080")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    url = f"{parts.scheme.lower()}://{host}{f':{port}' if port else ''}{parts.path.rstrip('/')}"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return url, user, password


def credentials(url: str | None, user: str | None, password: str | None,
                ca_cert: Path | None = None) -> Credentials:
    """Credentials from the options, else $MINIVM_GNS3_URL, $MINIVM_GNS3_USER and
    $MINIVM_GNS3_PASSWORD (user ``admin`` by default, GNS3's own). A ``user:password@`` in
    the URL is used when the options and the environment give none."""
    url = url or os.environ.get("MINIVM_GNS3_URL")
    if not url:
        raise MinivmError("no GNS3 server given",
                          hint="pass --server https://HOST:3080 or set MINIVM_GNS3_URL")
    clean, url_user, url_password = split_url(url)
    if password is None:
        password = os.environ.get("MINIVM_GNS3_PASSWORD")
    if ca_cert is not None and not ca_cert.is_file():
        raise MinivmError(f"CA certificate file {ca_cert} not found",
                          hint="--ca-cert takes a PEM file holding the server's CA")
    return Credentials(url=clean,
                       user=user or os.environ.get("MINIVM_GNS3_USER") or url_user or "admin",
                       password=password if password is not None else url_password or "",
                       ca_cert=ca_cert)


def plain_http_warning(creds: Credentials) -> str | None:
    """A warning when the password and token would cross a network unencrypted."""
    parts = urlsplit(creds.url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return None
    return (f"GNS3 server {creds.url} is reached over plain http: the password and the session "
            "token cross the network unencrypted (use https:// if the server offers it)")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _detail(response: requests.Response) -> str:
    """GNS3's error text in one line (the server's words: control characters shown escaped)."""
    return textsafe.shown(" ".join(_error_text(response).split()))[:300]


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if body.get("message"):
            return str(body["message"])
        detail = body.get("detail")
        if isinstance(detail, list):  # FastAPI's validation errors
            return "; ".join(f"{'.'.join(map(str, _list(d.get('loc'))[1:]))}: {d.get('msg')}"
                             for d in detail if isinstance(d, dict))
        if detail:
            return str(detail)
    return response.text[:200] or response.reason or f"HTTP {response.status_code}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class Client:
    """An authenticated session with a GNS3 controller; paths are relative to ``/v3``."""

    def __init__(self, creds: Credentials, session: requests.Session) -> None:
        self.creds = creds
        self.session = session
        self.version = ""
        # Given with every request: a session's own `verify` loses to $REQUESTS_CA_BUNDLE.
        self.verify: str | bool = str(creds.ca_cert) if creds.ca_cert else True

    def request(self, method: str, path: str, *, what: str | None = None,
                timeout: float = TIMEOUT, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """One call; returns the decoded JSON (None when empty). Statuses in ``ok`` are not
        errors (their response is returned as None)."""
        url = f"{self.creds.url}/v3{path}"
        try:
            response = self.session.request(method, url, timeout=timeout, verify=self.verify,
                                            **kwargs)
        except requests.RequestException as e:
            raise unreachable(self.creds.url, e) from e
        if response.status_code in ok:
            return None
        if response.status_code >= 400:
            action = what or textsafe.shown(f"{method} {path}")
            raise MinivmError(f"GNS3 server {self.creds.url}: {action} failed "
                              f"({response.status_code}): {_detail(response)}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise MinivmError(f"GNS3 server {self.creds.url}: the answer to "
                              f"{textsafe.shown(f'{method} {path}')} is not JSON",
                              hint="is that URL a GNS3 3.x server?") from None

    def items(self, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        """GET a collection: a list of objects (nothing: an empty list)."""
        answer = self.get(path, **kwargs)
        if answer is None:
            return []
        if not isinstance(answer, list) or not all(isinstance(i, dict) for i in answer):
            raise MinivmError(f"GNS3 server {self.creds.url}: the answer to GET "
                              f"{textsafe.shown(path)} is not a list of objects")
        return answer

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

    @contextmanager
    def _blocks(self, path: str, *, what: str, timeout: float) -> Iterator[Iterator[bytes]]:
        """The body of a GET of ``path``, block by block; an error status or a connection
        that fails (before or while reading) is one error naming ``what``."""
        url = f"{self.creds.url}/v3{path}"
        try:
            with self.session.get(url, stream=True, timeout=timeout,
                                  verify=self.verify) as response:
                if response.status_code >= 400:
                    raise MinivmError(f"GNS3 server {self.creds.url}: {what} failed "
                                      f"({response.status_code}): {_detail(response)}")
                yield response.iter_content(CHUNK)
        except requests.RequestException as e:
            raise unreachable(self.creds.url, e) from e

    def tail(self, path: str, *, what: str, limit: int = 16384) -> str:
        """The last ``limit`` bytes of a text file the server serves (a node's log), decoded;
        the server's words: show them through :func:`minivm.textsafe.shown`."""
        kept = b""
        with self._blocks(path, what=what, timeout=TIMEOUT) as blocks:
            for block in blocks:
                kept = (kept + block)[-limit:]
        return kept.decode(errors="replace")

    def download(self, path: str, dest: Path, *, what: str,
                 progress: Callable[[int], None] | None = None) -> int:
        """GET ``path`` into the open file ``dest``; returns the bytes written."""
        size = 0
        with self._blocks(path, what=what, timeout=LONG_TIMEOUT) as blocks, \
                dest.open("wb") as out:
            for block in blocks:
                out.write(block)
                size += len(block)
                if progress:
                    progress(len(block))
        return size


def unreachable(url: str, error: Exception) -> MinivmError:
    if isinstance(error, requests.exceptions.SSLError):
        why = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(error) \
            else "TLS handshake failed"
        return MinivmError(f"GNS3 server {url}: {why}: its certificate is not one this "
                           "machine trusts (or not for this host name)",
                           hint="for a private CA give its certificate: --ca-cert FILE (or "
                                "MINIVM_GNS3_CA_CERT)")
    reason = type(error).__name__
    if isinstance(error, requests.ConnectionError):
        reason = "connection refused or no route"
    elif isinstance(error, requests.Timeout):
        reason = "no answer in time"
    return MinivmError(f"cannot reach the GNS3 server at {url} ({reason})",
                       hint="check the URL (https://HOST:3080) and that gns3server runs")


class BadAnswer(MinivmError):
    """A server's answer that is not what it should be (raised where it is read, named with
    its server by :func:`answers`)."""


@contextmanager
def answers(client: Client, what: str) -> Iterator[None]:
    """Turn an answer of the wrong shape (a missing key, a string where an object belongs)
    met while ``what`` into one error line naming the server, not a traceback."""
    try:
        yield
    except BadAnswer as e:
        raise MinivmError(f"GNS3 server {client.creds.url}: {e.what}", hint=e.hint) from e
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        why = textsafe.shown(f"{type(e).__name__}: {e}")[:120]
        raise MinivmError(f"GNS3 server {client.creds.url} gave an answer minivm cannot use "
                          f"while {what} ({why})",
                          hint="is it a GNS3 3.x server? `minivm --debug` shows where") from e


F = TypeVar("F", bound=Callable[..., Any])


def checks_answers(what: str) -> Callable[[F], F]:
    """Decorate a function taking a :class:`Client`: :func:`answers` around all of it."""
    def wrap(func: F) -> F:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            client = next(a for a in (*args, *kwargs.values()) if isinstance(a, Client))
            with answers(client, what):
                return func(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return wrap


def image_path(filename: str) -> str:
    """The URL path of a QEMU image (``/images/upload/...`` and friends)."""
    return quote(filename, safe="")


def connect(creds: Credentials) -> Client:
    """A logged-in client, after checking that the server runs GNS3 3.0 or newer. https is
    verified against the system's CAs, or ``creds.ca_cert``."""
    client = Client(creds, requests.Session())
    with answers(client, "logging in"):
        _check_version(client)
        answer = client.request("POST", "/access/users/authenticate", what="logging in",
                                json={"username": creds.user, "password": creds.password},
                                ok=(401,))
        if answer is None:
            raise MinivmError(f"GNS3 server {creds.url} refused user "
                              f"{textsafe.shown(creds.user)!r}",
                              hint="check --user/--password (or the URL's user:password@) or "
                                   "MINIVM_GNS3_USER/MINIVM_GNS3_PASSWORD")
        token = str(answer["access_token"])
    client.session.headers["Authorization"] = f"Bearer {token}"
    return client


def _check_version(client: Client) -> None:
    url = client.creds.url
    try:
        response = client.session.get(f"{url}/v3/version", timeout=TIMEOUT,
                                      verify=client.verify)
    except requests.RequestException as e:
        raise unreachable(url, e) from e
    version = ""
    if response.ok:
        try:
            answer = response.json()
            version = str(answer.get("version", "")) if isinstance(answer, dict) else ""
        except ValueError:
            version = ""
    if not version:
        raise MinivmError(f"{url} does not answer GET /v3/version "
                          f"(HTTP {response.status_code}): not a GNS3 3.x server",
                          hint="minivm needs GNS3 3.0 or newer (its API v3)")
    match = re.match(r"(\d+)\.", version)
    major = int(match.group(1)) if match else 0
    if major < MIN_MAJOR:
        raise MinivmError(f"{url} runs GNS3 {textsafe.shown(version)[:40]}; minivm needs "
                          "GNS3 3.0 or newer", hint="upgrade the GNS3 server")
    client.version = textsafe.shown(version)[:40]

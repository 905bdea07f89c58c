"""A GNS3-like HTTP(S) server on loopback for the answers a real GNS3 never gives (garbage,
wrong shapes, escape sequences) and for TLS with a private CA made here with ``openssl``.

    with standin(routes) as server:         # http://127.0.0.1:PORT
    with standin(routes, tls=ca) as server:  # https://127.0.0.1:PORT, certificate from ``ca``

``routes`` maps ``"METHOD /v3/path"`` to ``(status, body)``: body bytes as sent, anything else
as JSON. Unlisted paths answer 404. ``server.seen`` keeps each request (method, path, JSON).
"""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USER, PASSWORD = "admin", "s3cret-pw"
VERSION = {"version": "3.0.6", "local": False}
TOKEN = {"access_token": "tok", "token_type": "bearer"}


def gns3_routes(**extra: tuple[int, Any]) -> dict[str, tuple[int, Any]]:
    """What an empty GNS3 3.0 server answers to the calls of `gns3 push`, `lab up
    --no-start`, `lab status` and `lab down` (``extra`` added or replaced). A ``*`` stands
    for the last path segment."""
    return {"GET /v3/version": (200, VERSION), "POST /v3/access/users/authenticate": (200, TOKEN),
            "GET /v3/projects": (200, []), "GET /v3/computes": (200, []),
            "GET /v3/images": (200, []), "GET /v3/templates": (200, []),
            "POST /v3/images/upload/*": (201, {}),
            "POST /v3/templates": (201, {"template_id": "t1"}),
            "POST /v3/projects": (201, {"project_id": "p1", "name": "lab", "status": "opened"}),
            "GET /v3/projects/p1/nodes": (200, []), "GET /v3/projects/p1/links": (200, []),
            "POST /v3/projects/p1/nodes": (201, {"node_id": "n1", "name": "r1"}),
            "DELETE /v3/projects/*": (204, b""), **extra}


@dataclass
class Standin:
    url: str
    seen: list[tuple[str, str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CA:
    cert: Path
    server_cert: Path
    server_key: Path


def make_ca(folder: Path, *, host_ip: str = "127.0.0.1") -> CA:
    """A private CA and a server certificate it signed for ``host_ip`` (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)

    def ssl_run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    ssl_run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=minivm test CA", "-keyout", "ca.key", "-out", "ca.pem")
    ssl_run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=gns3 test server",
            "-keyout", "server.key", "-out", "server.csr")
    (folder / "ext.cnf").write_text(f"subjectAltName=IP:{host_ip}\n")
    ssl_run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    return CA(folder / "ca.pem", folder / "server.pem", folder / "server.key")


@contextmanager
def standin(routes: dict[str, tuple[int, Any]], *, tls: CA | None = None) -> Iterator[Standin]:
    server_state = Standin(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            path = self.path.split("?")[0]
            server_state.seen.append((self.command, path, body))
            wildcard = f"{self.command} {path.rsplit('/', 1)[0]}/*"
            status, answer = routes.get(f"{self.command} {path}") or routes.get(
                wildcard, (404, {"message": f"no route {path}"}))
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.server_cert, tls.server_key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    server_state.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

"""GNS3 server URLs and answers: a password in the URL is used but never shown, plain http off
loopback is warned about, https is verified (``--ca-cert`` for a private CA, tried against a
real TLS endpoint on loopback), and garbage from a server is one line naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minivm.errors import MinivmError
from minivm.gns3 import server
from tests.fakeproject import make_appliance
from tests.gns3_standin import PASSWORD, USER, gns3_routes, make_ca, standin

REPO = Path(__file__).resolve().parent.parent
MINIVM = [str(Path(sys.executable).with_name("minivm"))]


@pytest.fixture(autouse=True)
def no_server_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MINIVM_GNS3"):
            monkeypatch.delenv(key)


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MINIVM_GNS3")}
    return subprocess.run([*MINIVM, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**base, **(env or {})})


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one error line, its last (progress may come before it)."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], done.stderr
    return errors[0]


@pytest.fixture
def lab_file(tmp_path: Path) -> Path:
    bundle = make_appliance(tmp_path / "app")
    path = tmp_path / "lab.yaml"
    path.write_text(json.dumps({"nodes": {"r1": {"appliance": str(bundle)}}}))
    return path


# --- URLs --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "url", "user", "password"), [
    ("http://127.0.0.1:3080", "http://127.0.0.1:3080", None, None),
    ("https://admin:pw@gns3.example:3443/", "https://gns3.example:3443", "admin", "pw"),
    ("HTTP://u%40x:p%3Aw%40d@[::1]:3080", "http://[::1]:3080", "u@x", "p:w@d"),
    ("https://only-user@h", "https://h", "only-user", None),
    ("https://h:3080/gns3/", "https://h:3080/gns3", None, None),
])
def test_userinfo_is_taken_out_of_the_url(text: str, url: str, user: str | None,
                                          password: str | None) -> None:
    assert server.split_url(text) == (url, user, password)


@pytest.mark.parametrize("text", [
    "127.0.0.1:3080", "admin:hunter2@gns3.example:3080", "gns3.example",
    "ftp://admin:hunter2@h", "http://admin:hunter2@h:port", "https://admin:hunter2@h/?x=1",
    "file:///etc/passwd", "http://", "http://admin:hunter2@",
])
def test_a_url_without_http_or_https_is_refused_and_its_password_never_shown(text: str) -> None:
    with pytest.raises(MinivmError) as info:
        server.split_url(text)
    assert "hunter2" not in str(info.value)


def test_credentials_prefer_options_then_url() -> None:
    creds = server.credentials("https://u:p@h", None, None)
    assert (creds.url, creds.user, creds.password) == ("https://h", "u", "p")
    assert "p" not in repr(creds).replace("https", "")
    creds = server.credentials("https://u:p@h", "other", "pw2")
    assert (creds.user, creds.password) == ("other", "pw2")


@pytest.mark.parametrize(("url", "warned"), [
    ("http://127.0.0.1:3080", False), ("http://127.0.0.2:3080", False),
    ("http://localhost:3080", False), ("http://[::1]:3080", False),
    ("https://10.0.0.5:3080", False), ("http://10.0.0.5:3080", True),
    ("http://gns3.example:3080", True),
])
def test_plain_http_off_loopback_is_warned_about(url: str, warned: bool) -> None:
    assert bool(server.plain_http_warning(server.credentials(url, None, None))) is warned


def test_a_password_in_the_url_is_used_and_never_printed(lab_file: Path) -> None:
    with standin(gns3_routes()) as gns3:
        secret_url = gns3.url.replace("http://", f"http://{USER}:{PASSWORD}@")
        done = cli("lab", "status", lab_file, "--server", secret_url, "--json")
        assert done.returncode == 0, done.stderr
        assert ("POST", "/v3/access/users/authenticate",
                {"username": USER, "password": PASSWORD}) in gns3.seen
        assert json.loads(done.stdout)["server"] == gns3.url
        assert PASSWORD not in done.stdout + done.stderr
        gns3.seen.clear()
    down = cli("lab", "status", lab_file, "--server", secret_url)  # the server is gone
    assert PASSWORD not in one_error_line(down) and "cannot reach" in down.stderr
    nothing = cli("lab", "status", lab_file, "--server", f"{USER}:{PASSWORD}@127.0.0.1:3080")
    line = one_error_line(nothing)
    assert PASSWORD not in line and "http:// or https://" in line


def test_plain_http_to_another_host_prints_one_warning(lab_file: Path) -> None:
    done = cli("lab", "status", lab_file, "--server", "http://192.0.2.1:9")  # TEST-NET: no route
    assert done.stderr.count("warning:") == 1 and "plain http" in done.stderr


# --- TLS ---------------------------------------------------------------------------------------

def test_https_is_verified_and_a_private_ca_can_be_given(lab_file: Path, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    with standin(gns3_routes(), tls=ca) as gns3:
        refused = cli("lab", "status", lab_file, "--server", gns3.url)
        assert "certificate verify failed" in one_error_line(refused)
        assert "--ca-cert" in refused.stderr
        assert not any(path.endswith("authenticate") for _, path, _ in gns3.seen)
        trusted = cli("lab", "status", lab_file, "--server", gns3.url, "--ca-cert", ca.cert)
        assert trusted.returncode == 0, trusted.stderr
        assert "warning" not in trusted.stderr and "r1" in trusted.stdout
        by_env = cli("lab", "status", lab_file, "--server", gns3.url,
                     env={"MINIVM_GNS3_CA_CERT": str(ca.cert)})
        assert by_env.returncode == 0, by_env.stderr
        other = make_ca(tmp_path / "other")
        wrong_ca = cli("lab", "status", lab_file, "--server", gns3.url, "--ca-cert", other.cert)
        assert "certificate verify failed" in one_error_line(wrong_ca)
    missing = cli("lab", "status", lab_file, "--server", "https://127.0.0.1:9",
                  "--ca-cert", tmp_path / "nope.pem")
    assert "nope.pem not found" in one_error_line(missing)


# --- garbage from a server ----------------------------------------------------------------------

GARBAGE = [
    ("GET /v3/version", (200, b"<html>not json</html>")),
    ("GET /v3/version", (200, ["3.0.6"])),
    ("GET /v3/version", (200, {"version": "\x1b[2J\x1b]0;owned\x07"})),
    ("POST /v3/access/users/authenticate", (200, b"\x00\xff garbage")),
    ("POST /v3/access/users/authenticate", (200, {"token": "x"})),
    ("POST /v3/access/users/authenticate", (200, ["access_token"])),
    ("POST /v3/access/users/authenticate", (500, {"message": "\x1b[31mred\x1b[0m\r\nline2"})),
    ("GET /v3/projects", (200, b"{truncated")),
    ("GET /v3/projects", (200, {"projects": []})),
    ("GET /v3/projects", (200, [1, 2, 3])),
    ("GET /v3/projects", (200, [{"name": "lab"}])),
    ("GET /v3/projects", (200, [{"name": "lab", "project_id": None, "status": "opened"}])),
    ("GET /v3/computes", (200, "computes")),
    ("GET /v3/images", (200, [{"path": "x"}])),
    ("GET /v3/templates", (200, [{"name": "t", "template_type": "qemu"}])),
    ("POST /v3/templates", (200, [])),
    ("POST /v3/images/upload/root.qcow2", (200, b"nope")),
]


COMMANDS = (("lab", "status", "LAB"), ("lab", "up", "LAB", "--no-start"),
            ("gns3", "push", "BUNDLE"), ("lab", "down", "LAB"))


def server_commands(lab_file: Path, url: str) -> list[subprocess.CompletedProcess[str]]:
    """Every command that talks to a server: status, up (which pushes), push, down."""
    bundle = lab_file.parent / "app" / "t.gns3a"
    names = {"LAB": lab_file, "BUNDLE": bundle}
    return [cli(*(names.get(a, a) for a in args), "--server", url) for args in COMMANDS]


def test_the_standin_answers_as_an_empty_gns3(lab_file: Path) -> None:
    with standin(gns3_routes()) as gns3:
        for done in server_commands(lab_file, gns3.url):
            assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("route", "answer"), GARBAGE)
def test_garbage_from_a_server_is_one_line_naming_it(lab_file: Path, route: str,
                                                     answer: tuple[int, object]) -> None:
    with standin(gns3_routes(**{route: answer})) as gns3:
        results = server_commands(lab_file, gns3.url)
    failed = [done for done in results if done.returncode != 0]
    assert failed, f"no command noticed {route} answering {answer!r}"
    for done in failed:
        line = one_error_line(done)
        assert gns3.url in line, line
        assert "\x1b" not in done.stderr and "\r" not in done.stderr and "\x07" not in line

"""Fuzzing both ends of the control channel's framing.

The host: hypothesis sends generated answers (garbage, frames of every kind with random
payloads, cut streams) to each request of the client on a real socket pair; only MinivmError
may come out. The guest: the init's framing code (init/src/frames.c) compiled with the host's
cc under AddressSanitizer and UBSan, fed random frames for a fixed time.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minivm.errors import MinivmError
from minivm.vm import control, transfer

REPO = Path(__file__).resolve().parent.parent
FUZZ_SECONDS = float(os.environ.get("MINIVM_FUZZ_SECONDS", "20"))
HOST_CASES = int(os.environ.get("MINIVM_FUZZ_CASES", "2000"))

KINDS = [control.R_HELLO, control.R_STDOUT, control.R_STDERR, control.R_EXIT, control.R_ERROR,
         control.R_STAT, control.R_DONE, control.DATA, 0x00, 0xFF]
frame = st.tuples(st.sampled_from(KINDS), st.binary(max_size=40)).map(
    lambda f: control.encode(*f))
answers = st.lists(st.one_of(frame, frame, st.binary(max_size=64)), max_size=12).map(b"".join)


def request(ch: control.Channel, which: int) -> None:
    if which == 0:
        ch.exec(["true"], stdout=lambda b: None)
    elif which == 1:
        ch.stat_path("/x")
    elif which == 2:
        ch.get("/x", lambda b: None)
    else:
        ch.put(io.BytesIO(b"abc"), "/x", "x", 0o644)


@settings(max_examples=HOST_CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers, st.integers(0, 3), st.integers(0, 3))
def test_the_client_only_raises_minivm_errors(answer: bytes, first: int, second: int) -> None:
    host, guest = socket.socketpair()
    try:
        guest.sendall(answer)
        guest.shutdown(socket.SHUT_WR)
        ch = control.Channel.on_socket(host, what="r1")
        for which in (first, second):
            try:
                request(ch, which)
            except MinivmError as e:
                assert "\n" not in str(e) and "\x1b" not in str(e)
    finally:
        host.close()
        guest.close()


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_the_inits_frame_parser_under_sanitizers(tmp_path: Path) -> None:
    exe = tmp_path / "frames_fuzz"
    fuzz = REPO / "init" / "fuzz"
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-o", str(exe), str(fuzz / "frames_fuzz.c"),
                    str(REPO / "init" / "src" / "frames.c")], check=True)
    done = subprocess.run([str(exe), str(FUZZ_SECONDS), str(int.from_bytes(os.urandom(4)))],
                          capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    assert done.returncode == 0, done.stderr[-4000:]
    counts = re.fullmatch(r"(\d+) inputs, (\d+) frames, (\d+) items\n", done.stdout)
    assert counts and int(counts[1]) > 0 and int(counts[2]) > 0, done.stdout
    print(done.stdout.strip())


GUESTS: list[socket.socket] = []


def scripted(answers: list[tuple[int, bytes]]) -> control.Channel:
    """A channel whose guest has already said ``answers`` (a hostile init's)."""
    host, guest = socket.socketpair()
    guest.sendall(b"".join(control.encode(k, p) for k, p in answers))
    guest.shutdown(socket.SHUT_WR)
    GUESTS.append(guest)  # open until the test ends: what the client sends is not read
    return control.Channel.on_socket(host, what="r1")


@pytest.mark.parametrize(("sent", "message"), [
    (b"x" * 20, "sent more of /x than the 10 bytes announced"),
    (b"x" * 5, "sent 5 bytes of /x, not the 10 announced")])
def test_a_file_longer_or_shorter_than_announced_leaves_nothing(
        tmp_path: Path, sent: bytes, message: str) -> None:
    stat = (control.R_STAT, struct.pack(">III", 0o100644, 0, 10))
    ch = scripted([stat, stat, (control.DATA, sent), (control.DATA, b""), (control.R_DONE, b"")])
    with pytest.raises(MinivmError, match=message):
        transfer.copy_out(ch, "/x", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_slow_guests_second_hello_answer_is_not_a_malformed_frame(tmp_path: Path) -> None:
    """A guest too slow to answer the first hello within a second answers the retried one
    too: that repeat arrives during the first request and is skipped."""
    import threading

    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer_late() -> None:
        """Hold back the first answer until the client has retried (as a starved guest)."""
        conn, _ = server.accept()
        decoder = control.Decoder()
        hellos: list[bytes] = []
        while len(hellos) < 2:
            data = conn.recv(1 << 20)
            if not data:
                return
            hellos += [p for kind, p in decoder.feed(data) if kind == control.HELLO]
        conn.sendall(b"".join(control.encode(control.R_HELLO, p) for p in hellos))
        decoder2 = control.Decoder()
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            if any(kind == control.EXEC for kind, _ in decoder2.feed(data)):
                break
        conn.sendall(control.encode(control.R_STDOUT, b"ok\n")
                     + control.encode(control.R_EXIT, struct.pack(">I", 3)))
        conn.close()

    thread = threading.Thread(target=answer_late, daemon=True)
    thread.start()
    out: list[bytes] = []
    try:
        with control.Channel(path, what="r1", timeout=10) as ch:
            assert ch.exec(["true"], stdout=out.append) == 3
    finally:
        thread.join(5)
        server.close()
    assert b"".join(out) == b"ok\n"

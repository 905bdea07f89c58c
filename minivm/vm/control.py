"""The control channel's client: run commands in a MiniVM and move files, with no guest network.

QEMU exposes a virtio-serial port named ``org.minivm.control`` on a Unix socket (see
:mod:`minivm.vm.qemu`); the guest's init serves it (``init/src/control.c``). Both speak frames::

    'm' 'v' TYPE 0 LENGTH(u32, big-endian) PAYLOAD(LENGTH bytes, at most 65536)

A session starts with HELLO (protocol version u16 + a random nonce); the init answers with its
own version and the nonce, and drops whatever an earlier client left running, so frames that
arrive before that answer (a previous session's tail) are skipped. Then requests, one at a time:

* EXEC (NUL-terminated items: ``a``ARG..., ``e``KEY=VALUE, ``u``USER, ``w``WORKDIR, ``i`` for
  stdin): STDOUT/STDERR data frames, then EXIT (u32 code); the client sends STDIN frames (an
  empty one is EOF) and SIGNAL (u8).
* STAT (path): STAT (mode u32, size u64) or ERROR (errno u32 + text).
* PUT (mode u32, path, NUL, name, NUL): DONE (the path written) or ERROR; then DATA frames, an
  empty DATA ending the file: DONE or ERROR (the file is renamed into place only when whole).
* GET (path): STAT, DATA frames, an empty DATA, DONE (or ERROR at any point).
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from minivm.errors import MinivmError
from minivm.textsafe import shown_bytes

VERSION = 1
MAGIC = b"mv"
HEADER = struct.Struct(">2sBBI")
MAX_PAYLOAD = 65536
CHUNK = 32768
OUTGOING_LIMIT = 1 << 20  # stdin queued for the socket before we stop reading more

HELLO, EXEC, STDIN, SIGNAL, STAT, PUT, DATA, GET = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08
R_HELLO, R_STDOUT, R_STDERR, R_EXIT, R_ERROR, R_STAT, R_DONE = (0x81, 0x82, 0x83, 0x84, 0x85,
                                                                 0x86, 0x87)


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One frame."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame holds at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    return HEADER.pack(MAGIC, kind, 0, len(payload)) + payload


class Decoder:
    """Frames out of a byte stream fed in pieces; bytes that start no frame are skipped (what
    a previous client left half-sent)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buf += data
        pos, end = 0, len(self._buf)
        try:
            while end - pos >= HEADER.size:
                magic, kind, zero, length = HEADER.unpack_from(self._buf, pos)
                if magic != MAGIC or zero or length > MAX_PAYLOAD:
                    found = self._buf.find(MAGIC, pos + 1)
                    pos = found if found >= 0 else end - 1
                    continue
                if end - pos < HEADER.size + length:
                    return
                start = pos + HEADER.size
                pos = start + length
                yield kind, bytes(self._buf[start:pos])
        finally:
            del self._buf[:pos]  # once per feed: consumed bytes are not moved per frame


def exec_payload(argv: list[str], *, env: dict[str, str] | None = None, user: str | None = None,
                 workdir: str | None = None, stdin: bool = False) -> bytes:
    """EXEC's payload (NUL-terminated tagged items)."""
    items = [b"a" + a.encode() for a in argv]
    items += [b"e" + f"{k}={v}".encode() for k, v in (env or {}).items()]
    if user:
        items.append(b"u" + user.encode())
    if workdir:
        items.append(b"w" + workdir.encode())
    if stdin:
        items.append(b"i")
    if any(b"\0" in item for item in items):
        raise MinivmError("a command, variable, user or folder holds a NUL byte")
    return b"".join(item + b"\0" for item in items)


FILE_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFREG: "a file", stat.S_IFLNK: "a symlink",
              stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
              stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


@dataclass(frozen=True)
class Stat:
    mode: int
    size: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def kind(self) -> str:
        return FILE_KINDS.get(stat.S_IFMT(self.mode), "of an unknown kind")


class GuestError(MinivmError):
    """The guest refused a request (errno and its message)."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno


class Channel:
    """A session on a node's control socket (one request at a time)."""

    def __init__(self, path: Path, *, what: str, timeout: float = 10.0) -> None:
        self.what = what
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._decoder = Decoder()
        self._pending: list[tuple[int, bytes]] = []
        self._hello_answer: bytes | None = None
        try:
            self.sock.connect(str(path))
        except OSError as e:
            self.sock.close()
            raise MinivmError(f"{what}: cannot reach its control channel at {path} "
                              f"({e.strerror})",
                              hint="it was started without one: restart it") from e
        self._hello(timeout)

    def _hello(self, timeout: float) -> None:
        """Say hello until the init answers with our nonce. A second try first sends a frame's
        worth of zeros: they end whatever frame an earlier client left half-sent, and the init
        skips them until the next header."""
        nonce = secrets.token_bytes(8)
        hello = encode(HELLO, struct.pack(">H", VERSION) + nonce)
        deadline = time.monotonic() + timeout
        tries = [hello, bytes(HEADER.size + MAX_PAYLOAD) + hello]
        frame = None
        while frame is None or frame[0] != R_HELLO or frame[1][2:] != nonce:
            if tries and (frame is None):
                self.sock.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    self.sock.sendall(tries.pop(0))
                except OSError:  # nobody reads: the guest has no channel
                    tries = []
                finally:
                    self.sock.settimeout(None)
            wait = deadline - time.monotonic()
            frame = self.receive(max(0.0, min(wait, 1.0) if tries else wait), quiet=True)
            if (frame is None and not tries) or time.monotonic() >= deadline:
                self.close()
                raise MinivmError(f"{self.what}: no answer on the control channel within "
                                  f"{timeout:.0f} s",
                                  hint="its init is older than the channel (rebuild the "
                                       "appliance with this minivm), it is still booting, or "
                                       "another minivm command holds the channel (try again)")
            # frames before our hello's answer are an earlier session's: skipped
        # A slow guest answers both tries: the second answer, the same, may still be on its way.
        self._hello_answer = frame[1]
        version = struct.unpack(">H", frame[1][:2])[0]  # 10 bytes at least: the nonce matched
        if version != VERSION:
            self.close()
            side = "older" if version < VERSION else "newer"
            raise MinivmError(f"{self.what}: its init speaks control protocol {version}, this "
                              f"minivm speaks {VERSION} (the guest's init is {side})",
                              hint="rebuild the appliance with this minivm" if side == "older"
                              else "upgrade minivm")

    @classmethod
    def on_socket(cls, sock: socket.socket, *, what: str) -> Channel:
        """A session on a socket that is already connected and past its hello."""
        ch = cls.__new__(cls)
        ch.what, ch.sock, ch._decoder, ch._pending = what, sock, Decoder(), []
        ch._hello_answer = None
        return ch

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, kind: int, payload: bytes = b"") -> None:
        try:
            self.sock.sendall(encode(kind, payload))
        except OSError as e:
            raise MinivmError(f"{self.what}: the control channel closed (the VM stopped?)",
                              hint=e.strerror) from e

    def receive(self, timeout: float | None = None, *,
                quiet: bool = False) -> tuple[int, bytes] | None:
        """The next frame (None: ``timeout`` s passed); the guest going away is an error. A
        repeat of this session's hello answer (the answer to a retried hello) is skipped."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            while not self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    continue
                data = self.sock.recv(1 << 20)
                if not data:
                    if quiet:
                        return None
                    raise MinivmError(f"{self.what}: the control channel closed (the VM "
                                      "stopped?)")
                self._pending.extend(self._decoder.feed(data))
            frame = self._pending.pop(0)
            if frame != (R_HELLO, self._hello_answer):
                return frame

    def expect(self, *kinds: int) -> bytes:
        """The next frame's payload, which must be one of ``kinds`` (ERROR raises GuestError)."""
        frame = self.receive()
        assert frame is not None
        kind, payload = frame
        if kind == R_ERROR:
            raise self._guest_error(payload)
        if kind not in kinds:
            raise self.malformed(f"an unexpected frame {kind:#04x}")
        return payload

    def malformed(self, detail: str) -> MinivmError:
        """The error for an answer the protocol does not allow (a broken or hostile guest)."""
        return MinivmError(f"{self.what}: a malformed answer on the control channel "
                           f"({detail})", hint="its init is broken or hostile: restart the node")

    def _guest_error(self, payload: bytes) -> GuestError:
        if len(payload) < 4:
            raise self.malformed(f"an error frame of {len(payload)} bytes")
        return GuestError(struct.unpack(">I", payload[:4])[0],
                          f"{self.what}: {shown_bytes(payload[4:])}")

    def _u32(self, payload: bytes, what: str) -> int:
        if len(payload) != 4:
            raise self.malformed(f"{what} of {len(payload)} bytes")
        return int(struct.unpack(">I", payload)[0])

    # --- requests -------------------------------------------------------------------------

    def exec(self, argv: list[str], *, env: dict[str, str] | None = None,
             user: str | None = None, workdir: str | None = None,
             stdin: BinaryIO | None = None,
             stdout: Callable[[bytes], object] = lambda b: None,
             stderr: Callable[[bytes], object] = lambda b: None) -> int:
        """Run ``argv`` in the guest; stream its output; return its exit code.

        Full duplex: stdin goes out only as fast as the socket takes it, and the guest's
        output is read all the while, so a command that writes before it reads never blocks
        both sides."""
        self.send(EXEC, exec_payload(argv, env=env, user=user, workdir=workdir,
                                     stdin=stdin is not None))
        stdin_fd = stdin.fileno() if stdin is not None else None
        outgoing = bytearray()
        try:
            while True:
                if not self._pending:
                    reading = [self.sock.fileno()]
                    if stdin_fd is not None and len(outgoing) < OUTGOING_LIMIT:
                        reading.append(stdin_fd)
                    ready, writable, _ = select.select(reading, [self.sock] if outgoing else [],
                                                       [])
                    if writable:
                        self._send_some(outgoing)
                    if stdin_fd is not None and stdin_fd in ready:
                        data = os.read(stdin_fd, CHUNK)
                        outgoing += encode(STDIN, data)  # empty: EOF
                        if not data:
                            stdin_fd = None
                        self._send_some(outgoing)
                    if self.sock.fileno() not in ready:
                        continue
                frame = self.receive()
                assert frame is not None
                kind, payload = frame
                if kind == R_STDOUT:
                    stdout(payload)
                elif kind == R_STDERR:
                    stderr(payload)
                elif kind == R_EXIT:
                    code = self._u32(payload, "an exit frame")
                    if code > 255:
                        raise self.malformed(f"the exit code {code}")
                    return code
                elif kind == R_ERROR:
                    raise self._guest_error(payload)
                else:
                    raise self.malformed(f"an unexpected frame {kind:#04x} during a command")
        except KeyboardInterrupt:
            outgoing += encode(SIGNAL, bytes([2]))  # SIGINT to the command, as a terminal would
            deadline = time.monotonic() + 2.0
            while outgoing and time.monotonic() < deadline:
                if select.select([], [self.sock], [], 0.2)[1]:
                    self._send_some(outgoing)
            raise

    def _send_some(self, outgoing: bytearray) -> None:
        """Send what the socket takes now, never waiting."""
        try:
            sent = self.sock.send(outgoing, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            raise MinivmError(f"{self.what}: the control channel closed (the VM stopped?)",
                              hint=e.strerror) from e
        del outgoing[:sent]

    def _stat(self) -> Stat:
        payload = self.expect(R_STAT)
        if len(payload) != 12:
            raise self.malformed(f"a stat frame of {len(payload)} bytes")
        mode, high, low = struct.unpack(">III", payload)
        return Stat(mode, high << 32 | low)

    def stat_path(self, path: str) -> Stat | None:
        """The guest file's mode and size; None when it does not exist."""
        self.send(STAT, path.encode())
        try:
            return self._stat()
        except GuestError as e:
            if e.errno in (2, 20):  # ENOENT, ENOTDIR
                return None
            raise

    def put(self, source: BinaryIO, path: str, name: str, mode: int) -> str:
        """Write ``source`` to the guest's ``path`` (``path/name`` when it is a folder).

        The guest writes a temporary file and renames it when whole. Returns the path written.
        """
        self.send(PUT, struct.pack(">I", mode) + path.encode() + b"\0" + name.encode() + b"\0")
        self.expect(R_DONE)
        while chunk := source.read(CHUNK):
            self.send(DATA, chunk)
        self.send(DATA)
        return shown_bytes(self.expect(R_DONE))

    def get(self, path: str, sink: Callable[[bytes], object]) -> Stat:
        """Stream the guest's regular file ``path`` into ``sink``; returns its mode and size."""
        self.send(GET, path.encode())
        st = self._stat()
        while data := self.expect(DATA):
            sink(data)
        self.expect(R_DONE)
        return st

"""Talk to a VM's serial console: a local telnet port (as GNS3) or a Unix socket.

:func:`attach` puts the terminal in raw mode and relays both ways until the VM goes away or
the user types Ctrl-] (the telnet escape). :class:`Session` is the scripted form (expect a
pattern, send a line) that tests and benchmarks use.

Addresses are strings: ``telnet:127.0.0.1:5000`` or ``unix:/path/console.sock``.
"""

from __future__ import annotations

import codecs
import os
import re
import select
import socket
import sys
import termios
import time
import tty
from collections.abc import Callable

from minivm.errors import MinivmError

ESCAPE = b"\x1d"  # Ctrl-]
IAC = 0xFF
DSR = b"\x1b[6n"  # device status report: the cursor position query
CURSOR_REPORT = b"\x1b[1;1R"  # a terminal's answer to it: the cursor at row 1, column 1


def connect(address: str, *, timeout: float = 10.0) -> socket.socket:
    """A connected stream socket to a console address; retries until ``timeout``."""
    kind, _, rest = address.partition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if kind == "telnet":
                host, _, port = rest.rpartition(":")
                return socket.create_connection((host, int(port)), timeout=2)
            if kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(rest)
                except OSError:
                    sock.close()
                    raise
                return sock
            raise MinivmError(f"console address {address!r} is neither telnet: nor unix:")
        except OSError as e:
            if time.monotonic() > deadline:
                raise MinivmError(f"cannot reach the console at {address}: {e.strerror or e}",
                                  hint="is the VM running? see: minivm lab status") from e
            time.sleep(0.1)


class TelnetFilter:
    """Strips telnet commands (IAC ...) from what a telnet server sends; we negotiate nothing."""

    def __init__(self) -> None:
        self._state = 0  # 0 data, 1 after IAC, 2 after IAC WILL/WONT/DO/DONT, 3 in IAC SB

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self._state == 0:
                if b == IAC:
                    self._state = 1
                else:
                    out.append(b)
            elif self._state == 1:
                if b == IAC:
                    out.append(IAC)
                    self._state = 0
                elif 251 <= b <= 254:
                    self._state = 2
                elif b == 250:
                    self._state = 3
                else:
                    self._state = 0
            elif self._state == 2 or b == 240:
                self._state = 0
        return bytes(out)


def _encode(address: str, data: bytes) -> bytes:
    return data.replace(b"\xff", b"\xff\xff") if address.startswith("telnet:") else data


def attach(address: str, *, banner: bool = True,
           on_connect: Callable[[], None] | None = None) -> str:
    """Relay the terminal to the console until Ctrl-] (``detached``) or the VM closes it
    (``closed``). ``on_connect`` runs once connected (``minivm run`` starts the guest there).
    When stdin ends (not a terminal), the console is still shown until the VM closes it."""
    sock = connect(address)
    if on_connect is not None:
        on_connect()
    sock.setblocking(False)
    filt = TelnetFilter() if address.startswith("telnet:") else None
    stdin = sys.stdin.fileno()
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None
    if banner:
        sys.stderr.write(f"connected to {address}; Ctrl-] detaches\r\n")
        sys.stderr.flush()
    reason = "closed"
    inputs = [sock, stdin]
    try:
        if is_tty:
            tty.setraw(stdin)
        if on_connect is None:
            sock.sendall(b"\r")  # let the guest print its prompt again
        while True:
            ready, _, _ = select.select(inputs, [], [])
            if sock in ready:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(sys.stdout.fileno(), filt.feed(data) if filt else data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    inputs = [sock]
                    continue
                if ESCAPE in data:
                    if before := data.split(ESCAPE)[0]:
                        sock.sendall(_encode(address, before))
                    reason = "detached"
                    break
                sock.setblocking(True)
                sock.sendall(_encode(address, data))
                sock.setblocking(False)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()
    if banner:
        sys.stderr.write("\ndetached from the console\n" if reason == "detached"
                         else "\nthe console closed (the VM stopped)\n")
    return reason


class Session:
    """A scripted console: ``expect(pattern)`` waits for output, ``sendline(text)`` types."""

    def __init__(self, address: str, *, timeout: float = 10.0) -> None:
        self.address = address
        self.sock = connect(address, timeout=timeout)
        self._filter = TelnetFilter() if address.startswith("telnet:") else None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self._pos = 0
        self._eof = False

    def _pump(self, wait: float) -> None:
        ready, _, _ = select.select([self.sock], [], [], wait)
        if not ready:
            return
        data = self.sock.recv(65536)
        if not data:
            self._eof = True
            return
        if self._filter:
            data = self._filter.feed(data)
        if DSR in data:  # answer "where is the cursor?" as a terminal would (busybox ash asks)
            self.sock.sendall(CURSOR_REPORT)
        self.text += self._decoder.decode(data).replace("\r", "")

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for ``pattern`` after the previous match; AssertionError with the tail if not."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            if match := regex.search(self.text, self._pos):
                self._pos = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or self._eof:
                why = "the console closed" if self._eof else f"{timeout:.0f} s passed"
                raise AssertionError(f"{pattern!r} not seen on {self.address} ({why}); "
                                     f"tail:\n{self.text[-2000:]}")
            self._pump(min(left, 0.5))

    def send(self, text: str) -> None:
        self.sock.sendall(_encode(self.address, text.encode()))

    def sendline(self, text: str = "") -> None:
        self.send(text + "\r")

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str]:
        """Run a shell command; return its exit status and output.

        The output is framed by markers the shell computes (``$((N+1))``), so the echo of the
        typed line, however the terminal wraps it, never matches them.
        """
        tag = time.monotonic_ns() % 10**9
        quoted = "'" + command.replace("'", "'\\''") + "'"
        self.sendline(f"echo __B$(({tag}+1))__; eval {quoted}; echo __E$(({tag}+1))__$?__")
        begin = self.expect(rf"__B{tag + 1}__\n", timeout)
        end = self.expect(rf"__E{tag + 1}__(\d+)__", timeout)
        return int(end.group(1)), self.text[begin.end():end.start()]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

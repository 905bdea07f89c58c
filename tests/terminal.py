"""A program run on a pseudo-terminal, as a user runs ``minivm run`` in a terminal: what it
prints is read as it comes, ``expect`` waits for a pattern, ``send`` types."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from minivm.vm.console import CURSOR_REPORT, DSR


class Terminal:
    """``argv`` on a new pseudo-terminal (stdin, stdout and stderr); killed on close."""

    def __init__(self, argv: Sequence[str | Path], *, cwd: Path | None = None) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([str(a) for a in argv], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=cwd)
        os.close(slave)
        self.output = b""
        self._pos = 0

    def expect(self, pattern: bytes, timeout: float) -> re.Match[bytes]:
        """Wait until ``pattern`` appears after the previous match; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not (match := regex.search(self.output, self._pos)):
            left = deadline - time.monotonic()
            assert left > 0, (f"{pattern!r} not seen in {timeout:.0f} s:\n"
                              f"{self.output[-2000:].decode(errors='replace')}")
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the program ended and closed its side
                    data = b""
                if not data:
                    assert self.proc.poll() is None or regex.search(self.output, self._pos), (
                        f"{pattern!r} not seen, the program ended:\n"
                        f"{self.output[-2000:].decode(errors='replace')}")
                    time.sleep(0.1)
                if DSR in data:
                    os.write(self.master, CURSOR_REPORT)  # answer as a terminal would
                self.output += data
        self._pos = match.end()
        return match

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

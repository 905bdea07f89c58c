"""Every external program minivm starts goes through :func:`run`: errors and logs in one place."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from minivm.errors import MinivmError

log = logging.getLogger("minivm.run")

# Debian package that provides each program minivm may start, for the error hint.
PROVIDERS = {
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "mke2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "fakeroot": "fakeroot",
    "tar": "tar",
    "vde_switch": "vde2",
    "vde_plug": "vdeplug",
    "dot": "graphviz",
}


def which(program: str) -> str:
    """The full path of ``program``, or a MinivmError saying which package provides it."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if not found:
        package = PROVIDERS.get(program, program)
        raise MinivmError(
            f"{program} is not installed",
            hint=f"install it with: sudo apt-get install {package}",
        )
    return found


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    stdin: IO[Any] | int | None = None,
    input: bytes | None = None,
    stdout: IO[Any] | int | None = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program; on failure raise a one-line MinivmError with the tail of its stderr.

    ``what`` names the step for the error message (default: the program name).
    """
    argv = [str(a) for a in cmd]
    argv[0] = which(argv[0]) if os.sep not in argv[0] else argv[0]
    full_env = {**os.environ, **env} if env else None
    log.debug("run: %s", " ".join(argv))
    try:
        proc = subprocess.run(
            argv, stdin=stdin, input=input, stdout=stdout, stderr=subprocess.PIPE,
            env=full_env, cwd=cwd, check=False,
        )
    except OSError as e:
        raise MinivmError(f"cannot start {argv[0]}: {e.strerror}") from e
    if check and proc.returncode != 0:
        raise MinivmError(
            f"{what or Path(argv[0]).name} failed (exit {proc.returncode}): "
            f"{stderr_tail(proc.stderr)}"
        )
    return proc


@contextmanager
def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    stdin: IO[Any] | int | None = subprocess.DEVNULL,
    stdout: IO[Any] | int | None = subprocess.DEVNULL,
    stderr: IO[Any] | int | None = subprocess.PIPE,
    new_session: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a program that runs beside minivm (a pipe to feed, a VM to watch) for the length
    of a ``with`` block. Same program lookup, logging and start-up errors as :func:`run`.

    The child cannot outlive the block: when an exception leaves it, the child is killed;
    either way its stdin is closed and it is waited for (its exit code is then
    ``proc.returncode``). Nor can it outlive minivm: killed by any signal (a closed terminal,
    SIGKILL), minivm takes the child with it (the kernel's parent-death signal)."""
    argv = [str(a) for a in cmd]
    argv[0] = which(argv[0]) if os.sep not in argv[0] else argv[0]
    log.debug("spawn: %s", " ".join(argv))
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                start_new_session=new_session,
                                preexec_fn=_killed_with(os.getpid()))
    except OSError as e:
        raise MinivmError(f"cannot start {argv[0]}: {e.strerror}") from e
    try:
        yield proc
    except BaseException:
        proc.kill()
        raise
    finally:
        if proc.stdin is not None:
            with suppress(OSError):  # a child that died leaves a broken pipe
                proc.stdin.close()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _killed_with(parent: int) -> Callable[[], None]:
    """What a child runs before its program: ask the kernel for SIGKILL when ``parent`` dies
    (prctl PR_SET_PDEATHSIG), and end at once if it died already."""
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
    return setup


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stderr_tail(data: bytes | None, lines: int = 3) -> str:
    """The last few non-empty lines of a program's stderr, joined on one line."""
    text = (data or b"").decode(errors="replace").strip().splitlines()
    tail = [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(tail) or "no message"

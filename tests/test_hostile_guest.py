"""A hostile guest against `lab cp` and the control channel, on a real MiniVM under TCG.

Root in the guest replaces the toolbox's `tar` with a script that sends, for each attack of
tests/hostile.py, the stream built for it; each copy must leave a canary tree outside the
destination byte- and mode-identical and end in one clean line. The same node then shows what
an honest guest's special files do (device nodes, setuid, a FIFO: skipped, dropped, refused
without blocking the init), docker cp's merge rules, -a, and exec -i moving 50 MB each way at
once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli import MINIVM, cli
from tests.hostile import ATTACKS, make_canary, snapshot
from tests.labs import READY, lab_exec, write_lab

FAKE_TAR = """#!/.minivm/bin/sh
# a hostile guest's tar: the stream prepared for the folder asked for, else the real one
if [ "$1" = -C ] && [ "$3" = -cf ] && [ -f "/attacks/${2##*/}.tar" ]; then
  exec /.minivm/bin/cat "/attacks/${2##*/}.tar"
fi
exec /.minivm/bin/busybox tar "$@"
"""


def clean_line(text: str) -> bool:
    return text.endswith("\n") and text.count("\n") == 1 and "\x1b" not in text \
        and "Traceback" not in text


def check(path: Path, *args: str) -> str:
    done = lab_exec(path, "r1", "--", "sh", "-c", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


@pytest.mark.boot
def test_a_hostile_guest_changes_nothing_outside_the_destination(
        bundle: Path, tmp_path: Path) -> None:
    canary = make_canary(tmp_path / "canary")
    before = snapshot(canary)
    attacks = tmp_path / "attacks"
    attacks.mkdir()
    for attack in ATTACKS:
        (attacks / f"{attack.name}.tar").write_bytes(attack.build(canary))
        (attacks / attack.name).mkdir()
    (attacks / "fake-tar").write_text(FAKE_TAR)
    path = write_lab(tmp_path, bundle, {"r1": ""}, [])
    up = cli("lab", "up", path, "--wait", READY)
    assert up.returncode == 0, up.stderr
    try:
        assert cli("lab", "cp", path, attacks, "r1:/").returncode == 0
        check(path, "rm /.minivm/bin/tar && cp /attacks/fake-tar /.minivm/bin/tar && "
                    "chmod 755 /.minivm/bin/tar")
        out = tmp_path / "out"
        out.mkdir()
        refused = 0
        for attack in ATTACKS:
            dest = out / attack.name
            done = cli("lab", "cp", path, f"r1:/attacks/{attack.name}", dest)
            assert snapshot(canary) == before, attack.name
            lines = done.stderr.splitlines(keepends=True)
            assert lines and all(clean_line(line) for line in lines), (attack.name, done.stderr)
            if attack.refused:
                assert done.returncode == 1 and len(lines) == 1, (attack.name, done.stderr)
                assert lines[0].startswith("error: r1:") and "nothing was copied" in lines[0]
                assert not dest.exists(), attack.name
                refused += 1
            else:
                assert done.returncode == 0, (attack.name, done.stderr)
                assert len(lines) == attack.warnings + 1, (attack.name, done.stderr)
                assert all(line.startswith("warning: r1: skipped") for line in lines[:-1])
                for entry in dest.rglob("*"):
                    mode = entry.lstat().st_mode
                    assert not mode & 0o7000 and (entry.is_file() or entry.is_dir()), entry
        assert refused == sum(a.refused for a in ATTACKS)
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left

        # an honest tar over what root in the guest made: a block device, a setuid binary, a
        # FIFO; the device and the FIFO skipped (one line each), the setuid bit dropped
        check(path, "mkdir -p /loot/fifo && mknod /loot/disk b 8 0 && mknod /loot/null c 1 3 "
                    "&& mkfifo /loot/fifo/f && cp /bin/busybox /loot/suid && "
                    "chmod 6755 /loot/suid && chmod 666 /loot/disk")
        loot = cli("lab", "cp", path, "r1:/loot", out / "loot")
        assert loot.returncode == 0, loot.stderr
        warnings = [line for line in loot.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 3 and all("not copied" in w for w in warnings), loot.stderr
        assert sorted(p.name for p in (out / "loot").rglob("*")) == ["fifo", "suid"]
        assert (out / "loot" / "suid").stat().st_mode & 0o7777 == 0o755
        single = cli("lab", "cp", path, "r1:/loot/suid", out / "suid")
        assert single.returncode == 0 and (out / "suid").stat().st_mode & 0o7777 == 0o755
        for special, kind in (("/loot/fifo/f", "a FIFO"), ("/loot/disk", "a block device")):
            done = cli("lab", "cp", path, f"r1:{special}", out)
            assert done.returncode == 1 and clean_line(done.stderr), done.stderr
            assert kind in done.stderr
        # the init was never blocked: the next request is answered at once
        assert lab_exec(path, "r1", "--", "true", timeout=30).returncode == 0

        # docker cp's rules: SRC into a folder, SRC/. merged into it, a file onto a folder
        check(path, "mkdir -p /m/sub && echo new > /m/sub/new && echo top > /m/top")
        dest = out / "merge"
        (dest / "m" / "sub").mkdir(parents=True)
        (dest / "m" / "sub" / "old").write_text("old\n")
        (dest / "keep").write_text("kept\n")
        assert cli("lab", "cp", path, "r1:/m", dest).returncode == 0
        assert sorted(p.name for p in (dest / "m" / "sub").iterdir()) == ["new", "old"]
        assert cli("lab", "cp", path, "r1:/m/.", dest).returncode == 0
        assert (dest / "top").read_text() == "top\n" and (dest / "keep").read_text() == "kept\n"
        (dest / "clash").mkdir()
        check(path, "echo f > /clash")
        clash = cli("lab", "cp", path, "r1:/clash", dest)
        assert clash.returncode == 1 and "cannot overwrite the folder" in clash.stderr
        onto = cli("lab", "cp", path, "r1:/m", dest / "keep")
        assert onto.returncode == 1 and "onto the file" in onto.stderr

        # -a keeps the guest's owners (root only); without it the files are the caller's
        check(path, "mkdir -p /own && echo x > /own/f && chown -R 1234:5678 /own")
        assert cli("lab", "cp", path, "r1:/own", out / "mine").returncode == 0
        assert (out / "mine" / "f").stat().st_uid == os.getuid()
        if os.geteuid() == 0:
            assert cli("lab", "cp", path, "-a", "r1:/own", out / "theirs").returncode == 0
            st = (out / "theirs" / "f").stat()
            assert (st.st_uid, st.st_gid) == (1234, 5678)

        # exec -i: a command that writes 50 MB before it reads 50 MB of stdin
        blob = os.urandom(50_000_000)
        duplex = subprocess.run(
            [*MINIVM, "lab", "exec", "-i", str(path), "r1", "--",
             "sh", "-c", "head -c 50000000 /dev/zero; md5sum"],
            input=blob, capture_output=True, timeout=900)
        assert duplex.returncode == 0, duplex.stderr[-2000:]
        assert duplex.stdout[:50_000_000] == bytes(50_000_000)
        assert duplex.stdout[50_000_000:].split()[0].decode() == hashlib.md5(blob).hexdigest()
    finally:
        down = cli("lab", "down", path, "--json")
    assert down.returncode == 0, down.stderr
    assert '"r1": "acpi"' in down.stdout  # the power button still works

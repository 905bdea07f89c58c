"""The MiniVM's PID 1 (init/): real boots under TCG with the kernel kit.

Each test builds a small image with `minivm build`, boots it and reads the serial console.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from minivm.image import inject
from minivm.ui import QUIET
from minivm.vm import vmctl
from tests.initvm import (
    boot,
    build_disk,
    fsck,
    udp_link,
    writable_copy,
    write_context,
)
from tests.marks import fixture
from tests.vm import scsi_disk_at, size_at_target


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("init-builds")


SHOW = """\
    #!/bin/sh
    echo "SHOW uid=$(id -u) gid=$(id -g) cwd=$(pwd) argc=$#"
    for a in "$@"; do echo "SHOW arg=<$a>"; done
    env | sort | sed 's/^/SHOW env /'
    echo "SHOW hostname=$(cat /proc/sys/kernel/hostname)"
    sed 's/^/SHOW hosts /' /etc/hosts
    sed 's/^/SHOW resolv /' /etc/resolv.conf
    echo "SHOW done"
"""


@fixture("engine", scope="module")
def entrypoint_disk(out) -> Path:
    ctx = write_context(out / "ctx" / "entryimg", {
        "Dockerfile": """\
            FROM debian:bookworm-slim
            RUN useradd -u 1234 -m tester && mkdir /work && chown tester /work
            COPY show.sh /usr/local/bin/show.sh
            ENV GREETING="hello world" LEVEL=3
            WORKDIR /work
            USER tester
            ENTRYPOINT ["/usr/local/bin/show.sh", "ep-arg"]
            CMD ["cmd-arg1", "cmd arg2"]
        """,
        "show.sh": SHOW,
    })
    return build_disk(ctx, out).qcow2


def both(*texts: str) -> str:
    """A pattern matching once every text has appeared, in any order."""
    return "(?s)" + "".join(f"(?=.*{re.escape(t)})" for t in texts)


def shown(output: str) -> dict[str, list[str]]:
    """The SHOW lines of the console, by their first word."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        if m := re.search(r"SHOW (\S+?)[= ](.*)$", line):
            found.setdefault(m[1], []).append(m[2])
    return found


@pytest.mark.boot
def test_entrypoint_runs_with_the_image_config(kit, entrypoint_disk):
    with boot(kit, entrypoint_disk, snapshot=True) as vm:
        vm.expect("SHOW done", timeout=90)
        assert vm.wait_exit(timeout=30) == 0  # main process exit -> power off
    seen = shown(vm.output)
    assert seen["uid"] == ["1234 gid=1234 cwd=/work argc=3"]
    assert seen["arg"] == ["<ep-arg>", "<cmd-arg1>", "<cmd arg2>"]
    env = dict(e.split("=", 1) for e in seen["env"])
    assert env["GREETING"] == "hello world" and env["LEVEL"] == "3"
    assert env["HOME"] == "/home/tester" and env["HOSTNAME"] == "entryimg"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # Docker's set: the image's ENV plus PATH, HOSTNAME, HOME (PWD is the shell's own)
    assert set(env) == {"GREETING", "LEVEL", "PATH", "HOSTNAME", "HOME", "PWD"}
    assert seen["hostname"] == ["entryimg"]
    assert "127.0.0.1\tlocalhost" in seen["hosts"] and "127.0.1.1\tentryimg" in seen["hosts"]
    assert "nameserver 8.8.8.8" in seen["resolv"]
    assert "main process exited (status 0)" in vm.output


@pytest.mark.boot
def test_kernel_arguments_override(kit, entrypoint_disk):
    append = ("hostname=custom-host LEVEL=9 MANAGEMENT_INTERFACE=eth0 dns=10.9.9.9 "
              "add_host=db:10.1.2.3 -- first \"second word\"")
    with boot(kit, entrypoint_disk, snapshot=True, append=append) as vm:
        vm.expect("SHOW done", timeout=90)
        assert vm.wait_exit(timeout=30) == 0
    seen = shown(vm.output)
    assert seen["arg"] == ["<ep-arg>", "<first>", "<second word>"]  # `--` replaces CMD
    env = dict(e.split("=", 1) for e in seen["env"])
    assert env["LEVEL"] == "9" and env["MANAGEMENT_INTERFACE"] == "eth0"  # kernel env wins
    assert env["GREETING"] == "hello world" and env["HOSTNAME"] == "custom-host"
    assert not {"hostname", "dns", "add_host"} & env.keys()
    assert seen["hostname"] == ["custom-host"]
    assert "10.1.2.3\tdb" in seen["hosts"]
    assert "nameserver 10.9.9.9" in seen["resolv"] and "nameserver 8.8.8.8" not in seen["resolv"]


@pytest.mark.boot
def test_hostname_from_the_images_etc_hostname(kit, out):
    ctx = write_context(out / "ctx" / "hostfile", {
        "Dockerfile": """\
            FROM minivm-test/busybox
            COPY hostname /etc/hostname
            CMD ["sh", "-c", "echo HOST=$(hostname)"]
        """, "hostname": "from-etc-hostname\n"})
    with boot(kit, build_disk(ctx, out).qcow2, snapshot=True, append="minivm.console=off") as vm:
        match = vm.expect(r"HOST=(\S+)\n", timeout=90)
        assert vm.wait_exit(timeout=30) == 0
    assert match[1] == "from-etc-hostname"


@pytest.mark.boot
def test_hostname_from_the_ip_argument(kit, out):
    """The hostname field of ip= names the guest (as the kernel's own ip= does), before the
    image's /etc/hostname; hostname= still wins over both."""
    ctx = write_context(out / "ctx" / "hostfile", {
        "Dockerfile": """\
            FROM minivm-test/busybox
            COPY hostname /etc/hostname
            CMD ["sh", "-c", "echo HOST=$(hostname)"]
        """, "hostname": "from-etc-hostname\n"})
    disk = build_disk(ctx, out).qcow2
    for append, expected in (("ip=10.0.0.1/24::::r1:eth0", "r1"),
                             ("ip=10.0.0.1/24::::r1:eth0 hostname=r9", "r9")):
        with boot(kit, disk, snapshot=True, append=f"minivm.console=off {append}") as vm:
            match = vm.expect(r"HOST=(\S+)\n", timeout=90)
            assert vm.wait_exit(timeout=30) == 0
        assert match[1] == expected, append


@pytest.mark.boot
def test_scratch_image_with_one_static_binary(kit, out):
    ctx = write_context(out / "ctx" / "scratchimg", {
        "Dockerfile": """\
            FROM scratch
            COPY busybox /busybox
            ENTRYPOINT ["/busybox", "sh", "-c"]
            CMD ["echo SCRATCH RAN as $(/busybox id -u) on $(/busybox hostname); \
                  exec /busybox sleep 1000"]
        """})
    shutil.copy2("/bin/busybox", ctx / "busybox")
    disk = writable_copy(build_disk(ctx, out).qcow2, out / "run")
    with boot(kit, disk) as vm:
        # No shell in the image: the console shell is the toolbox's.
        vm.expect(both("SCRATCH RAN as 0 on scratchimg", "# "), timeout=90)
        vm.sendline("echo answer=$((6*7)); ls /.minivm/bin/poweroff")
        vm.expect("answer=42", timeout=30)
        vm.sendline("poweroff")
        assert vm.wait_exit(timeout=30) == 0
    assert fsck(disk).returncode == 0


@fixture("engine", scope="module")
def sleeper_disks(out) -> dict[str, Path]:
    """A Debian image whose main process waits, with and without an ACPI hook."""
    disks = {}
    for name, hook in (("hooked", True), ("plain", False)):
        files = {"Dockerfile": """\
            FROM debian:bookworm-slim
            COPY etc /etc/
            CMD ["sh", "-c", "echo READY; exec sleep infinity"]
        """, "etc/hostname": f"{name}\n"}
        if hook:
            files["etc/acpi/PWRF/00000080"] = """\
                #!/bin/sh
                echo "PWRF HOOK RAN"
                poweroff
            """
        ctx = write_context(out / "ctx" / name, files,
                            modes={"etc/acpi/PWRF/00000080": 0o755})
        disks[name] = build_disk(ctx, out).qcow2
    return disks


@pytest.mark.boot
@pytest.mark.parametrize("how", ["button-hook", "button", "poweroff", "sigusr2", "sigint"])
def test_clean_power_off(kit, sleeper_disks, out, how, tmp_path):
    disk = writable_copy(sleeper_disks["plain" if how == "button" else "hooked"], tmp_path)
    qmp = tmp_path / "qmp.sock"
    with boot(kit, disk, qmp=qmp) as vm:
        # READY from the main process, and the prompt of the console shell (dash)
        vm.expect(both("READY", "# "), timeout=90)
        if how.startswith("button"):
            vmctl.powerdown(qmp)
        else:
            vm.sendline({"poweroff": "poweroff", "sigusr2": "kill -USR2 1",
                         "sigint": "kill -INT 1"}[how])  # SIGINT (Ctrl-Alt-Del): reboot
        started = vm.seconds
        assert vm.wait_exit(timeout=10) == 0
        took = vm.seconds - started
    assert ("PWRF HOOK RAN" in vm.output) == (how == "button-hook")
    assert ("rebooting" if how == "sigint" else "powering off") in vm.output  # -no-reboot
    result = fsck(disk)
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"{how}: QEMU exited {took:.2f} s after the request")


@pytest.mark.boot
def test_init_loads_what_the_initramfs_left(kit, sleeper_disks, tmp_path):
    """While the main process starts, the init scans every SCSI target (a disk at target 5)
    and loads the drivers of devices that have none (the IDE controller, from the module
    disk); the network driver was loaded before (the main process found eth0)."""
    args = scsi_disk_at(tmp_path / "extra.img", 5)
    with boot(kit, sleeper_disks["plain"], snapshot=True, user_nics=1, extra=args) as vm:
        vm.expect(both("READY", "# "), timeout=90)
        # The IDE controller has its driver: loaded from the module disk (cloud flavour), or
        # built in (minimal flavour).
        ide = "ls -d /sys/bus/pci/drivers/ata_piix/0000:* 2>/dev/null | wc -l"
        vm.sendline(f"for i in $(seq 100); do [ $({ide}) = 1 ] && "
                    "ls /sys/class/scsi_device/*:0:5:0/device/block >/dev/null 2>&1 && break; "
                    f"sleep 0.2; done; echo \"LATE $({size_at_target(5)}) $({ide}) "
                    "$(ls /sys/class/net | tr '\\n' ' ')\"")
        vm.expect(r"LATE (\d+) (\d) ([^\n]*)\n", timeout=60)
        vm.sendline("poweroff")
        assert vm.wait_exit(timeout=30) == 0
    late = re.search(r"LATE (\d+) (\d) ([^\n]*)", vm.output)
    assert late and late.group(1) == "8192" and late.group(2) == "1"
    assert "eth0" in late.group(3)


@pytest.mark.boot
def test_getty_console_login(kit, out):
    """minivm.console=getty: the image's agetty on the serial console (the hostname is the
    appliance's name); a login there gives a shell, and leaving it brings the prompt back."""
    ctx = write_context(out / "ctx" / "getty", {"Dockerfile": """\
        FROM debian:bookworm-slim
        RUN echo root:minivm | chpasswd
        CMD ["sh", "-c", "echo READY; exec sleep infinity"]
    """})
    with boot(kit, build_disk(ctx, out).qcow2, snapshot=True,
              append="minivm.console=getty") as vm:
        vm.expect(both("READY", "getty login: "), timeout=90)
        vm.sendline("root")
        vm.expect("Password: ", timeout=30)
        vm.sendline("minivm")
        vm.expect(r"# ", timeout=30)
        vm.sendline("echo \"LOGGED-IN uid=$(id -u) tty=$(tty)\"; exit")
        vm.expect(r"LOGGED-IN uid=0 tty=/dev/ttyS0", timeout=30)
        vm.expect("getty login: ", timeout=30)  # respawned after the session ended
        vm.sendline("root")
        vm.expect("Password: ", timeout=30)
        vm.sendline("minivm")
        vm.expect(r"# ", timeout=30)
        vm.sendline("poweroff")
        assert vm.wait_exit(timeout=30) == 0


@pytest.mark.boot
def test_signals_are_forwarded_to_the_main_process(kit, out):
    ctx = write_context(out / "ctx" / "trapper", {"Dockerfile": """\
        FROM minivm-test/busybox
        CMD ["sh", "-c", "trap 'echo GOT-HUP' HUP; echo READY; while :; do sleep 0.1; done"]
    """})
    with boot(kit, build_disk(ctx, out).qcow2, snapshot=True) as vm:
        vm.expect(both("READY", "# "), timeout=90)
        vm.sendline("kill -HUP 1")
        vm.expect("GOT-HUP", timeout=30)
        vm.sendline("poweroff")
        assert vm.wait_exit(timeout=30) == 0


@pytest.mark.boot
def test_main_process_respawns_when_asked(kit, out):
    ctx = write_context(out / "ctx" / "respawn", {"Dockerfile": """\
        FROM minivm-test/busybox
        CMD ["sh", "-c", "echo RUN-$(cat /proc/uptime | cut -d. -f1)-END"]
    """})
    disk = build_disk(ctx, out).qcow2
    with boot(kit, disk, snapshot=True, append="minivm.on_exit=respawn") as vm:
        for _ in range(3):
            vm.expect(r"RUN-\d+-END", timeout=90)
        vm.sendline("kill -USR2 1")
        assert vm.wait_exit(timeout=30) == 0
    assert vm.output.count("main process exited (status 0): respawn") >= 2


@pytest.mark.boot
def test_file_survives_reboot(kit, sleeper_disks, tmp_path):
    disk = writable_copy(sleeper_disks["plain"], tmp_path)
    with boot(kit, disk) as vm:
        vm.expect(both("READY", "# "), timeout=90)
        vm.sendline("echo kept-across-boots > /root/marker; poweroff")
        assert vm.wait_exit(timeout=30) == 0
    with boot(kit, disk) as vm:
        vm.expect(both("READY", "# "), timeout=90)
        vm.sendline("cat /root/marker; poweroff")
        vm.expect("\nkept-across-boots", timeout=30)
        assert vm.wait_exit(timeout=30) == 0
    assert fsck(disk).returncode == 0


@pytest.mark.boot
def test_orphans_are_reaped(kit, out):
    ctx = write_context(out / "ctx" / "zombies", {
        "Dockerfile": """\
            FROM minivm-test/busybox
            COPY orphans.sh /orphans.sh
            CMD ["/orphans.sh"]
        """,
        "orphans.sh": """\
            #!/bin/sh
            # Children whose parent exits at once: PID 1 inherits them and must reap them.
            for i in 1 2 3 4 5; do sh -c 'sleep 0.2 & sleep 0.1 & exit 0'; done
            sleep 2
            echo "ORPHANS $(ls -d /proc/[0-9]* | wc -l) processes"
            echo "ZOMBIES $(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == "Z"' | wc -l)"
        """})
    with boot(kit, build_disk(ctx, out).qcow2, snapshot=True, append="minivm.console=off") as vm:
        match = vm.expect(r"ZOMBIES (\d+)\n", timeout=90)
        assert vm.wait_exit(timeout=30) == 0
    assert match[1] == "0"


NET_SERVER = """\
    #!/bin/sh
    touch /tmp/udhcpd.leases
    ip -4 addr show | sed -n 's/.*inet \\([0-9.]*\\).* \\(eth[0-9]\\)$/SERVER \\2 \\1/p'
    exec udhcpd -f /etc/udhcpd.conf
"""
NET_CLIENT = """\
    #!/bin/sh
    # Wait for an IPv4 address on eth0 (static: at once; DHCP: a lease), then ping the server.
    # Up to 90 s: when its first DISCOVERs go unanswered, udhcpc pauses 20 s before retrying.
    i=0
    until addr=$(ip -4 addr show dev eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p') \
          && [ -n "$addr" ]; do
        i=$((i + 1)); [ $i -gt 900 ] && break; sleep 0.1
    done
    echo "CLIENT addr=$addr dns=$(grep -m1 nameserver /etc/resolv.conf)"
    if ping -c 2 -W 3 "$1" >/dev/null || ping -c 3 -W 5 "$1"; then echo "PING OK"; \
    else echo "PING FAILED"; fi
"""


@pytest.mark.boot
def test_two_vms_static_and_dhcp(kit, out, tmp_path):
    ctx = write_context(out / "ctx" / "netimg", {
        "Dockerfile": """\
            FROM minivm-test/busybox
            COPY server.sh client.sh /
            COPY udhcpd.conf /etc/udhcpd.conf
        """,
        "server.sh": NET_SERVER, "client.sh": NET_CLIENT,
        "udhcpd.conf": """\
            start 10.0.1.100
            end 10.0.1.110
            interface eth1
            option subnet 255.255.255.0
            option router 10.0.1.1
            option dns 10.0.1.1
            lease_file /tmp/udhcpd.leases
        """})
    disk = build_disk(ctx, out).qcow2
    with udp_link() as (a0, b0), udp_link() as (a1, c0):
        server = boot(kit, disk, snapshot=True, links=[a0, a1], log=tmp_path / "server.log",
                      append="ip=10.0.0.1:::255.255.255.0::eth0:off ip=10.0.1.1/24:::::eth1 "
                      "minivm.console=off -- /server.sh")
        with server:
            server.expect(r"SERVER eth1 10\.0\.1\.1", timeout=120)
            static = boot(kit, disk, snapshot=True, links=[b0],
                          append="ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off "
                          "minivm.console=off -- /client.sh 10.0.0.1")
            dhcp = boot(kit, disk, snapshot=True, links=[c0],
                        append="minivm.console=off -- /client.sh 10.0.1.1")
            with static, dhcp:
                static.expect(r"CLIENT addr=10\.0\.0\.2", timeout=120)
                static.expect(r"PING (OK|FAILED)", timeout=60)
                dhcp.expect(r"CLIENT addr=10\.0\.1\.1(0\d|10) dns=nameserver 10\.0\.1\.1",
                            timeout=120)
                dhcp.expect(r"PING (OK|FAILED)", timeout=60)
                assert static.wait_exit(timeout=30) == 0
                assert dhcp.wait_exit(timeout=30) == 0
    assert "PING OK" in static.output, static.output[-2000:]
    assert "PING OK" in dhcp.output, dhcp.output[-2000:]


@pytest.mark.engine
def test_init_refuses_unless_pid_1():
    tree = inject.prepare(reporter=QUIET).root
    proc = subprocess.run([tree / ".minivm" / "init"], capture_output=True, text=True)
    assert proc.returncode == 1 and "PID 1" in proc.stderr


@pytest.mark.engine
def test_injection_is_small_and_cached(monkeypatch):
    first = inject.prepare(reporter=QUIET)
    assert (first.root / ".minivm" / "init").is_file()
    assert (first.root / ".minivm" / "bin" / "busybox").is_file()
    assert (first.root / ".minivm" / "bin" / "poweroff").is_symlink()
    assert inject.tree_bytes(first.root) < 1_000_000
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # no engine: the cache answers
    assert inject.prepare(reporter=QUIET) == first


@pytest.mark.boot
def test_power_button_on_each_kernel_flavour(any_kit, sleeper_disks, tmp_path):
    """GNS3's stop (the ACPI power button) powers the node off cleanly on every flavour."""
    disk = writable_copy(sleeper_disks["hooked"], tmp_path)
    qmp = tmp_path / "qmp.sock"
    with boot(any_kit, disk, qmp=qmp) as vm:
        vm.expect(both("READY", "# "), timeout=90)
        vmctl.powerdown(qmp)
        assert vm.wait_exit(timeout=10) == 0
    assert "PWRF HOOK RAN" in vm.output and "powering off" in vm.output
    result = fsck(disk)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.boot
def test_e1000_and_sata_nodes_ping(kit, out, tmp_path):
    """GNS3's default adapter (e1000) and its `sata` disk interface (AHCI): two nodes boot
    from SATA disks and ping each other over a UDP link, as GNS3 links them."""
    ctx = write_context(out / "ctx" / "e1000img", {
        "Dockerfile": """\
            FROM minivm-test/busybox
            COPY client.sh server.sh show-hw.sh /
        """,
        "client.sh": "#!/bin/sh\n/show-hw.sh\n" + textwrap.dedent(NET_CLIENT),
        "server.sh": "#!/bin/sh\n/show-hw.sh\nexec sleep 600\n",
        "show-hw.sh": """\
            #!/bin/sh
            root=$(awk '$2 == "/" {print $1}' /proc/mounts)
            echo "HW root=$root disk=$(readlink -f /sys/class/block/${root#/dev/}) \\
            nic=$(readlink /sys/class/net/eth0/device/driver)"
        """})
    disk = build_disk(ctx, out).qcow2
    with udp_link() as (a0, b0):
        server = boot(kit, disk, snapshot=True, links=[a0], interface="sata", nic_model="e1000",
                      append="ip=10.0.0.1:::255.255.255.0::eth0:off minivm.console=off "
                      "-- /server.sh")
        client = boot(kit, disk, snapshot=True, links=[b0], interface="sata", nic_model="e1000",
                      append="ip=10.0.0.2:::255.255.255.0::eth0:off "
                      "minivm.console=off -- /client.sh 10.0.0.1")
        with server, client:
            server.expect(r"HW root=", timeout=120)
            client.expect(r"PING (OK|FAILED)", timeout=180)
            assert client.wait_exit(timeout=30) == 0
    assert "PING OK" in client.output, client.output[-2000:]
    for vm in (server, client):
        hw = re.search(r"HW root=(\S+) disk=(\S+) nic=(\S+)", vm.output)
        assert hw, vm.output[-2000:]
        assert "/ata" in hw[2] and hw[3].endswith("/e1000"), hw[0]  # AHCI's port, e1000

"""Labs: several MiniVMs described in a YAML file, linked by GNS3-style UDP tunnels.

A lab file::

    accel: auto                  # auto | kvm | tcg (the command line's --accel wins)
    console: unix                # unix (default: `minivm lab console`) | telnet (127.0.0.1)
    nodes:
      r1:
        appliance: alpine-minivm # a built appliance name, or a path to a .gns3a
        ram: 256                 # MB (default: the appliance's)
        append: ip=10.0.0.1/24::::r1:eth0   # kernel arguments after the appliance's
        adapters: 2              # default: the appliance's; never more
        publish: ["8080:80", "5353:53/udp"]  # 127.0.0.1:8080 on the host reaches port 80
        console: telnet          # this node's console on 127.0.0.1:PORT (for tools that need it)
      r2: {appliance: ./out/debian-minivm/debian-minivm.gns3a}
    links:
      - r1:eth0 -- r2:eth0
      - r1:eth1 -- udp:127.0.0.1:40001:40000  # send to 127.0.0.1:40001, listen on 40000

A link is two UDP tunnels on 127.0.0.1: each end listens on its own port and sends to the
other's, as GNS3 wires QEMU to uBridge. Ports come from the kernel (bind to port 0) and the
bound sockets are held, with SO_REUSEADDR, until the QEMU that shares the port (QEMU binds
with SO_REUSEADDR too) has started: no other port-0 allocation can get them in between.

The lab's state lives in ``<lab>.state/`` beside the lab file (mode 0700): ``state.json``
(pids, ports, consoles), ``lock``, and per node, in ``nodes/<name>/``, its overlays
(``hda_disk.qcow2``...: the node's disks, kept across ``down``/``up``), ``console.log`` (boot
logs), ``qemu.log``, and its sockets (mode 0600): ``console.sock`` (the serial console,
``minivm lab console``), ``qmp.sock``, ``monitor.sock``, ``control.sock`` (the control
channel: ``minivm lab exec`` and ``cp``).
A node recorded as running whose QEMU is gone (a crash, a kill -9) is reported as such and
started again by the next ``up``, on the same link ports so its peers still reach it.
"""

from minivm.lab.control import (
    console_address,
    control_socket,
    down,
    node_id,
    status,
    up,
    wait_console,
)
from minivm.lab.ports import hold_port
from minivm.lab.spec import External, Lab, Link, Node, check_options, load, state_dir_of
from minivm.lab.state import node_dir

__all__ = ["External", "Lab", "Link", "Node", "check_options", "console_address",
           "control_socket", "down", "hold_port", "load", "node_dir", "node_id",
           "state_dir_of", "status", "up", "wait_console"]

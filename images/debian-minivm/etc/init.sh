#!/bin/sh
# Entry point of debian-minivm, as a MiniVM and as a container (`docker run`, GNS3 Docker node).
# In a MiniVM, minivm's init has already set the hostname, /etc/hosts, /etc/resolv.conf and
# the network (DHCP on eth0, or ip= on the kernel command line) and watches the power button:
# what is left is a shell. It is not a login shell: /etc/profile would drop minivm's toolbox
# (poweroff, reboot) from PATH. In a container, /etc/minivm/container.sh also sets up the
# network of a GNS3 node and ends the container cleanly on SIGTERM.
if [ -f /.dockerenv ]; then
	. /etc/minivm/container.sh
	container_main /bin/bash "$@"
fi
echo "Welcome to $(hostname), a MiniVM (type 'poweroff' to stop it)."
cd /root 2>/dev/null || cd /
exec /bin/bash "$@"

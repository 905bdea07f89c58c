#!/bin/sh
# Entry point of alpine-minivm, as a MiniVM and as a container (`docker run`, GNS3 Docker node).
# In a MiniVM, minivm's init has already set the hostname, /etc/hosts, /etc/resolv.conf and
# the network (ifup -a from /etc/network/interfaces) and watches the power button: what is
# left is a shell. In a container, /etc/minivm/container.sh also sets up the network of a
# GNS3 node and ends the container cleanly on SIGTERM.
if [ -f /.dockerenv ]; then
	. /etc/minivm/container.sh
	container_main /bin/sh -l "$@"
fi
echo "Welcome to $(hostname), a MiniVM (type 'poweroff' to stop it)."
cd /root 2>/dev/null || cd /
exec /bin/sh -l "$@"

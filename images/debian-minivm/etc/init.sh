#!/bin/sh
# Entry point of debian-minivm, in Docker and as a MiniVM.
# In a MiniVM, minivm's init has already set the hostname, /etc/hosts, /etc/resolv.conf and
# the network (DHCP on eth0, or ip= on the kernel command line) and watches the power button;
# in Docker the engine did the same. Either way what is left is a shell. It is not a login
# shell: /etc/profile would drop minivm's toolbox (poweroff, reboot) from PATH.
if [ -f /.dockerenv ]; then
	where="a Docker container"
else
	where="a MiniVM (type 'poweroff' to stop it)"
fi
echo "Welcome to $(hostname), $where."
cd /root 2>/dev/null || cd /
exec /bin/bash "$@"

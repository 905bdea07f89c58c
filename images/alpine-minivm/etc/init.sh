#!/bin/sh
# Entry point of alpine-minivm, in Docker and as a MiniVM.
# In a MiniVM, minivm's init has already set the hostname, /etc/hosts, /etc/resolv.conf and
# the network (ifup -a from /etc/network/interfaces) and watches the power button; in Docker
# the engine did the same. Either way what is left is a shell.
if [ -f /.dockerenv ]; then
	where="a Docker container"
else
	where="a MiniVM (type 'poweroff' to stop it)"
fi
echo "Welcome to $(hostname), $where."
cd /root 2>/dev/null || cd /
exec /bin/sh -l "$@"

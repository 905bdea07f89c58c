# Sourced by /etc/init.sh when the image runs as a container (`docker run`, or a GNS3 Docker
# node), never in a MiniVM. Every shipped image carries the same copy of this file.
#
# GNS3 starts a Docker node with networking disabled and GNS3_MAX_ETHERNET=ethN in the
# environment, runs its own /gns3/init.sh first (which brings lo up, waits for ethN and runs
# its busybox `ifup -a -f`), and moves the node's adapters in as eth0..ethN right after the
# start; /etc/network is a volume GNS3 keeps per node. So, when GNS3_MAX_ETHERNET is set:
# wait (bounded) for ethN, then give each adapter still without an address the configuration
# of its `auto` stanza in /etc/network/interfaces (static: address, netmask, gateway; dhcp),
# else DHCP on eth0 (as in a MiniVM). Without it, Docker has configured the network already.
#
# The shell runs as a child, so that SIGTERM (`docker stop`, GNS3's stop) ends the container
# at once: the shell gets SIGHUP (an interactive shell ignores SIGTERM), then the container
# exits 0. A child started that way would have SIGINT and SIGQUIT ignored (POSIX, for any
# background command of a script); `env --default-signal` (coreutils) gives them back, so
# that Ctrl-C reaches the console's commands. Without it (a busybox-only image) they stay
# ignored.

# Seconds to wait for the adapters GNS3 moves in.
MINIVM_ADAPTER_WAIT=${MINIVM_ADAPTER_WAIT:-30}
NODE_CHILDREN=""

node_say() {
	echo "minivm: $*" >&2
}

node_adapters() {
	sed -n 's/^ *\(eth[0-9][0-9]*\):.*/\1/p' /proc/net/dev
}

node_sleep() {
	sleep 0.1 2>/dev/null || sleep 1
}

# Wait until $GNS3_MAX_ETHERNET exists (at most MINIVM_ADAPTER_WAIT seconds).
node_wait_adapters() {
	tenths=$((MINIVM_ADAPTER_WAIT * 10))
	while ! grep -q "^ *$GNS3_MAX_ETHERNET:" /proc/net/dev; do
		if [ "$tenths" -le 0 ]; then
			node_say "$GNS3_MAX_ETHERNET did not appear within ${MINIVM_ADAPTER_WAIT} s;" \
				"going on with: $(node_adapters | tr '\n' ' ')"
			return 1
		fi
		node_sleep
		tenths=$((tenths - 1))
	done
}

# "METHOD ADDRESS NETMASK GATEWAY" ("-" for none) of DEV's stanza in /etc/network/interfaces,
# if an `auto` (or `allow-*`) line names DEV; nothing otherwise.
node_stanza() {
	[ -r /etc/network/interfaces ] || return 0
	awk -v dev="$1" '
		{ sub(/#.*/, "") }
		$1 == "auto" || $1 ~ /^allow-/ { for (i = 2; i <= NF; i++) if ($i == dev) auto = 1; next }
		$1 == "iface" { inside = ($2 == dev && $3 == "inet"); if (inside) method = $4; next }
		$1 == "mapping" || $1 ~ /^source/ { inside = 0; next }
		inside && $1 == "address" { address = $2 }
		inside && $1 == "netmask" { netmask = $2 }
		inside && $1 == "gateway" { gateway = $2 }
		END {
			if (auto && method != "")
				print method, (address == "" ? "-" : address), (netmask == "" ? "-" : netmask),
					(gateway == "" ? "-" : gateway)
		}' /etc/network/interfaces
}

# Prefix length of a dotted netmask, or the number itself.
node_prefix() {
	case "$1" in
	*.*.*.*) ;;
	*) echo "$1"; return ;;
	esac
	bits=0
	for octet in $(echo "$1" | tr . ' '); do
		case "$octet" in
		255) bits=$((bits + 8)) ;; 254) bits=$((bits + 7)) ;; 252) bits=$((bits + 6)) ;;
		248) bits=$((bits + 5)) ;; 240) bits=$((bits + 4)) ;; 224) bits=$((bits + 3)) ;;
		192) bits=$((bits + 2)) ;; 128) bits=$((bits + 1)) ;;
		esac
	done
	echo "$bits"
}

# DHCP on DEV in the background: the image's udhcpc (with its default script), else GNS3's
# busybox and script, else dhclient.
node_dhcp() {
	if command -v udhcpc >/dev/null 2>&1 && { [ -x /usr/share/udhcpc/default.script ] ||
		[ -x /etc/udhcpc/default.script ]; }; then
		udhcpc -f -S -i "$1" >/dev/null 2>&1 &
	elif [ -x /gns3/bin/busybox ] && [ -f /gns3/etc/udhcpc/default.script ]; then
		/gns3/bin/busybox udhcpc -f -S -i "$1" -s /gns3/etc/udhcpc/default.script \
			>/dev/null 2>&1 &
	elif command -v dhclient >/dev/null 2>&1; then
		dhclient -d "$1" >/dev/null 2>&1 &
	else
		node_say "$1: no DHCP client in this image; give it an address in" \
			"/etc/network/interfaces"
		return 1
	fi
	NODE_CHILDREN="$NODE_CHILDREN $!"
	node_say "$1: DHCP"
}

node_configure() {
	for dev in $(node_adapters); do
		ip link set dev "$dev" up
		# Configured already (by GNS3's own init.sh, from the same file).
		ip -4 addr show dev "$dev" | grep -q ' inet ' && continue
		set -- $(node_stanza "$dev")
		case "${1:-}" in
		static)
			address=$2
			case "$address" in
			-) node_say "$dev: static without an address"; continue ;;
			*/*) ;;
			*) address="$address/$(node_prefix "${3#-}")" ;;
			esac
			address=${address%/}
			ip addr add "$address" dev "$dev" && node_say "$dev: $address"
			[ "$4" != - ] && ip route replace default via "$4" dev "$dev"
			;;
		# GNS3's init.sh has run `ifup -a`: its DHCP client may still be asking.
		dhcp) [ -n "${GNS3_VOLUMES:-}" ] || node_dhcp "$dev" ;;
		"") [ "$dev" = eth0 ] && node_dhcp "$dev" ;;
		esac
	done
}

node_stop() {
	trap '' TERM INT HUP
	kill -HUP "$NODE_MAIN" 2>/dev/null
	tenths=20
	while kill -0 "$NODE_MAIN" 2>/dev/null && [ "$tenths" -gt 0 ]; do
		node_sleep
		tenths=$((tenths - 1))
	done
	kill -KILL "$NODE_MAIN" $NODE_CHILDREN 2>/dev/null
	exit 0
}

# container_main COMMAND ARGS...: the network of a GNS3 node, a welcome line, then COMMAND
# as a child on the container's stdin; the container ends with it, or on SIGTERM.
container_main() {
	trap node_stop TERM INT HUP
	if [ -n "${GNS3_MAX_ETHERNET:-}" ]; then
		ip link set dev lo up
		node_wait_adapters
		node_configure
		where="a GNS3 Docker node"
	else
		where="a Docker container"
	fi
	echo "Welcome to $(hostname), $where."
	cd /root 2>/dev/null || cd /
	exec 3<&0
	if env --default-signal=INT true 2>/dev/null; then
		env --default-signal=INT,QUIT "$@" <&3 3<&- &
	else
		"$@" <&3 3<&- &
	fi
	NODE_MAIN=$!
	exec 3<&-
	wait "$NODE_MAIN"
	status=$?
	[ -n "$NODE_CHILDREN" ] && kill $NODE_CHILDREN 2>/dev/null
	exit "$status"
}

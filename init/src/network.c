/* Network and name resolution: eth0..ethN in adapter order, lo, ip= or ifupdown or DHCP,
 * the hostname, /etc/hosts and /etc/resolv.conf (written as Docker would). */
#include "minivm.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MARK_DEFAULT "# minivm: default"  /* DHCP may replace it */
#define MARK_KERNEL "# minivm: kernel"    /* set by a kernel argument: kept as is */
#define MARK_HOSTS "# minivm: add_host"   /* the block added to an image's own /etc/hosts */

static int sock = -1;
static char first_ip[INET_ADDRSTRLEN]; /* the first static address given */
static bool publish; /* the published ports' NIC is there */

static int ifsock(void)
{
	if (sock < 0)
		sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	return sock;
}

static int set_flags(const char *ifname, short on)
{
	struct ifreq ifr = {0};
	scopy(ifr.ifr_name, IFNAMSIZ, ifname);
	if (ioctl(ifsock(), SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags |= on;
	return ioctl(ifsock(), SIOCSIFFLAGS, &ifr);
}

static int rename_if(const char *from, const char *to)
{
	struct ifreq ifr = {0};
	scopy(ifr.ifr_name, IFNAMSIZ, from);
	scopy(ifr.ifr_newname, IFNAMSIZ, to);
	return ioctl(ifsock(), SIOCSIFNAME, &ifr);
}

struct nic {
	char name[IFNAMSIZ];
	char dev[PATH_MAX]; /* sysfs path of the adapter: its PCI address orders it */
};

/* The NIC of published ports (minivm run -p, a lab node's publish:): QEMU's user-mode network,
 * known by its MAC, named publish0, never one of eth0..ethN. Its address is fixed (QEMU forwards
 * the host's ports to it); no route goes through it. */
#define PUBLISH_MAC "0e:6d:76:70:75:62"
#define PUBLISH_IF "publish0"
#define PUBLISH_ADDR "100.127.255.15"

static bool is_publish_nic(const char *ifname)
{
	char path[300];
	snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifname);
	char *mac = read_file(path, NULL);
	bool yes = mac && strncmp(mac, PUBLISH_MAC, strlen(PUBLISH_MAC)) == 0;
	free(mac);
	return yes;
}

static int by_dev(const void *a, const void *b)
{
	return strcmp(((const struct nic *)a)->dev, ((const struct nic *)b)->dev);
}

/* Name the adapters eth0..ethN in the order of their PCI addresses (GNS3's adapter order, also
 * when the adapters sit behind a PCI bridge). Returns how many there are. */
static int name_adapters(void)
{
	static struct nic nics[64];
	int n = 0;
	DIR *d = opendir("/sys/class/net");
	for (struct dirent *e; d && (e = readdir(d)) && n < 64;) {
		char link[PATH_MAX];
		snprintf(link, sizeof(link), "/sys/class/net/%s/device", e->d_name);
		if (e->d_name[0] == '.' || !realpath(link, nics[n].dev))
			continue;
		if (is_publish_nic(e->d_name)) {
			publish = true;
			if (strcmp(e->d_name, PUBLISH_IF) && rename_if(e->d_name, PUBLISH_IF) < 0)
				say("cannot rename %s to %s: %s", e->d_name, PUBLISH_IF, strerror(errno));
			continue;
		}
		scopy(nics[n].name, IFNAMSIZ, e->d_name);
		n++;
	}
	if (d)
		closedir(d);
	qsort(nics, n, sizeof(nics[0]), by_dev);
	bool ordered = true;
	for (int i = 0; i < n; i++) {
		char want[IFNAMSIZ];
		snprintf(want, sizeof(want), "eth%d", i);
		ordered = ordered && strcmp(nics[i].name, want) == 0;
	}
	if (ordered)
		return n;
	for (int i = 0; i < n; i++) { /* two passes: names may be taken by one another */
		char tmp[IFNAMSIZ];
		snprintf(tmp, sizeof(tmp), "mvtmp%d", i);
		if (rename_if(nics[i].name, tmp) == 0)
			scopy(nics[i].name, IFNAMSIZ, tmp);
	}
	for (int i = 0; i < n; i++) {
		char want[IFNAMSIZ];
		snprintf(want, sizeof(want), "eth%d", i);
		if (rename_if(nics[i].name, want) < 0)
			say("cannot rename %s to %s: %s", nics[i].name, want, strerror(errno));
	}
	return n;
}

static int set_addr(const char *ifname, unsigned long req, const char *addr)
{
	struct ifreq ifr = {0};
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	scopy(ifr.ifr_name, IFNAMSIZ, ifname);
	sin->sin_family = AF_INET;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
		return -1;
	return ioctl(ifsock(), req, &ifr);
}

static void add_default_route(const char *ifname, const char *gw)
{
	struct rtentry rt = {0};
	struct sockaddr_in *g = (struct sockaddr_in *)&rt.rt_gateway;
	((struct sockaddr_in *)&rt.rt_dst)->sin_family = AF_INET;
	((struct sockaddr_in *)&rt.rt_genmask)->sin_family = AF_INET;
	g->sin_family = AF_INET;
	if (inet_pton(AF_INET, gw, &g->sin_addr) != 1)
		return;
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = (char *)ifname;
	if (ioctl(ifsock(), SIOCADDRT, &rt) < 0 && errno != EEXIST)
		say("cannot add route via %s: %s", gw, strerror(errno));
}

static void prefix_to_mask(int prefix, char *out, size_t len)
{
	struct in_addr m = {htonl(prefix <= 0 ? 0 : 0xffffffffu << (32 - (prefix > 32 ? 32 : prefix)))};
	inet_ntop(AF_INET, &m, out, len);
}

static void start_dhcp(const char *ifname, const char *hostname)
{
	char hostopt[300];
	snprintf(hostopt, sizeof(hostopt), "hostname:%s", hostname);
	char *argv[] = {TOOLBOX "/udhcpc", "-f", "-i", (char *)ifname, "-s", DHCP_SCRIPT,
			"-x", hostopt, NULL};
	char *envp[] = {"PATH=" DEFAULT_PATH ":" TOOLBOX, NULL};
	struct proc p = {.argv = argv, .envp = envp, .quiet = true};
	set_flags(ifname, IFF_UP);
	spawn(&p);
}

static char *dns_from_ip[2];

/* One ip= argument, in the kernel's syntax:
 * ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp>
 * or ip=dhcp / ip=off. <client> may carry a /prefix. No <device>: every adapter. */
static void apply_ip(const char *spec, int nics, const char *hostname)
{
	char buf[512], *f[10] = {0};
	scopy(buf, sizeof(buf), spec);
	char *s = buf;
	for (int i = 0; i < 10 && s; i++) {
		f[i] = s;
		s = strchr(s, ':');
		if (s)
			*s++ = 0;
	}
	if (!f[1] && (!strcmp(f[0], "off") || !strcmp(f[0], "none")))
		return; /* ip=off: no configuration at all */
	/* <autoconf> off/none/static (or empty) means the static address given */
	const char *mode = f[6] && *f[6] ? f[6] : (!f[1] ? f[0] : "static");
	bool dhcp = !strcmp(mode, "dhcp") || !strcmp(mode, "on") || !strcmp(mode, "any") ||
		    !strcmp(mode, "bootp") || !strcmp(mode, "both");
	if (!dhcp && strcmp(mode, "off") && strcmp(mode, "none") && strcmp(mode, "static") &&
	    mode != f[0]) {
		say("ip=%s: unknown autoconf method %s (off, static or dhcp)", spec, mode);
		return;
	}
	if (!dhcp && !*f[0])
		return;
	for (int i = 0; i < 2; i++)
		if (f[7 + i] && *f[7 + i])
			dns_from_ip[i] = strdup(f[7 + i]);
	for (int i = 0; i < nics; i++) {
		char ifname[IFNAMSIZ];
		snprintf(ifname, sizeof(ifname), "eth%d", i);
		if (f[5] && *f[5] && strcmp(f[5], ifname) != 0)
			continue;
		if (dhcp) {
			start_dhcp(ifname, hostname);
			continue;
		}
		char addr[64], mask[INET_ADDRSTRLEN] = "255.255.255.0";
		scopy(addr, sizeof(addr), f[0]);
		char *slash = strchr(addr, '/');
		if (slash) {
			*slash = 0;
			prefix_to_mask(atoi(slash + 1), mask, sizeof(mask));
		}
		if (f[3] && *f[3])
			scopy(mask, sizeof(mask), f[3]);
		if (set_addr(ifname, SIOCSIFADDR, addr) < 0 ||
		    set_addr(ifname, SIOCSIFNETMASK, mask) < 0)
			say("ip=%s: cannot set %s on %s: %s", spec, addr, ifname, strerror(errno));
		set_flags(ifname, IFF_UP);
		if (f[2] && *f[2])
			add_default_route(ifname, f[2]);
		if (!first_ip[0])
			scopy(first_ip, sizeof(first_ip), addr);
		if (!f[5] || !*f[5])
			break; /* a static address without a device: the first adapter only */
	}
}

static const char *ifupdown(void)
{
	static const char *cands[] = {"/sbin/ifup", "/usr/sbin/ifup", "/bin/ifup", "/usr/bin/ifup"};
	if (!exists("/etc/network/interfaces"))
		return NULL;
	for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++)
		if (exists(cands[i]))
			return cands[i];
	return NULL;
}

/* Whether the image's /etc/network/interfaces configures lo itself: then ifup adds its
 * address, and bringing lo up first (which gives it 127.0.0.1) would make ifup fail with
 * "RTNETLINK answers: File exists". */
static bool interfaces_configure_lo(void)
{
	char *data = read_file("/etc/network/interfaces", NULL);
	bool found = false;
	for (char *line = data; line && *line && !found;) {
		char *end = strchr(line, '\n');
		if (end)
			*end = 0;
		line += strspn(line, " \t");
		found = !strncmp(line, "iface", 5) && strstr(line, " lo ") != NULL;
		line = end ? end + 1 : NULL;
	}
	free(data);
	return found;
}

void network_up(const char *hostname)
{
	coldplug_network();
	int nics = name_adapters();
	if (publish) {
		if (set_addr(PUBLISH_IF, SIOCSIFADDR, PUBLISH_ADDR) < 0 ||
		    set_addr(PUBLISH_IF, SIOCSIFNETMASK, "255.255.255.0") < 0 ||
		    set_flags(PUBLISH_IF, IFF_UP) < 0)
			say("cannot configure %s: %s", PUBLISH_IF, strerror(errno));
	}
	for (int i = 0; i < nics; i++) { /* link up, as a container's interfaces are */
		char ifname[IFNAMSIZ];
		snprintf(ifname, sizeof(ifname), "eth%d", i);
		set_flags(ifname, IFF_UP);
	}
	const char *ifup = ifupdown();
	if (kcmd.nip || !ifup || !interfaces_configure_lo())
		set_flags("lo", IFF_UP);
	if (kcmd.nip) {
		for (int i = 0; i < kcmd.nip; i++)
			apply_ip(kcmd.ip[i], nics, hostname);
	} else if (ifup) {
		/* The image configures itself, but a busybox ifup finds the toolbox's udhcpc first
		 * (its default script is minivm's): DHCP works without the image's setup. */
		char *argv[] = {(char *)ifup, "-a", NULL};
		char *envp[] = {"PATH=" TOOLBOX ":" DEFAULT_PATH, NULL};
		struct proc p = {.argv = argv, .envp = envp};
		spawn(&p);
	} else if (nics) {
		start_dhcp("eth0", hostname); /* like Docker: one network, configured for you */
	}
}

const char *first_static_ip(void)
{
	return first_ip[0] ? first_ip : NULL;
}

/* The <hostname> field (the fifth) of an ip= argument, copied into buf; NULL when empty. */
static const char *ip_hostname(const char *spec, char *buf, size_t len)
{
	const char *s = spec;
	for (int field = 0; field < 4 && s; field++) {
		s = strchr(s, ':');
		if (s)
			s++;
	}
	if (!s || !*s || *s == ':')
		return NULL;
	scopy(buf, len, s);
	buf[strcspn(buf, ":")] = 0;
	return buf;
}

/* hostname= on the command line, else the hostname field of an ip= argument (as the kernel's
 * own ip= does), else the image's /etc/hostname, else the appliance name. */
void setup_hostname(char *out, size_t outlen)
{
	char *file = NULL, from_ip[HOST_NAME_MAX + 1];
	const char *name = kcmd.hostname;
	for (int i = 0; !name && i < kcmd.nip; i++)
		name = ip_hostname(kcmd.ip[i], from_ip, sizeof(from_ip));
	if (!name && (file = read_file("/etc/hostname", NULL))) {
		file[strcspn(file, " \t\r\n")] = 0;
		name = *file ? file : NULL;
	}
	if (!name)
		name = img.name && *img.name ? img.name : "minivm";
	scopy(out, outlen, name);
	free(file);
	if (sethostname(out, strlen(out)) < 0)
		say("cannot set hostname %s: %s", out, strerror(errno));
}

/* We write a file when a kernel argument sets it, or when the image has none (or an empty one,
 * or one we wrote at an earlier boot). */
static bool ours(const char *path)
{
	size_t len = 0;
	char *data = read_file(path, &len);
	bool mine = !data || strspn(data, " \t\r\n") == len || strncmp(data, "# minivm:", 9) == 0;
	free(data);
	return mine;
}

/* The add_host= entries (name:ip,... as docker run --add-host) as hosts lines, after the
 * host's own line. */
static int host_lines(char *buf, size_t size, const char *hostname)
{
	const char *ip = first_static_ip();
	int n = snprintf(buf, size, "%s\t%s\n", ip ? ip : "127.0.1.1", hostname);
	char *list = kcmd.add_host ? strdup(kcmd.add_host) : NULL;
	for (char *s = NULL, *e = list ? strtok_r(list, ",", &s) : NULL; e;
	     e = strtok_r(NULL, ",", &s)) {
		char *colon = strchr(e, ':');
		if (colon && n < (int)size) {
			*colon = 0;
			n += snprintf(buf + n, size - n, "%s\t%s\n", colon + 1, e);
		}
	}
	free(list);
	return n < (int)size ? n : (int)size - 1;
}

/* An image's own /etc/hosts is kept as it ships; add_host= entries go in a marked block at its
 * end (the block of an earlier boot replaced), as Docker's extra_hosts add to its file. */
static void add_to_image_hosts(const char *hostname)
{
	char *data = read_file("/etc/hosts", NULL);
	size_t keep = data ? strlen(data) : 0;
	char *block = data ? strstr(data, "\n" MARK_HOSTS) : NULL;
	if (block)
		keep = block - data + 1;
	static char buf[65536];
	if (keep + 16384 > sizeof(buf)) {
		say("/etc/hosts is too large to add the add_host= entries to: left as it is");
		free(data);
		return;
	}
	int n = snprintf(buf, sizeof(buf), "%.*s%s%s\n", (int)keep, data ? data : "",
			 keep && data[keep - 1] != '\n' ? "\n" : "", MARK_HOSTS);
	if (n < (int)sizeof(buf))
		host_lines(buf + n, sizeof(buf) - n, hostname);
	free(data);
	if (write_file("/etc/hosts", buf, 0644) < 0)
		say("cannot write /etc/hosts: %s", strerror(errno));
}

void write_etc_files(const char *hostname)
{
	char buf[16384];
	int n;
	mkdirs("/etc", 0755);
	if (ours("/etc/hosts")) {
		n = snprintf(buf, sizeof(buf),
			     "%s\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
			     "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
			     "ff02::2\tip6-allrouters\n",
			     kcmd.add_host ? MARK_KERNEL : MARK_DEFAULT);
		host_lines(buf + n, sizeof(buf) - n, hostname);
		if (write_file("/etc/hosts", buf, 0644) < 0)
			say("cannot write /etc/hosts: %s", strerror(errno));
	} else if (kcmd.add_host) {
		add_to_image_hosts(hostname);
	}
	bool from_kernel = kcmd.dns || dns_from_ip[0];
	if (from_kernel || ours("/etc/resolv.conf")) {
		n = snprintf(buf, sizeof(buf), "%s\n", from_kernel ? MARK_KERNEL : MARK_DEFAULT);
		char *list = strdup(kcmd.dns ? kcmd.dns : "");
		for (char *s = NULL, *e = strtok_r(list, ",", &s); e; e = strtok_r(NULL, ",", &s))
			n += snprintf(buf + n, sizeof(buf) - n, "nameserver %s\n", e);
		for (int i = 0; !kcmd.dns && i < 2; i++)
			if (dns_from_ip[i])
				n += snprintf(buf + n, sizeof(buf) - n, "nameserver %s\n", dns_from_ip[i]);
		if (!from_kernel) /* Docker's fallback when the host has no usable server */
			snprintf(buf + n, sizeof(buf) - n, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
		free(list);
		if (write_file("/etc/resolv.conf", buf, 0644) < 0)
			say("cannot write /etc/resolv.conf: %s", strerror(errno));
	}
}

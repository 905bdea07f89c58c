/* Kernel modules and devices: a tiny modprobe (modules.dep order), coldplug of network adapters,
 * the late SCSI scan. */
#include "minivm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

static char moddir[300];
static char *deps; /* modules.dep, read once */

static const char *module_dir(void)
{
	if (!moddir[0]) {
		struct utsname u;
		uname(&u);
		snprintf(moddir, sizeof(moddir), "/lib/modules/%s", u.release);
	}
	return moddir;
}

/* "kernel/drivers/net/virtio_net.ko.xz" -> "virtio_net" ('-' read as '_'). */
static void module_name(const char *path, size_t len, char *out, size_t outlen)
{
	const char *base = path;
	for (size_t i = 0; i < len; i++)
		if (path[i] == '/')
			base = path + i + 1;
	size_t n = 0;
	for (; base < path + len && *base != '.' && n + 1 < outlen; base++)
		out[n++] = *base == '-' ? '_' : *base;
	out[n] = 0;
}

static int insmod(const char *rel)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", module_dir(), rel);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int flags = strstr(rel, ".ko.") ? MODULE_INIT_COMPRESSED_FILE : 0;
	int r = syscall(SYS_finit_module, fd, "", flags);
	int err = errno;
	close(fd);
	return r == 0 || err == EEXIST ? 0 : -1;
}

static bool loaded(const char *name)
{
	char path[300];
	snprintf(path, sizeof(path), "/sys/module/%s", name);
	return exists(path);
}

/* Load a module and what it depends on (modules.dep lists the dependencies deepest last). */
int load_module(const char *name)
{
	char want[128], got[128];
	module_name(name, strlen(name), want, sizeof(want));
	if (loaded(want))
		return 0;
	if (!deps) {
		char path[400];
		snprintf(path, sizeof(path), "%s/modules.dep", module_dir());
		deps = read_file(path, NULL);
		if (!deps)
			return -1;
	}
	for (char *l = deps; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
		char *colon = strchr(l, ':');
		char *eol = strchrnul(l, '\n');
		if (!colon || colon > eol)
			continue;
		module_name(l, colon - l, got, sizeof(got));
		if (strcmp(got, want) != 0)
			continue;
		char line[4096];
		snprintf(line, sizeof(line), "%.*s", (int)(eol - l), l);
		char *words[64];
		int n = 0;
		for (char *s = NULL, *w = strtok_r(line + (colon - l) + 1, " ", &s); w && n < 64;
		     w = strtok_r(NULL, " ", &s))
			words[n++] = w;
		while (n-- > 0)
			insmod(words[n]);
		line[colon - l] = 0;
		return insmod(line);
	}
	return -1; /* built in, or not shipped */
}

/* Load the first module whose modules.alias pattern matches ALIAS (ALIASES: the file, kept).
 * Only the lines of ALIAS's bus ("pci:", "virtio:", ...) are parsed: the file has ~15,000. */
static void load_for_alias(const char *alias, const char *aliases)
{
	size_t bus = strcspn(alias, ":") + 1;
	for (const char *l = aliases; *l; l = *strchrnul(l, '\n') ? strchrnul(l, '\n') + 1 : "") {
		if (strncmp(l, "alias ", 6) != 0 || strncmp(l + 6, alias, bus) != 0)
			continue;
		char line[700], pat[512], mod[128];
		snprintf(line, sizeof(line), "%.*s", (int)(strchrnul(l, '\n') - l), l);
		if (sscanf(line, "alias %511s %127s", pat, mod) == 2 && fnmatch(pat, alias, 0) == 0) {
			load_module(mod);
			return;
		}
	}
}

/* Load the driver of every device on BUS that has none yet and that WANTED accepts. */
static void coldplug_bus(const char *bus, bool (*wanted)(const char *dev, const char *alias),
			 char **aliases)
{
	char dir[300];
	snprintf(dir, sizeof(dir), "/sys/bus/%s/devices", bus);
	DIR *d = opendir(dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char path[600];
		snprintf(path, sizeof(path), "%s/%s/driver", dir, e->d_name);
		if (exists(path))
			continue;
		snprintf(path, sizeof(path), "%s/%s/modalias", dir, e->d_name);
		char *alias = read_file(path, NULL);
		if (!alias)
			continue;
		alias[strcspn(alias, "\n")] = 0;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (*alias && wanted(path, alias)) {
			if (!*aliases) {
				char apath[400];
				snprintf(apath, sizeof(apath), "%s/modules.alias", module_dir());
				*aliases = read_file(apath, NULL);
			}
			if (*aliases)
				load_for_alias(alias, *aliases);
		}
		free(alias);
	}
	closedir(d);
}

static bool pci_network(const char *dev, const char *alias)
{
	(void)alias;
	char path[700];
	snprintf(path, sizeof(path), "%s/class", dev);
	char *cls = read_file(path, NULL);
	bool net = cls && strncmp(cls, "0x02", 4) == 0;
	free(cls);
	return net;
}

static bool virtio_network(const char *dev, const char *alias)
{
	(void)dev;
	return strncmp(alias, "virtio:d00000001v", 17) == 0;
}

/* Load the driver of every network adapter that has none yet (the initramfs loads the virtio
 * one; others come from the module disk). */
void coldplug_network(void)
{
	char *aliases = NULL;
	coldplug_bus("pci", pci_network, &aliases);
	coldplug_bus("virtio", virtio_network, &aliases);
	free(aliases);
}

static bool any_device(const char *dev, const char *alias)
{
	(void)dev, (void)alias;
	return true;
}

/* Load the driver of every device on every bus that has none yet. */
static void coldplug_all(void)
{
	char *aliases = NULL;
	DIR *d = opendir("/sys/bus");
	for (struct dirent *e; d && (e = readdir(d));)
		if (e->d_name[0] != '.')
			coldplug_bus(e->d_name, any_device, &aliases);
	if (d)
		closedir(d);
	free(aliases);
}

/* Scan every target of the virtio-scsi controllers: the initramfs scanned only targets 0-3 of
 * each (GNS3 attaches its disks at target 0; kernel/init). Other controllers were scanned in full
 * when they appeared (and a scan of libata's resets its ports). */
static void scan_scsi(void)
{
	DIR *d = opendir("/sys/class/scsi_host");
	for (struct dirent *e; d && (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char path[300];
		snprintf(path, sizeof(path), "/sys/class/scsi_host/%s/proc_name", e->d_name);
		char *driver = read_file(path, NULL);
		bool virtio = driver && strncmp(driver, "virtio_scsi", 11) == 0;
		free(driver);
		if (!virtio)
			continue;
		snprintf(path, sizeof(path), "/sys/class/scsi_host/%s/scan", e->d_name);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (write(fd, "- - -", 5) < 0)
			trace("a SCSI scan failed");
		close(fd);
	}
	if (d)
		closedir(d);
}

/* What the initramfs leaves for later (kernel/init), done in a child at the lowest priority
 * while the main process starts: the rest of the SCSI buses, then the drivers of every device
 * that has none (from the module disk), as udev's coldplug would. */
void hardware_later(void)
{
	if (fork() != 0) /* the parent goes on; without a child, the hardware stays as it is */
		return;
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	setpriority(PRIO_PROCESS, 0, 19);
	scan_scsi();
	coldplug_all();
	_exit(0);
}

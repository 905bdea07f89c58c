/* Filesystems: the API mounts at boot, and unmounting everything at shutdown. */
#include "minivm.h"

#include <errno.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#ifndef MQUEUE_MAGIC
#define MQUEUE_MAGIC 0x19800202
#endif

static bool has_fs(const char *path, unsigned long magic)
{
	struct statfs st;
	return statfs(path, &st) == 0 && (unsigned long)st.f_type == magic;
}

static void mnt(const char *src, const char *dir, const char *type, unsigned long flags,
		const char *opts, unsigned long magic)
{
	mkdirs(dir, 0755);
	if (has_fs(dir, magic))
		return; /* already there (moved over by the initramfs) */
	if (mount(src, dir, type, flags, opts) < 0 && errno != EBUSY)
		say("cannot mount %s on %s: %s", type, dir, strerror(errno));
}

void mount_early(void)
{
	const unsigned long secure = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	mnt("proc", "/proc", "proc", secure, NULL, PROC_SUPER_MAGIC);
	mnt("sysfs", "/sys", "sysfs", secure, NULL, SYSFS_MAGIC);
	mnt("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", TMPFS_MAGIC);
	mnt("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666",
	    DEVPTS_SUPER_MAGIC);
	mnt("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", TMPFS_MAGIC);
	mnt("mqueue", "/dev/mqueue", "mqueue", secure, NULL, MQUEUE_MAGIC);
	mnt("cgroup2", "/sys/fs/cgroup", "cgroup2", secure, NULL, CGROUP2_SUPER_MAGIC);
	mnt("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", TMPFS_MAGIC);
	/* The links Docker makes in /dev. */
	symlink("/proc/self/fd", "/dev/fd");
	symlink("/proc/self/fd/0", "/dev/stdin");
	symlink("/proc/self/fd/1", "/dev/stdout");
	symlink("/proc/self/fd/2", "/dev/stderr");
	symlink("/proc/kcore", "/dev/core");
	/* Root mounted read-only by an initramfs although the command line says rw. */
	struct statfs st;
	char *cmd = read_file("/proc/cmdline", NULL);
	if (cmd && strstr(cmd, " rw") && statfs("/", &st) == 0 && (st.f_flags & ST_RDONLY))
		mount(NULL, "/", NULL, MS_REMOUNT, NULL);
	free(cmd);
}

/* Decode the octal escapes of /proc/mounts (\040 for a space) in place. */
static void unoctal(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] && s[3]) {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

/* Unmount every filesystem, innermost first; what stays busy goes read-only; then the root. */
void unmount_all(void)
{
	char *data = read_file("/proc/mounts", NULL);
	char *targets[256];
	int n = 0;
	for (char *save = NULL, *l = data ? strtok_r(data, "\n", &save) : NULL; l && n < 256;
	     l = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(l, ' ');
		if (!sp)
			continue;
		char *t = sp + 1, *end = strchr(t, ' ');
		if (end)
			*end = 0;
		unoctal(t);
		if (strcmp(t, "/") != 0)
			targets[n++] = t;
	}
	for (int i = n - 1; i >= 0; i--) {
		if (umount2(targets[i], 0) == 0)
			continue;
		if (mount(NULL, targets[i], NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
			umount2(targets[i], MNT_DETACH);
	}
	sync();
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
		say("cannot remount / read-only: %s", strerror(errno));
	free(data);
}

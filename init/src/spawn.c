/* Starting processes: console, session, user, working directory, environment. */
#include "minivm.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

extern char **environ;

/* The serial console: the last device in /sys/class/tty/console/active (console=ttyS0). */
const char *console_device(void)
{
	static char dev[64];
	if (dev[0])
		return dev;
	char *active = read_file("/sys/class/tty/console/active", NULL);
	char *last = NULL;
	for (char *s = NULL, *w = active ? strtok_r(active, " \n", &s) : NULL; w;
	     w = strtok_r(NULL, " \n", &s))
		last = w;
	snprintf(dev, sizeof(dev), "/dev/%s", last ? last : "console");
	free(active);
	return dev;
}

bool is_shell(const char *path)
{
	static const char *shells[] = {"sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", NULL};
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	for (int i = 0; shells[i]; i++)
		if (strcmp(base, shells[i]) == 0)
			return true;
	return false;
}

static bool numeric(const char *s, unsigned long *out)
{
	char *end;
	if (!*s)
		return false;
	*out = strtoul(s, &end, 10);
	return *end == 0;
}

/* Become USER[:GROUP] (names or numbers), as Docker does: the user's primary group and
 * supplementary groups from /etc/group unless a group is given; HOME from /etc/passwd. */
static int become(const char *spec)
{
	char user[256], *group;
	scopy(user, sizeof(user), spec);
	if ((group = strchr(user, ':')))
		*group++ = 0;
	unsigned long id;
	struct passwd *pw = numeric(user, &id) ? getpwuid(id) : getpwnam(user);
	if (!pw && !numeric(user, &id)) {
		say("no such user %s in /etc/passwd", user);
		return -1;
	}
	uid_t uid = pw ? pw->pw_uid : (uid_t)id;
	gid_t gid = pw ? pw->pw_gid : 0;
	if (group) {
		struct group *gr = numeric(group, &id) ? getgrgid(id) : getgrnam(group);
		if (!gr && !numeric(group, &id)) {
			say("no such group %s in /etc/group", group);
			return -1;
		}
		gid = gr ? gr->gr_gid : (gid_t)id;
	}
	if (pw && !group ? initgroups(pw->pw_name, gid) : setgroups(0, NULL))
		return -1;
	if (setgid(gid) < 0 || setuid(uid) < 0)
		return -1;
	setenv("HOME", pw ? pw->pw_dir : "/", 0);
	return 0;
}

pid_t spawn(const struct proc *p)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	sigset_t none;
	sigemptyset(&none);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigprocmask(SIG_SETMASK, &none, NULL);
	setsid();
	int null = open("/dev/null", O_RDWR);
	if (p->stdio) {
		for (int fd = 0; fd < 3; fd++)
			dup2(p->stdio[fd], fd);
	} else if (p->tty) {
		int fd = open(console_device(), O_RDWR);
		if (fd >= 0 && ioctl(fd, TIOCSCTTY, 1) < 0)
			say("no controlling tty on %s: %s", console_device(), strerror(errno));
		dup2(fd, 0), dup2(fd, 1), dup2(fd, 2);
	} else {
		int out = p->quiet ? null : open(console_device(), O_WRONLY | O_NOCTTY);
		dup2(null, 0), dup2(out, 1), dup2(out, 2);
	}
	for (int fd = 3; fd < 64; fd++)
		close(fd);
	environ = (char **)p->envp;
	if (p->user && *p->user && become(p->user) < 0) {
		say("cannot become user %s: %s", p->user, strerror(errno));
		_exit(126);
	}
	setenv("HOME", "/root", 0);
	if (p->workdir && *p->workdir) {
		mkdirs(p->workdir, 0755);
		if (chdir(p->workdir) < 0) {
			say("cannot enter %s: %s", p->workdir, strerror(errno));
			_exit(126);
		}
	}
	execvp(p->argv[0], p->argv);
	int err = errno;
	say("cannot run %s: %s", p->argv[0], strerror(err));
	_exit(err == ENOENT || err == ENOTDIR ? 127 : 126); /* Docker's codes */
}

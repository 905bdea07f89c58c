/* Power: the ACPI power button (an input event) and the clean shutdown. */
#include "minivm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GRACE_MS 2000  /* how long processes get to exit after SIGTERM */

static int buttons[8];
static int nbuttons;

static bool has_power_key(int fd)
{
	unsigned long bits[KEY_MAX / (8 * sizeof(long)) + 1] = {0};
	if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof(bits)), bits) < 0)
		return false;
	return bits[KEY_POWER / (8 * sizeof(long))] & (1UL << (KEY_POWER % (8 * sizeof(long))));
}

/* Load the ACPI button and evdev drivers, then watch every device that has a power key. */
void power_init(void)
{
	load_module("evdev");
	load_module("button");
	DIR *d = opendir("/dev/input");
	for (struct dirent *e; d && (e = readdir(d)) && nbuttons < 8;) {
		if (strncmp(e->d_name, "event", 5) != 0)
			continue;
		char path[300];
		snprintf(path, sizeof(path), "/dev/input/%s", e->d_name);
		int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0 && has_power_key(fd))
			buttons[nbuttons++] = fd;
		else if (fd >= 0)
			close(fd);
	}
	if (d)
		closedir(d);
	if (!nbuttons)
		say("no power button found: the ACPI stop will not work");
}

int power_fds(int *fds, int max)
{
	int n = 0;
	for (; n < nbuttons && n < max; n++)
		fds[n] = buttons[n];
	return n;
}

bool power_button_pressed(int fd)
{
	struct input_event ev[16];
	bool pressed = false;
	ssize_t r;
	while ((r = read(fd, ev, sizeof(ev))) > 0)
		for (size_t i = 0; i < (size_t)r / sizeof(ev[0]); i++)
			if (ev[i].type == EV_KEY && ev[i].code == KEY_POWER && ev[i].value == 1)
				pressed = true;
	return pressed;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* Reap until no process is left (true) or the time is up (false). */
static bool all_gone(long ms)
{
	long end = now_ms() + ms;
	for (;;) {
		pid_t r;
		while ((r = waitpid(-1, NULL, WNOHANG)) > 0)
			;
		if (r < 0 && errno == ECHILD)
			return true;
		if (now_ms() >= end)
			return false;
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
}

/* TERM to everyone (HUP too, so interactive shells leave), a short grace, KILL to the rest,
 * sync, unmount or remount read-only, then power off, reboot or halt (`how` is an RB_ value). */
void shutdown_now(int how)
{
	say("%s", how == RB_AUTOBOOT ? "rebooting" : "powering off");
	kill(-1, SIGTERM);
	kill(-1, SIGHUP);
	kill(-1, SIGCONT);
	if (!all_gone(GRACE_MS)) {
		kill(-1, SIGKILL);
		all_gone(1000);
	}
	sync();
	unmount_all();
	sync();
	reboot(how);
	for (;;)
		pause();
}

/* minivm init: PID 1 of a MiniVM. Sets up the system the way Docker sets up a container, runs
 * the image's command, keeps a shell on the console, reaps orphans, and powers off cleanly. */
#include "minivm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define INIT_SH "/etc/init.sh"
#define RESPAWN_MS 1000 /* at most one restart per second */

struct service {
	struct strv argv, env;
	struct proc proc;
	pid_t pid;
	long started, due; /* ms; due: when to (re)start, 0 when not waiting */
};

static struct service main_svc, shell_svc;
static pid_t hook_pid;
static char hostname[256];

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static void start(struct service *s)
{
	s->proc.argv = s->argv.v;
	s->proc.envp = s->env.v;
	s->pid = spawn(&s->proc);
	s->started = now_ms();
	s->due = 0;
}

/* What runs: /etc/init.sh (the reference's convention), else ENTRYPOINT + CMD, where words
 * after `--` on the kernel command line replace CMD. A shell without a script is interactive:
 * it gets the console. Returns false when there is nothing to run. */
static bool choose_main(void)
{
	struct service *m = &main_svc;
	if (is_exec(INIT_SH)) {
		strv_push(&m->argv, INIT_SH);
		m->proc.tty = true;
	} else {
		for (int i = 0; i < img.entrypoint.n; i++)
			strv_push(&m->argv, img.entrypoint.v[i]);
		struct strv *cmd = kcmd.has_args ? &kcmd.args : &img.cmd;
		for (int i = 0; i < cmd->n; i++)
			strv_push(&m->argv, cmd->v[i]);
		if (!m->argv.n)
			return false;
		bool interactive = is_shell(m->argv.v[0]);
		for (int i = 1; i < m->argv.n; i++)
			interactive = interactive && m->argv.v[i][0] == '-' && strcmp(m->argv.v[i], "-c");
		m->proc.tty = interactive;
		m->proc.user = img.user;
		m->proc.workdir = img.workdir;
	}
	if (m->argv.v[0] == NULL || !strcmp(m->argv.v[0], INIT_SH))
		for (int i = 0; i < kcmd.args.n; i++)
			strv_push(&m->argv, kcmd.args.v[i]);
	base_env(&m->env, hostname, m->proc.tty);
	return true;
}

/* The console shell: the image's getty when asked (minivm.console=getty), else its /bin/sh,
 * else the toolbox's. */
static void choose_shell(void)
{
	struct service *s = &shell_svc;
	const char *getty = is_exec("/sbin/getty") ? "/sbin/getty"
			    : is_exec("/sbin/agetty") ? "/sbin/agetty" : NULL;
	if (kcmd.console && !strcmp(kcmd.console, "getty") && getty) {
		strv_push(&s->argv, getty);
		strv_push(&s->argv, "-L");
		strv_push(&s->argv, "115200");
		strv_push(&s->argv, console_device() + 5);
		strv_push(&s->argv, "vt220");
	} else {
		strv_push(&s->argv, is_exec("/bin/sh") ? "/bin/sh" : TOOLBOX "/sh");
	}
	s->proc.tty = true;
	base_env(&s->env, hostname, true);
}

static void power_button(void)
{
	if (hook_pid > 0)
		return;
	if (is_exec(PWRF_HOOK)) {
		char *argv[] = {PWRF_HOOK, NULL};
		struct proc p = {.argv = argv, .envp = shell_svc.env.v};
		hook_pid = spawn(&p);
	} else {
		shutdown_now(RB_POWER_OFF);
	}
}

static int exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void reap(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid == main_svc.pid) {
			main_svc.pid = 0;
			const char *how = kcmd.on_exit ? kcmd.on_exit : "poweroff";
			say("main process exited (status %d): %s", exit_code(status), how);
			if (!strcmp(how, "respawn"))
				main_svc.due = main_svc.started + RESPAWN_MS;
			else
				shutdown_now(!strcmp(how, "reboot") ? RB_AUTOBOOT
					     : !strcmp(how, "halt") ? RB_HALT_SYSTEM : RB_POWER_OFF);
		} else if (pid == shell_svc.pid) {
			shell_svc.pid = 0;
			shell_svc.due = shell_svc.started + RESPAWN_MS;
		} else if (control_reaped(pid, status)) {
			continue;
		} else if (pid == hook_pid) {
			hook_pid = 0;
			if (exit_code(status) != 0) /* the hook failed: power off all the same */
				shutdown_now(RB_POWER_OFF);
		}
	}
}

static void on_signal(int sig)
{
	switch (sig) {
	case SIGCHLD:
		reap();
		break;
	case SIGUSR1: /* busybox halt */
	case SIGUSR2: /* busybox poweroff */
		shutdown_now(RB_POWER_OFF);
	case SIGTERM: /* busybox reboot */
	case SIGINT:  /* Ctrl-Alt-Del */
		shutdown_now(RB_AUTOBOOT);
	default: /* anything else is for the main process, as in a container */
		if (main_svc.pid > 0)
			kill(main_svc.pid, sig);
	}
}

/* Make sure fds 0-2 are the console (a bare image may have had no /dev/console). */
static void console_stdio(void)
{
	if (fcntl(STDERR_FILENO, F_GETFD) >= 0)
		return;
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd >= 0)
		dup2(fd, 0), dup2(fd, 1), dup2(fd, 2);
	if (fd > 2)
		close(fd);
}

int main(int argc, char **argv, char **envp)
{
	(void)argc;
	if (getpid() != 1) {
		fprintf(stderr, "%s: this is the MiniVM's PID 1; it runs only as a VM's init\n",
			argv[0]);
		return 1;
	}
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	reboot(RB_DISABLE_CAD); /* Ctrl-Alt-Del becomes SIGINT */
	umask(022);
	if (chdir("/") < 0)
		return 1;
	mount_early();
	console_stdio();
	parse_cmdline(envp);
	parse_config();
	trace("init started, file systems mounted");
	setup_hostname(hostname, sizeof(hostname));
	network_up(hostname);
	trace("network configured");
	write_etc_files(hostname);
	trace("/etc files written");

	power_init(); /* before the main process: when it runs, the power button works */
	trace("power button watched");
	bool have_main = choose_main();
	choose_shell();
	if (have_main)
		start(&main_svc);
	bool want_shell = !(kcmd.console && !strcmp(kcmd.console, "off"));
	if (!have_main) /* nothing to run: the console shell is the main process */
		main_svc = shell_svc, start(&main_svc);
	else if (want_shell && !main_svc.proc.tty)
		start(&shell_svc);

	trace("main process started");
	hardware_later();
	control_start(); /* after the main process: the channel never delays it */
	int sfd = signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK);
	struct pollfd pfd[9 + CONTROL_FDS] = {{.fd = sfd, .events = POLLIN}};
	int fds[8], nb = power_fds(fds, 8);
	for (int i = 0; i < nb; i++)
		pfd[1 + i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
	reap(); /* children that ended before the signalfd existed */
	for (;;) {
		long now = now_ms(), wait = control_timeout();
		struct service *svcs[] = {&main_svc, &shell_svc};
		for (int i = 0; i < 2; i++) {
			if (svcs[i]->due && svcs[i]->due <= now)
				start(svcs[i]);
			else if (svcs[i]->due && (wait < 0 || svcs[i]->due - now < wait))
				wait = svcs[i]->due - now;
		}
		int nc = control_fds(pfd + 1 + nb);
		if (poll(pfd, 1 + nb + nc, (int)wait) < 0 && errno != EINTR)
			continue;
		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGIO && si.ssi_code > 0) /* from the kernel, not kill(): */
				control_wake(); /* the control channel's host side came back */
			else
				on_signal((int)si.ssi_signo);
		}
		for (int i = 0; i < nb; i++)
			if ((pfd[1 + i].revents & POLLIN) && power_button_pressed(fds[i]))
				power_button();
		control_handle(pfd + 1 + nb, nc);
	}
}

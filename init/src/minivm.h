/* minivm init: shared declarations. PID 1 of a MiniVM (see ../README.md). */
#ifndef MINIVM_H
#define MINIVM_H

#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define TOOLBOX "/.minivm/bin"
#define CONFIG_FILE "/.minivm/config"
#define DHCP_SCRIPT "/.minivm/udhcpc.script"
#define PWRF_HOOK "/etc/acpi/PWRF/00000080"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_IP 32

/* A growable NULL-terminated string vector. */
struct strv {
	char **v;
	int n;
};
void strv_push(struct strv *s, const char *str);
void strv_set_env(struct strv *env, const char *kv); /* replace KEY=... or append */
const char *strv_get_env(const struct strv *env, const char *key);

/* What the kernel command line asks of us (config.c). */
struct cmdline {
	const char *hostname;        /* hostname= */
	const char *ip[MAX_IP];      /* ip= (repeatable, kernel syntax) */
	int nip;
	const char *dns;             /* dns=a,b (forces /etc/resolv.conf) */
	const char *add_host;        /* add_host=name:ip,... (forces /etc/hosts) */
	const char *on_exit;         /* minivm.on_exit=poweroff|reboot|respawn */
	const char *console;         /* minivm.console=shell|getty|off */
	bool debug;                  /* minivm.debug: print the uptime at each step */
	bool has_args;               /* something after `--` */
	struct strv args;            /* the words after `--` */
	struct strv env;             /* KEY=value the kernel gave us as environment */
};

/* What `minivm build` stored from the image config (/.minivm/config). */
struct imgconfig {
	char *name;
	struct strv entrypoint, cmd, env;
	char *workdir, *user;
};

/* How to start a process (spawn.c). */
struct proc {
	char *const *argv;
	char *const *envp;
	const char *workdir;
	const char *user;   /* NULL: root */
	bool tty;           /* controlling terminal on the console (else stdin /dev/null) */
	bool quiet;         /* stdout and stderr to /dev/null */
	const int *stdio;   /* else: these three fds are stdin, stdout and stderr */
};

extern struct cmdline kcmd;
extern struct imgconfig img;

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void trace(const char *step); /* with minivm.debug: the uptime at this step */
char *read_file(const char *path, size_t *len);
int write_file(const char *path, const char *data, mode_t mode); /* atomic */
bool exists(const char *path);
bool is_exec(const char *path);
void mkdirs(const char *path, mode_t mode);
void scopy(char *dst, size_t size, const char *src); /* truncating strcpy */

/* config.c */
void parse_cmdline(char **envp);
void parse_config(void);
void base_env(struct strv *env, const char *hostname, bool for_shell);

/* mounts.c */
void mount_early(void);
void unmount_all(void);

/* modules.c */
int load_module(const char *name);
void coldplug_network(void);
void hardware_later(void);

/* network.c */
void network_up(const char *hostname);
void setup_hostname(char *out, size_t outlen);
void write_etc_files(const char *hostname);
const char *first_static_ip(void);

/* spawn.c */
pid_t spawn(const struct proc *p);
const char *console_device(void);
bool is_shell(const char *path);

/* control.c: the control channel (virtio-serial port org.minivm.control) */
struct pollfd;
void control_start(void);
void control_wake(void);
bool control_reaped(pid_t pid, int status);
int control_fds(struct pollfd *pfd); /* at most CONTROL_FDS entries */
long control_timeout(void);
void control_handle(struct pollfd *pfd, int n);
#define CONTROL_FDS 5

/* power.c */
void power_init(void);
int power_fds(int *fds, int max);
bool power_button_pressed(int fd);
void shutdown_now(int how) __attribute__((noreturn));

#endif

/* The control channel: a virtio-serial port named org.minivm.control on which the host runs
 * commands (exec) and copies files (stat, put, get) with no network in the guest. One client
 * at a time; everything is non-blocking and served from the init's main loop. The protocol is
 * described in ../README.md ("The control channel"). */
#include "minivm.h"
#include "frames.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "org.minivm.control"
#define VERSION 1
#define CHUNK 32768               /* data per frame we send */
#define OUT_LIMIT (256 * 1024)    /* queued output before we stop reading sources */
#define IN_LIMIT (256 * 1024)     /* queued stdin before we stop reading the port */
#define RETRY_MS 50               /* looking for the port after the start */
#define GIVE_UP_MS 30000
#define HUP_RECHECK_MS 1000       /* host gone: look again (SIGIO usually comes first) */

enum {
	T_HELLO = 0x01, T_EXEC = 0x02, T_STDIN = 0x03, T_SIGNAL = 0x04, T_STAT = 0x05,
	T_PUT = 0x06, T_DATA = 0x07, T_GET = 0x08,
	R_HELLO = 0x81, R_STDOUT = 0x82, R_STDERR = 0x83, R_EXIT = 0x84, R_ERROR = 0x85,
	R_STAT = 0x86, R_DONE = 0x87,
};

static int port = -1;
static bool hup;             /* the host side is not connected */
static long started, next_try, hup_since;
static struct buf in, out, stdin_q;

/* The current request. */
static pid_t child;          /* exec: the command (its own session: pid == pgid) */
static int child_status = -1;
static int pout = -1, perr = -1, pin = -1;
static bool stdin_eof;
static int put_fd = -1;      /* put: the temporary file, renamed when whole */
static char put_tmp[PATH_MAX], put_path[PATH_MAX];
static int put_errno;
static int get_fd = -1;      /* get: the file being sent */

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static void emit(int type, const void *data, size_t len)
{
	unsigned char h[HDR] = {'m', 'v', (unsigned char)type, 0};
	put_u32(h + 4, (uint32_t)len);
	buf_add(&out, h, HDR);
	if (len)
		buf_add(&out, data, len);
}

static void emit_u32(int type, uint32_t v)
{
	unsigned char p[4];
	put_u32(p, v);
	emit(type, p, 4);
}

/* An error the client shows: errno (0: none) and one line of text. */
static void emit_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit_error(int err, const char *fmt, ...)
{
	char msg[600];
	put_u32((unsigned char *)msg, (uint32_t)err);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg + 4, sizeof(msg) - 4, fmt, ap);
	va_end(ap);
	emit(R_ERROR, msg, 4 + (n < 0 ? 0 : n >= (int)sizeof(msg) - 4 ? (int)sizeof(msg) - 5 : n));
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* End whatever request runs (the client left or said hello again). */
static void abort_request(void)
{
	if (child > 0)
		kill(-child, SIGKILL); /* reaped by the main loop */
	child = 0;
	child_status = -1;
	close_fd(&pout), close_fd(&perr), close_fd(&pin);
	stdin_q.off = stdin_q.len = 0;
	if (put_fd >= 0) {
		close_fd(&put_fd);
		unlink(put_tmp);
	}
	close_fd(&get_fd);
}

static bool busy(void)
{
	return child > 0 || pout >= 0 || perr >= 0 || put_fd >= 0 || put_errno || get_fd >= 0;
}

/* --- finding and opening the port ------------------------------------------------------- */

static bool has_console_device(void)
{
	DIR *d = opendir("/sys/bus/virtio/devices");
	bool found = false;
	for (struct dirent *e; d && !found && (e = readdir(d));) {
		char path[300];
		snprintf(path, sizeof(path), "/sys/bus/virtio/devices/%s/device", e->d_name);
		char *id = e->d_name[0] != '.' ? read_file(path, NULL) : NULL;
		found = id && strncmp(id, "0x0003", 6) == 0;
		free(id);
	}
	if (d)
		closedir(d);
	return found;
}

static int open_port(void)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	int fd = -1;
	for (struct dirent *e; d && fd < 0 && (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char path[300];
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
		char *name = read_file(path, NULL);
		if (name && strcmp(strtok(name, "\n") ? name : "", PORT_NAME) == 0) {
			snprintf(path, sizeof(path), "/dev/%s", e->d_name);
			fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		}
		free(name);
	}
	if (d)
		closedir(d);
	return fd;
}

/* Called once the main process runs: the channel never delays it. Without a virtio console
 * device (a GNS3 node) there is nothing to do; else its driver is loaded (it may be a module)
 * and the port is looked for from the main loop until it appears. */
void control_start(void)
{
	if (!has_console_device())
		return;
	if (!exists("/sys/bus/virtio/drivers/virtio_console"))
		load_module("virtio_console");
	started = next_try = now_ms();
}

static void set_async(bool on)
{
	int fl = fcntl(port, F_GETFL);
	if (fl >= 0)
		fcntl(port, F_SETFL, on ? fl | O_ASYNC : fl & ~O_ASYNC);
}

static void host_gone(void)
{
	abort_request();
	in.off = in.len = 0;
	out.off = out.len = 0;
	hup = true;
	hup_since = now_ms();
	set_async(true); /* the driver sends SIGIO when the host connects again */
	struct pollfd p = {.fd = port, .events = POLLIN};
	if (poll(&p, 1, 0) == 1 && !(p.revents & POLLHUP))
		hup = false, set_async(false);
}

/* SIGIO: the host side of the port connected (or closed) again. */
void control_wake(void)
{
	if (port >= 0 && hup)
		hup = false, set_async(false);
}

/* --- requests ------------------------------------------------------------------------- */

/* argv[0] as execvp would find it in PATH, else in the toolbox (an image without a shell
 * still gets `sh`), else as given (the exec fails with 127). */
static const char *resolve(const char *name, const char *path, char *out_path, size_t len)
{
	if (strchr(name, '/'))
		return name;
	char *dirs = strdup(path ? path : DEFAULT_PATH);
	const char *found = NULL;
	for (char *s = NULL, *d = strtok_r(dirs, ":", &s); d && !found; d = strtok_r(NULL, ":", &s)) {
		snprintf(out_path, len, "%s/%s", *d ? d : ".", name);
		if (is_exec(out_path))
			found = out_path;
	}
	free(dirs);
	if (!found) {
		snprintf(out_path, len, TOOLBOX "/%s", name);
		found = is_exec(out_path) ? out_path : name;
	}
	return found;
}

static void do_exec(char *p, size_t len)
{
	struct strv argv = {0}, env = {0};
	const char *user = img.user, *workdir = img.workdir;
	bool want_stdin = false;
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	base_env(&env, host, false);
	for (char *item = NULL; (item = frame_item(p, len, item));) {
		char *v = item + 1;
		switch (item[0]) {
		case 'a': strv_push(&argv, v); break;
		case 'e': strv_set_env(&env, v); break;
		case 'u': user = v; break;
		case 'w': workdir = v; break;
		case 'i': want_stdin = true; break;
		}
	}
	if (!argv.n) {
		emit_error(EINVAL, "no command given");
		return;
	}
	char exe[PATH_MAX];
	const char *path = resolve(argv.v[0], strv_get_env(&env, "PATH"), exe, sizeof(exe));
	char *orig = argv.v[0];
	argv.v[0] = (char *)path;
	int o[2], e[2], i[2] = {-1, -1};
	if (pipe2(o, O_CLOEXEC) < 0 || pipe2(e, O_CLOEXEC) < 0 ||
	    (want_stdin && pipe2(i, O_CLOEXEC) < 0)) {
		emit_error(errno, "cannot make pipes: %s", strerror(errno));
		return;
	}
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int stdio[3] = {want_stdin ? i[0] : null, o[1], e[1]};
	struct proc pr = {.argv = argv.v, .envp = env.v, .user = user, .workdir = workdir,
			  .stdio = stdio};
	child = spawn(&pr);
	child_status = -1;
	close(null), close(o[1]), close(e[1]);
	if (want_stdin)
		close(i[0]);
	pout = o[0], perr = e[0], pin = i[1];
	stdin_eof = !want_stdin;
	fcntl(pout, F_SETFL, O_NONBLOCK), fcntl(perr, F_SETFL, O_NONBLOCK);
	if (pin >= 0)
		fcntl(pin, F_SETFL, O_NONBLOCK);
	argv.v[0] = orig;
	for (int k = 0; k < argv.n; k++)
		free(argv.v[k]);
	for (int k = 0; k < env.n; k++)
		free(env.v[k]);
	free(argv.v), free(env.v);
	if (child < 0) {
		emit_error(errno, "cannot start a process: %s", strerror(errno));
		abort_request();
	}
}

static void emit_stat(const struct stat *st)
{
	unsigned char p[12];
	put_u32(p, st->st_mode);
	put_u32(p + 4, (uint32_t)((uint64_t)st->st_size >> 32));
	put_u32(p + 8, (uint32_t)st->st_size);
	emit(R_STAT, p, sizeof(p));
}

static void do_stat(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		emit_error(errno, "%s: %s", path, strerror(errno));
	else
		emit_stat(&st);
}

/* put: MODE(u32) PATH\0 NAME\0. PATH an existing folder: the file is PATH/NAME. Written to a
 * temporary name beside it, renamed when whole and synced. Answers R_DONE(path) or R_ERROR now,
 * and again at the end (the empty T_DATA). */
static void do_put(char *p, size_t len)
{
	mode_t mode;
	const char *path, *name;
	if (!put_request(p, len, &mode, &path, &name)) {
		emit_error(EINVAL, "bad put request");
		return;
	}
	struct stat st;
	size_t plen = strlen(path);
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		snprintf(put_path, sizeof(put_path), "%s%s%s", path,
			 plen && path[plen - 1] == '/' ? "" : "/", name);
	else
		scopy(put_path, sizeof(put_path), path);
	char *slash = strrchr(put_path, '/');
	snprintf(put_tmp, sizeof(put_tmp), "%.*s.%s.minivm-XXXXXX", slash ? (int)(slash - put_path + 1) : 0,
		 put_path, slash ? slash + 1 : put_path);
	put_fd = mkostemp(put_tmp, O_CLOEXEC);
	if (put_fd < 0) {
		emit_error(errno, "cannot write %s: %s", put_path, strerror(errno));
		return;
	}
	fchmod(put_fd, mode);
	put_errno = 0;
	emit(R_DONE, put_path, strlen(put_path));
}

static void put_data(const char *p, size_t len)
{
	if (put_fd < 0 && !put_errno)
		return; /* a put refused at its start: its data is dropped */
	if (len && !put_errno) {
		for (size_t done = 0; done < len;) {
			ssize_t w = write(put_fd, p + done, len - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				put_errno = w < 0 ? errno : EIO;
				break;
			}
			done += w;
		}
		return;
	}
	if (!len) {
		if (!put_errno && fsync(put_fd) < 0)
			put_errno = errno;
		if (close(put_fd) < 0 && !put_errno)
			put_errno = errno;
		put_fd = -1;
		if (!put_errno && rename(put_tmp, put_path) < 0)
			put_errno = errno;
		if (put_errno) {
			unlink(put_tmp);
			emit_error(put_errno, "cannot write %s: %s", put_path, strerror(put_errno));
		} else {
			emit(R_DONE, put_path, strlen(put_path));
		}
		put_errno = 0;
	}
}

/* get: only a regular file, opened without blocking (a FIFO or a device is refused before
 * any open, and the open itself cannot wait for a writer); reads never block either. */
static void do_get(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		emit_error(errno, "cannot read %s: %s", path, strerror(errno));
		return;
	}
	if (S_ISREG(st.st_mode))
		get_fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	int err = S_ISDIR(st.st_mode) ? EISDIR : !S_ISREG(st.st_mode) ? EINVAL :
		  get_fd < 0 ? errno : 0;
	if (!err && (fstat(get_fd, &st) < 0 || !S_ISREG(st.st_mode)))
		err = EINVAL; /* replaced between the two looks */
	if (err) {
		close_fd(&get_fd);
		emit_error(err, "cannot read %s: %s", path,
			   err == EINVAL ? "not a regular file" : strerror(err));
		return;
	}
	emit_stat(&st);
}

static void frame(int type, char *p, size_t len)
{
	if (type == T_HELLO) { /* a new client: whatever ran is over */
		abort_request();
		unsigned char reply[2 + 32] = {0, VERSION};
		size_t n = len > 2 ? (len - 2 > 32 ? 32 : len - 2) : 0;
		memcpy(reply + 2, p + 2, n); /* the client's nonce, so it can skip stale frames */
		emit(R_HELLO, reply, 2 + n);
		return;
	}
	switch (type) {
	case T_STDIN:
		if (pin < 0)
			break;
		if (len)
			buf_add(&stdin_q, p, len);
		else
			stdin_eof = true;
		break;
	case T_SIGNAL:
		if (child > 0 && len >= 1)
			kill(-child, (unsigned char)p[0]);
		break;
	case T_DATA:
		put_data(p, len);
		break;
	default:
		if (busy()) {
			emit_error(EBUSY, "a request is already running");
			break;
		}
		if (type == T_EXEC)
			do_exec(p, len);
		else if (type == T_STAT)
			do_stat(p);
		else if (type == T_PUT)
			do_put(p, len);
		else if (type == T_GET)
			do_get(p);
		else
			emit_error(ENOSYS, "unknown request %d", type);
	}
}

/* --- the main loop's side ------------------------------------------------------------- */

static void read_source(int *fd, int type, bool all)
{
	char chunk[CHUNK];
	do {
		ssize_t n = read(*fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0 && type == T_DATA) {
			emit_error(errno, "read error: %s", strerror(errno));
			close_fd(fd);
			return;
		}
		if (n <= 0) {
			close_fd(fd);
			if (type == T_DATA) { /* the end of a get */
				emit(T_DATA, NULL, 0);
				emit(R_DONE, NULL, 0);
			}
			return;
		}
		emit(type, chunk, n);
	} while (all || out.len < OUT_LIMIT);
}

static void finish_exec(void)
{
	if (child_status < 0 || pout >= 0 || perr >= 0)
		return;
	int st = child_status;
	emit_u32(R_EXIT, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	child = 0;
	child_status = -1;
	close_fd(&pin);
	stdin_q.off = stdin_q.len = 0;
}

/* The reaper saw PID end: true when it was the command of an exec. Output the command left in
 * its pipes is still sent; what background processes write later is not waited for. */
bool control_reaped(pid_t pid, int status)
{
	if (pid <= 0 || pid != child)
		return false;
	child_status = status;
	if (pout >= 0)
		read_source(&pout, R_STDOUT, true);
	if (perr >= 0)
		read_source(&perr, R_STDERR, true);
	close_fd(&pout), close_fd(&perr);
	finish_exec();
	return true;
}

/* The poll entries the channel needs now (at most 5). */
int control_fds(struct pollfd *pfd)
{
	int n = 0;
	if (port < 0 || hup)
		return 0;
	short ev = (stdin_q.len < IN_LIMIT ? POLLIN : 0) | (out.len ? POLLOUT : 0);
	pfd[n++] = (struct pollfd){.fd = port, .events = ev};
	bool room = out.len < OUT_LIMIT;
	if (pout >= 0 && room)
		pfd[n++] = (struct pollfd){.fd = pout, .events = POLLIN};
	if (perr >= 0 && room)
		pfd[n++] = (struct pollfd){.fd = perr, .events = POLLIN};
	if (get_fd >= 0 && room)
		pfd[n++] = (struct pollfd){.fd = get_fd, .events = POLLIN};
	if (pin >= 0 && (stdin_q.len || stdin_eof))
		pfd[n++] = (struct pollfd){.fd = pin, .events = POLLOUT};
	return n;
}

/* Milliseconds until the channel wants the loop back without an event (-1: never). */
long control_timeout(void)
{
	long now = now_ms();
	if (port < 0 && started && now - started < GIVE_UP_MS)
		return next_try > now ? next_try - now : 0;
	if (port >= 0 && hup)
		return HUP_RECHECK_MS;
	return -1;
}

static void flush_stdin(void)
{
	while (stdin_q.len) {
		ssize_t w = write(pin, stdin_q.d + stdin_q.off, stdin_q.len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return;
		if (w <= 0) { /* the command closed its stdin: drop the rest */
			stdin_q.off = stdin_q.len = 0;
			close_fd(&pin);
			return;
		}
		buf_drop(&stdin_q, w);
	}
	if (stdin_eof)
		close_fd(&pin);
}

/* After poll: serve the channel (PFD: the entries control_fds gave, N of them). */
void control_handle(struct pollfd *pfd, int n)
{
	long now = now_ms();
	if (port < 0) {
		if (started && now >= next_try && now - started < GIVE_UP_MS) {
			port = open_port();
			next_try = now + RETRY_MS;
			if (port >= 0) {
				fcntl(port, F_SETOWN, getpid()); /* SIGIO (when asked) comes to us */
				trace("control channel open");
			}
		}
		return;
	}
	if (hup) {
		if (now - hup_since >= HUP_RECHECK_MS)
			control_wake();
		return;
	}
	for (int k = 0; k < n; k++) {
		short r = pfd[k].revents;
		if (!r)
			continue;
		if (pfd[k].fd == port) {
			if (r & POLLHUP) {
				host_gone();
				return;
			}
			/* the driver hands out one buffer (a page) per read: read on until it
			 * has no more, so a copy costs one poll per many pages, not per page */
			for (int reads = 0; (r & POLLIN) && reads < 64 && stdin_q.len < IN_LIMIT;
			     reads++) {
				buf_room(&in, HDR + MAX_PAYLOAD + 1); /* +1: a payload can end with a NUL */
				ssize_t got = read(port, in.d + in.off + in.len,
						   in.cap - in.off - in.len - 1);
				if (got <= 0)
					break;
				in.len += got;
				frames_parse(&in, frame);
			}
		} else if (pfd[k].fd == pout) {
			read_source(&pout, R_STDOUT, false);
		} else if (pfd[k].fd == perr) {
			read_source(&perr, R_STDERR, false);
		} else if (pfd[k].fd == get_fd) {
			read_source(&get_fd, T_DATA, false);
		} else if (pfd[k].fd == pin) {
			flush_stdin();
		}
	}
	if (pin >= 0 && (stdin_q.len || stdin_eof))
		flush_stdin();
	finish_exec();
	while (out.len) {
		ssize_t w = write(port, out.d + out.off, out.len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break; /* EAGAIN: POLLOUT tells when; the host gone: POLLHUP */
		buf_drop(&out, w);
	}
}

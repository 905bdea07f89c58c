/* Small helpers: messages, files, string vectors. */
#include "minivm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDERR_FILENO, "minivm: ", 8) < 0 || write(STDERR_FILENO, buf, n) < 0)
		return;
}

char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	for (;;) {
		if (n == cap)
			buf = realloc(buf, (cap *= 2) + 1);
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += r;
	}
	close(fd);
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

int write_file(const char *path, const char *data, mode_t mode)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.minivm-tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	size_t len = strlen(data);
	bool ok = write(fd, data, len) == (ssize_t)len;
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

bool is_exec(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

void mkdirs(const char *path, mode_t mode)
{
	char buf[4096];
	scopy(buf, sizeof(buf), path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			mkdir(buf, 0755);
			*p = '/';
		}
	}
	mkdir(buf, mode);
}

void strv_push(struct strv *s, const char *str)
{
	s->v = realloc(s->v, sizeof(char *) * (s->n + 2));
	s->v[s->n++] = strdup(str);
	s->v[s->n] = NULL;
}

static int env_index(const struct strv *env, const char *key, size_t klen)
{
	for (int i = 0; i < env->n; i++)
		if (strncmp(env->v[i], key, klen) == 0 && env->v[i][klen] == '=')
			return i;
	return -1;
}

void strv_set_env(struct strv *env, const char *kv)
{
	const char *eq = strchr(kv, '=');
	size_t klen = eq ? (size_t)(eq - kv) : strlen(kv);
	int i = env_index(env, kv, klen);
	if (!eq) /* Docker: `ENV KEY` without a value is ignored */
		return;
	if (i < 0) {
		strv_push(env, kv);
		return;
	}
	free(env->v[i]);
	env->v[i] = strdup(kv);
}

const char *strv_get_env(const struct strv *env, const char *key)
{
	int i = env_index(env, key, strlen(key));
	return i < 0 ? NULL : env->v[i] + strlen(key) + 1;
}

void scopy(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = 0;
}

void trace(const char *step)
{
	if (!kcmd.debug)
		return;
	char *up = read_file("/proc/uptime", NULL);
	if (up)
		up[strcspn(up, " ")] = 0;
	say("%s s: %s", up ? up : "?", step);
	free(up);
}

/* Configuration: the kernel command line and the image config stored by `minivm build`. */
#include "minivm.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cmdline kcmd;
struct imgconfig img;

/* Split the kernel command line into words, the way the kernel does: double quotes group
 * (and are removed), whitespace separates. */
static int split_words(char *s, char **words, int max)
{
	int n = 0;
	while (*s && n < max) {
		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		char *out = s, *w = s;
		bool quoted = false;
		for (; *s && (quoted || !isspace((unsigned char)*s)); s++) {
			if (*s == '"')
				quoted = !quoted;
			else
				*out++ = *s;
		}
		if (*s)
			s++;
		*out = 0;
		words[n++] = w;
	}
	return n;
}

static bool env_in(char **envp, const char *key, size_t klen)
{
	for (; envp && *envp; envp++)
		if (strncmp(*envp, key, klen) == 0 && (*envp)[klen] == '=')
			return true;
	return false;
}

/* A `KEY=value` word is an environment variable for the image when the kernel passed it to us
 * as one, or when KEY looks like one (upper case, as an appliance's MANAGEMENT_INTERFACE=eth0):
 * an initramfs in between may not pass the kernel's environment on. */
static bool is_env_word(const char *w, char **envp)
{
	const char *eq = strchr(w, '=');
	if (!eq || eq == w || memchr(w, '.', eq - w))
		return false;
	if (env_in(envp, w, eq - w))
		return true;
	for (const char *p = w; p < eq; p++)
		if (!(isupper((unsigned char)*p) || *p == '_' || (p > w && isdigit((unsigned char)*p))))
			return false;
	return true;
}

void parse_cmdline(char **envp)
{
	char *line = read_file("/proc/cmdline", NULL);
	static char *words[1024];
	int n = line ? split_words(line, words, 1024) : 0;
	bool after = false;
	for (int i = 0; i < n; i++) {
		char *w = words[i];
		if (after) {
			strv_push(&kcmd.args, w);
		} else if (strcmp(w, "--") == 0) {
			after = kcmd.has_args = true;
		} else if (strncmp(w, "hostname=", 9) == 0) {
			kcmd.hostname = w + 9;
		} else if (strncmp(w, "ip=", 3) == 0) {
			if (kcmd.nip < MAX_IP)
				kcmd.ip[kcmd.nip++] = w + 3;
		} else if (strncmp(w, "dns=", 4) == 0) {
			kcmd.dns = w + 4;
		} else if (strncmp(w, "add_host=", 9) == 0) {
			kcmd.add_host = w + 9;
		} else if (strncmp(w, "minivm.on_exit=", 15) == 0) {
			kcmd.on_exit = w + 15;
		} else if (strncmp(w, "minivm.console=", 15) == 0) {
			kcmd.console = w + 15;
		} else if (strcmp(w, "minivm.debug") == 0) {
			kcmd.debug = true;
		} else if (is_env_word(w, envp)) {
			strv_set_env(&kcmd.env, w);
		}
	}
	if (kcmd.has_args && kcmd.args.n == 0)
		kcmd.has_args = false;
}

/* Undo the config's escaping: \\ is a backslash, \n a newline. */
static char *unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;
	for (; *s; s++) {
		if (*s == '\\' && s[1]) {
			s++;
			*o++ = *s == 'n' ? '\n' : *s;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
	return out;
}

void parse_config(void)
{
	char *data = read_file(CONFIG_FILE, NULL);
	if (!data)
		return;
	for (char *save = NULL, *l = strtok_r(data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(l, ' ');
		if (!sp)
			continue;
		*sp = 0;
		char *v = unescape(sp + 1);
		if (strcmp(l, "name") == 0)
			img.name = v;
		else if (strcmp(l, "entrypoint") == 0)
			strv_push(&img.entrypoint, v);
		else if (strcmp(l, "cmd") == 0)
			strv_push(&img.cmd, v);
		else if (strcmp(l, "env") == 0)
			strv_set_env(&img.env, v);
		else if (strcmp(l, "workdir") == 0)
			img.workdir = v;
		else if (strcmp(l, "user") == 0)
			img.user = v;
	}
	free(data);
}

/* The environment of a process we start: Docker's defaults, then the image's ENV, then the
 * variables from the kernel command line (like `docker run -e`). A process on the console
 * (for_shell) also gets TERM and finds the toolbox (poweroff, reboot, ip...) at the end of PATH. */
void base_env(struct strv *env, const char *hostname, bool for_shell)
{
	strv_set_env(env, "PATH=" DEFAULT_PATH);
	char buf[512];
	snprintf(buf, sizeof(buf), "HOSTNAME=%s", hostname);
	strv_set_env(env, buf);
	if (for_shell) /* as Docker: TERM only for a process on a terminal */
		strv_set_env(env, "TERM=vt220");
	for (int i = 0; i < img.env.n; i++)
		strv_set_env(env, img.env.v[i]);
	for (int i = 0; i < kcmd.env.n; i++)
		strv_set_env(env, kcmd.env.v[i]);
	if (for_shell) {
		const char *path = strv_get_env(env, "PATH");
		char *p = malloc(strlen(path) + sizeof(TOOLBOX) + 8);
		sprintf(p, "PATH=%s:%s", path, TOOLBOX);
		strv_set_env(env, p);
		free(p);
	}
}

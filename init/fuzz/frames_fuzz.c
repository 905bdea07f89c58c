/* Random input for the control channel's framing (../src/frames.c), as the init reads it:
 * bytes arrive in pieces of any size into the same buffer, frames are split out, and every
 * request payload is taken apart as control.c does. Built with AddressSanitizer and UBSan by
 * the tests; runs for SECONDS (argv[1]) from SEED (argv[2]) and prints how many inputs and
 * frames it went through. Any memory error aborts with the sanitizer's report. */
#define _GNU_SOURCE
#include "../src/frames.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t state;
static unsigned long frames_seen, items_seen;

static uint64_t rnd(void) /* xorshift64* */
{
	state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
	return state * 2685821657736338717ULL;
}

static size_t below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

static volatile unsigned char sink;

static void touch(const char *s)
{
	for (; *s; s++)
		sink ^= (unsigned char)*s;
}

/* What control.c's frame() reads of each request. */
static void handle(int type, char *p, size_t len)
{
	frames_seen++;
	for (size_t k = 0; k < len; k++) /* the whole payload and its NUL are ours to read */
		sink ^= (unsigned char)p[k];
	sink ^= (unsigned char)p[len];
	if (type == 0x02 || type == 0x01)
		for (char *item = NULL; (item = frame_item(p, len, item));)
			touch(item), items_seen++;
	if (type == 0x06) {
		mode_t mode;
		const char *path, *name;
		if (put_request(p, len, &mode, &path, &name))
			touch(path), touch(name);
	}
	if (type == 0x05 || type == 0x08)
		touch(p);
}

/* One input: garbage, whole frames with random payloads (NULs, lengths at the limits),
 * frames cut short, and headers that lie about their length. */
static size_t make_input(unsigned char *d, size_t cap)
{
	size_t n = 0;
	int parts = 1 + (int)below(8);
	for (int k = 0; k < parts && n + HDR < cap; k++) {
		size_t kind = below(24);
		if (kind >= 20) { /* garbage, often with 'm' 'v' in it */
			size_t len = below(300);
			for (size_t i = 0; i < len && n < cap; i++)
				d[n++] = below(4) == 0 ? "mv"[below(2)] : (unsigned char)rnd();
			continue;
		}
		size_t len = kind == 0 ? MAX_PAYLOAD - below(3) : kind == 1 ? MAX_PAYLOAD + below(3) :
			     below(200);
		unsigned char h[HDR] = {'m', 'v', (unsigned char)(below(3) ? 1 + below(8) : rnd()),
					below(16) ? 0 : (unsigned char)rnd()};
		put_u32(h + 4, (uint32_t)(below(20) ? len : rnd()));
		for (int i = 0; i < HDR && n < cap; i++)
			d[n++] = h[i];
		if (len > MAX_PAYLOAD)
			len = below(100);
		if (below(10) == 0)
			len = below(len + 1); /* cut short */
		for (size_t i = 0; i < len && n < cap; i++)
			d[n++] = below(5) == 0 ? 0 : (unsigned char)(' ' + below(95));
	}
	return n;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5;
	state = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL);
	state = state ? state : 1;
	size_t cap = 4 * (HDR + MAX_PAYLOAD + 400);
	unsigned char *input = malloc(cap);
	unsigned long inputs = 0;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int batch = 0; batch < 64; batch++, inputs++) {
			struct buf in = {0};
			size_t len = make_input(input, cap);
			for (size_t pos = 0; pos < len;) { /* as control_handle reads the port */
				buf_room(&in, HDR + MAX_PAYLOAD + 1);
				size_t room = in.cap - in.off - in.len - 1;
				size_t got = 1 + below(below(2) ? 64 : 70000);
				got = got > room ? room : got;
				got = got > len - pos ? len - pos : got;
				memcpy(in.d + in.off + in.len, input + pos, got);
				in.len += got, pos += got;
				frames_parse(&in, handle);
			}
			free(in.d);
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
	printf("%lu inputs, %lu frames, %lu items\n", inputs, frames_seen, items_seen);
	free(input);
	return 0;
}

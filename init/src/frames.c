/* The control channel's framing (see frames.h). */
#include "frames.h"

#include <stdlib.h>
#include <string.h>

void buf_room(struct buf *b, size_t need)
{
	if (b->off + b->len + need <= b->cap)
		return;
	if (b->off)
		memmove(b->d, b->d + b->off, b->len);
	b->off = 0;
	if (b->len + need > b->cap) {
		b->cap = (b->len + need) * 2;
		b->d = realloc(b->d, b->cap);
		if (!b->d)
			abort(); /* PID 1 out of memory: nothing sensible is left to do */
	}
}

void buf_drop(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (!b->len)
		b->off = 0;
}

void buf_add(struct buf *b, const void *data, size_t len)
{
	buf_room(b, len);
	memcpy(b->d + b->off + b->len, data, len);
	b->len += len;
}

void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void frames_parse(struct buf *in, void (*handle)(int type, char *payload, size_t len))
{
	while (in->len >= HDR) {
		unsigned char *h = (unsigned char *)in->d + in->off;
		if (h[0] != 'm' || h[1] != 'v' || h[3] != 0 || get_u32(h + 4) > MAX_PAYLOAD) {
			buf_drop(in, 1);
			continue;
		}
		size_t len = get_u32(h + 4);
		if (in->len < HDR + len)
			return;
		if (in->off + HDR + len >= in->cap) { /* no byte free after it: make one */
			buf_room(in, 1);
			h = (unsigned char *)in->d + in->off;
		}
		char *payload = (char *)h + HDR;
		char last = payload[len];
		payload[len] = 0; /* strings in a payload end */
		handle(h[2], payload, len);
		payload[len] = last;
		buf_drop(in, HDR + len);
	}
}

char *frame_item(char *p, size_t len, char *item)
{
	char *next = item ? item + strlen(item) + 1 : p;
	return next < p + len ? next : NULL;
}

bool put_request(char *p, size_t len, mode_t *mode, const char **path, const char **name)
{
	if (len < 4 + 2)
		return false;
	char *end = p + len, *first = p + 4;
	char *nul = memchr(first, 0, (size_t)(end - first));
	if (!nul || nul == first || nul + 1 >= end || !nul[1] ||
	    !memchr(nul + 1, 0, (size_t)(end - nul - 1)))
		return false; /* PATH\0 NAME\0 within the payload, neither empty */
	*mode = get_u32((const unsigned char *)p) & 07777;
	*path = first;
	*name = nul + 1;
	return true;
}

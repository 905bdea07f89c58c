/* The control channel's framing, apart from what serves it: byte buffers, frames out of a
 * byte stream, and the requests' payloads. No system call here: fuzz/frames_fuzz.c runs the
 * same code under AddressSanitizer and UBSan. */
#ifndef MINIVM_FRAMES_H
#define MINIVM_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HDR 8                     /* 'm' 'v' type 0 length(u32 big-endian) */
#define MAX_PAYLOAD 65536

struct buf {
	char *d;
	size_t off, len, cap; /* live bytes are d[off .. off+len) */
};

void buf_room(struct buf *b, size_t need); /* room for NEED more bytes after the live ones */
void buf_drop(struct buf *b, size_t n);
void buf_add(struct buf *b, const void *data, size_t len);
void put_u32(unsigned char *p, uint32_t v);
uint32_t get_u32(const unsigned char *p);

/* Hand every whole frame in IN to HANDLE (its payload NUL-terminated just past its end:
 * readers leave a byte free after the live ones) and drop it; bytes that start no frame are
 * skipped. */
void frames_parse(struct buf *in, void (*handle)(int type, char *payload, size_t len));

/* The next NUL-terminated item of a payload P of LEN bytes (P[LEN] is a NUL) after ITEM
 * (NULL: the first); NULL at the end. */
char *frame_item(char *p, size_t len, char *item);

/* put: MODE(u32) PATH\0 NAME\0. False when the payload is not that. */
bool put_request(char *p, size_t len, mode_t *mode, const char **path, const char **name);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * The mem backend: a growable file in memory for unit tests, fuzzers and
 * crash replay. Growth is zero-filled, reads past the end return zeroes,
 * everything is data and flush does nothing. The size is capped so that a
 * fuzzed image asking for a write at a huge offset fails cleanly instead of
 * exhausting memory.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MEM_MAX_SIZE (1ull << 30)

struct mem {
	struct img_io io;
	uint8_t *data;
	size_t size;
	size_t cap;
};

static const struct img_io_ops mem_ops;

static struct mem *to_mem(struct img_io *io)
{
	return (struct mem *)io;
}

/* Make the file size at least size bytes, zero-filled. */
static int mem_grow(struct mem *m, uint64_t size)
{
	if (size <= m->size)
		return 0;
	if (size > MEM_MAX_SIZE)
		return img_error(-ENOSPC,
				 "io: mem file cannot grow to %" PRIu64
				 " bytes (limit %llu)",
				 size, MEM_MAX_SIZE);
	if (size > m->cap) {
		size_t cap = m->cap ? m->cap : 4096;
		uint8_t *p;

		while (cap < size)
			cap *= 2;
		if (cap > MEM_MAX_SIZE)
			cap = MEM_MAX_SIZE;
		p = realloc(m->data, cap);
		if (!p)
			return img_error(
				-ENOMEM,
				"io: out of memory growing a mem file to %" PRIu64
				" bytes",
				size);
		m->data = p;
		m->cap = cap;
	}
	memset(m->data + m->size, 0, (size_t)size - m->size);
	m->size = (size_t)size;
	return 0;
}

static int mem_pread(struct img_io *io, void *buf, uint64_t len,
		     uint64_t file_off)
{
	struct mem *m = to_mem(io);
	uint64_t n = 0;

	if (file_off < m->size) {
		n = img_min(len, m->size - file_off);
		memcpy(buf, m->data + file_off, (size_t)n);
	}
	memset((uint8_t *)buf + n, 0, (size_t)(len - n));
	return 0;
}

static int mem_pwrite(struct img_io *io, const void *buf, uint64_t len,
		      uint64_t file_off)
{
	struct mem *m = to_mem(io);
	int ret;

	if (!len)
		return 0;
	ret = mem_grow(m, file_off + len);
	if (ret < 0)
		return ret;
	memcpy(m->data + file_off, buf, (size_t)len);
	return 0;
}

static int mem_zero(struct img_io *io, uint64_t file_off, uint64_t len,
		    unsigned flags)
{
	struct mem *m = to_mem(io);
	uint64_t end = file_off + len;
	int ret;

	if (file_off < m->size)
		memset(m->data + file_off, 0,
		       (size_t)(img_min(end, m->size) - file_off));
	ret = mem_grow(m, end);
	return ret;
}

static int mem_get_size(struct img_io *io, uint64_t *size)
{
	*size = to_mem(io)->size;
	return 0;
}

static int mem_truncate(struct img_io *io, uint64_t size)
{
	struct mem *m = to_mem(io);

	if (size <= m->size) {
		m->size = (size_t)size;
		return 0;
	}
	return mem_grow(m, size);
}

static void mem_close(struct img_io *io)
{
	struct mem *m = to_mem(io);

	free(m->data);
	free(m->io.path);
	free(m);
}

static const struct img_io_ops mem_ops = {
	.name = "mem",
	.pread = mem_pread,
	.pwrite = mem_pwrite,
	.zero = mem_zero,
	.get_size = mem_get_size,
	.truncate = mem_truncate,
	.close = mem_close,
};

int img_io_mem_new(const void *data, size_t len, struct img_io **out)
{
	struct mem *m = calloc(1, sizeof(*m));
	int ret;

	if (!m)
		return img_error(-ENOMEM, "io: out of memory");
	m->io.ops = &mem_ops;
	if (data && len) {
		ret = mem_grow(m, len);
		if (ret < 0) {
			free(m);
			return ret;
		}
		memcpy(m->data, data, len);
	}
	*out = &m->io;
	return 0;
}

void img_io_mem_data(struct img_io *io, const uint8_t **data, size_t *len)
{
	if (!io || io->ops != &mem_ops) {
		*data = NULL;
		*len = 0;
		return;
	}
	*data = to_mem(io)->data;
	*len = to_mem(io)->size;
}

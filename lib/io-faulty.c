/* SPDX-License-Identifier: MIT */
/*
 * The faulty backend: wraps another struct img_io, numbers every op that can
 * change or read the file (pread, pwrite, each vec of a batch, flush, zero,
 * truncate, allocate) and fails the armed one with an injected error (or,
 * with err 0, writes only half of it and then fails -EIO, as a torn write).
 * It records every successful write (with a copy of the data), zero,
 * truncate and flush in order, so a test can replay any prefix of the log
 * onto a mem backend and look at the file a crash at that point would leave.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Returned by faulty_tick for "torn write": errors are never positive. */
#define FAULTY_SHORT 1

struct faulty {
	struct img_io io;
	struct img_io *inner;
	uint64_t nops;
	uint64_t fail_at; /* 0: disarmed */
	int err;
	bool sticky;
	struct img_io_log_entry *log;
	size_t n_log;
	size_t cap_log;
};

static const struct img_io_ops faulty_ops;

static struct faulty *to_faulty(struct img_io *io)
{
	return (struct faulty *)io;
}

/* Count one op; 0 to let it run, -errno or FAULTY_SHORT to fail it. */
static int faulty_tick(struct faulty *f)
{
	f->nops++;
	if (!f->fail_at || f->nops < f->fail_at)
		return 0;
	if (f->nops > f->fail_at && !f->sticky)
		return 0;
	if (f->err == 0)
		return FAULTY_SHORT;
	return f->err < 0 ? f->err : -f->err;
}

/* Make room for one more entry before doing the op it will record. */
static int faulty_reserve(struct faulty *f)
{
	struct img_io_log_entry *p;
	size_t cap;

	if (f->n_log < f->cap_log)
		return 0;
	cap = f->cap_log ? f->cap_log * 2 : 64;
	p = realloc(f->log, cap * sizeof(*p));
	if (!p)
		return -ENOMEM;
	f->log = p;
	f->cap_log = cap;
	return 0;
}

static void faulty_record(struct faulty *f, int kind, uint64_t file_off,
			  uint64_t len, uint8_t *data)
{
	f->log[f->n_log++] = (struct img_io_log_entry){
		.kind = kind,
		.file_off = file_off,
		.len = len,
		.data = data,
	};
}

static int faulty_do_pread(struct faulty *f, void *buf, uint64_t len,
			   uint64_t file_off)
{
	int ret = faulty_tick(f);

	if (ret)
		return ret < 0 ? ret : -EIO;
	return img_io_pread(f->inner, buf, len, file_off);
}

static int faulty_do_pwrite(struct faulty *f, const void *buf, uint64_t len,
			    uint64_t file_off)
{
	int fault = faulty_tick(f);
	uint8_t *copy;
	int ret;

	if (fault < 0)
		return fault;
	if (fault == FAULTY_SHORT)
		len /= 2;
	if (len) {
		ret = faulty_reserve(f);
		if (ret < 0)
			return ret;
		copy = malloc(len);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, buf, len);
		ret = img_io_pwrite(f->inner, buf, len, file_off);
		if (ret < 0) {
			free(copy);
			return ret;
		}
		faulty_record(f, IMG_LOG_WRITE, file_off, len, copy);
	}
	return fault == FAULTY_SHORT ? -EIO : 0;
}

static int faulty_pread(struct img_io *io, void *buf, uint64_t len,
			uint64_t file_off)
{
	return faulty_do_pread(to_faulty(io), buf, len, file_off);
}

static int faulty_pwrite(struct img_io *io, const void *buf, uint64_t len,
			 uint64_t file_off)
{
	return faulty_do_pwrite(to_faulty(io), buf, len, file_off);
}

/* One vec at a time, every one attempted: in a real batch the others
 * complete whatever happens to one of them. */
static int faulty_submit(struct img_io *io, struct img_io_vec *v, unsigned n)
{
	struct faulty *f = to_faulty(io);
	int first = 0, ret;

	for (unsigned i = 0; i < n; i++) {
		if (!v[i].len)
			continue;
		if (v[i].write)
			ret = faulty_do_pwrite(f, v[i].buf, v[i].len,
					       v[i].file_off);
		else
			ret = faulty_do_pread(f, v[i].buf, v[i].len,
					      v[i].file_off);
		if (ret < 0 && !first)
			first = ret;
	}
	return first;
}

static int faulty_flush(struct img_io *io)
{
	struct faulty *f = to_faulty(io);
	int ret = faulty_tick(f);

	if (ret)
		return ret < 0 ? ret : -EIO;
	ret = faulty_reserve(f);
	if (ret < 0)
		return ret;
	ret = img_io_flush(f->inner);
	if (ret < 0)
		return ret;
	faulty_record(f, IMG_LOG_FLUSH, 0, 0, NULL);
	return 0;
}

static int faulty_zero(struct img_io *io, uint64_t file_off, uint64_t len,
		       unsigned flags)
{
	struct faulty *f = to_faulty(io);
	int ret = faulty_tick(f);

	if (ret)
		return ret < 0 ? ret : -EIO;
	ret = faulty_reserve(f);
	if (ret < 0)
		return ret;
	ret = img_io_zero(f->inner, file_off, len, flags);
	if (ret < 0)
		return ret;
	faulty_record(f, IMG_LOG_ZERO, file_off, len, NULL);
	return 0;
}

static int faulty_truncate(struct img_io *io, uint64_t size)
{
	struct faulty *f = to_faulty(io);
	int ret = faulty_tick(f);

	if (ret)
		return ret < 0 ? ret : -EIO;
	ret = faulty_reserve(f);
	if (ret < 0)
		return ret;
	ret = img_io_truncate(f->inner, size);
	if (ret < 0)
		return ret;
	faulty_record(f, IMG_LOG_TRUNCATE, size, 0, NULL);
	return 0;
}

/* Preallocation changes no contents, but past the end it grows the file,
 * which the log records as a zeroing of the new part. */
static int faulty_allocate(struct img_io *io, uint64_t file_off, uint64_t len)
{
	struct faulty *f = to_faulty(io);
	uint64_t size;
	int ret = faulty_tick(f);

	if (ret)
		return ret < 0 ? ret : -EIO;
	ret = faulty_reserve(f);
	if (ret < 0)
		return ret;
	ret = img_io_size(f->inner, &size);
	if (ret < 0)
		return ret;
	ret = img_io_allocate(f->inner, file_off, len);
	if (ret < 0)
		return ret;
	if (file_off + len > size)
		faulty_record(f, IMG_LOG_ZERO, size, file_off + len - size,
			      NULL);
	return 0;
}

static int faulty_get_size(struct img_io *io, uint64_t *size)
{
	return img_io_size(to_faulty(io)->inner, size);
}

static int faulty_extent(struct img_io *io, uint64_t file_off, uint64_t len,
			 bool *data, uint64_t *extent_len)
{
	return img_io_extent(to_faulty(io)->inner, file_off, len, data,
			     extent_len);
}

static int faulty_allocated(struct img_io *io, uint64_t *bytes)
{
	return img_io_allocated(to_faulty(io)->inner, bytes);
}

static void faulty_close(struct img_io *io)
{
	struct faulty *f = to_faulty(io);

	for (size_t i = 0; i < f->n_log; i++)
		free(f->log[i].data);
	free(f->log);
	img_io_close(f->inner);
	free(f->io.path);
	free(f);
}

static const struct img_io_ops faulty_ops = {
	.name = "faulty",
	.pread = faulty_pread,
	.pwrite = faulty_pwrite,
	.submit = faulty_submit,
	.flush = faulty_flush,
	.zero = faulty_zero,
	.allocate = faulty_allocate,
	.get_size = faulty_get_size,
	.truncate = faulty_truncate,
	.extent = faulty_extent,
	.allocated = faulty_allocated,
	.close = faulty_close,
};

int img_io_faulty_new(struct img_io *inner, struct img_io **out)
{
	struct faulty *f = calloc(1, sizeof(*f));

	if (!f || (inner->path && !(f->io.path = strdup(inner->path)))) {
		free(f);
		img_io_close(inner);
		return img_error(-ENOMEM, "io: out of memory");
	}
	f->io.ops = &faulty_ops;
	/* The inner backend bounces O_DIRECT transfers itself, so the log
	 * holds the writes as they were asked for. */
	f->io.flags = inner->flags & ~IMG_IO_DIRECT;
	f->inner = inner;
	*out = &f->io;
	return 0;
}

void img_io_faulty_arm(struct img_io *io, uint64_t fail_at, int err,
		       bool sticky)
{
	struct faulty *f;

	if (!io || io->ops != &faulty_ops)
		return;
	f = to_faulty(io);
	f->fail_at = fail_at;
	f->err = err;
	f->sticky = sticky;
}

uint64_t img_io_faulty_ops(struct img_io *io)
{
	if (!io || io->ops != &faulty_ops)
		return 0;
	return to_faulty(io)->nops;
}

void img_io_faulty_log(struct img_io *io,
		       const struct img_io_log_entry **entries, size_t *n)
{
	if (!io || io->ops != &faulty_ops) {
		*entries = NULL;
		*n = 0;
		return;
	}
	*entries = to_faulty(io)->log;
	*n = to_faulty(io)->n_log;
}

int img_io_log_apply(struct img_io *mem, const struct img_io_log_entry *entries,
		     size_t n)
{
	int ret = 0;

	for (size_t i = 0; i < n && ret >= 0; i++) {
		const struct img_io_log_entry *e = &entries[i];

		switch (e->kind) {
		case IMG_LOG_WRITE:
			ret = img_io_pwrite(mem, e->data, e->len, e->file_off);
			break;
		case IMG_LOG_ZERO:
			ret = img_io_zero(mem, e->file_off, e->len, 0);
			break;
		case IMG_LOG_TRUNCATE:
			ret = img_io_truncate(mem, e->file_off);
			break;
		case IMG_LOG_FLUSH:
			break;
		default:
			ret = img_error(-EINVAL,
					"io: log entry %zu has kind %d", i,
					(int)e->kind);
		}
	}
	return ret;
}

/* SPDX-License-Identifier: MIT */
/*
 * The front of struct img_io: img_io_open() picks a backend (io_uring when a
 * ring can be set up, else psync), img_io_open_beneath() does the same for a
 * name confined to a directory (lib/confine.c resolves it), and the img_io_*
 * wrappers check arguments, supply the documented behaviour for ops a backend
 * leaves NULL, bounce unaligned transfers through aligned buffers for
 * O_DIRECT files (so psync and io_uring only ever see aligned requests) and
 * turn a backend's -errno into a message that names the file. It refuses
 * files whose size cannot be known (pipes, sockets, character devices) and
 * keeps a cached file size for img_io_holds().
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

/* O_DIRECT alignment of buffers, offsets and lengths. 4096 satisfies every
 * logical block size Linux supports for files we are likely to meet. */
#define IO_DIRECT_ALIGN 4096u
/* Largest bounce buffer and largest zero write. */
#define IO_CHUNK (1u << 20)

static uint8_t io_zero_buf[IO_CHUNK] __attribute__((aligned(IO_DIRECT_ALIGN)));

static const char *io_name(const struct img_io *io)
{
	return io->path ? io->path : io->ops->name;
}

static int io_fail(struct img_io *io, int ret, const char *what, uint64_t len,
		   uint64_t file_off)
{
	return img_error(ret,
			 "io: %s of %" PRIu64 " bytes at %#" PRIx64
			 " in '%s' failed: %s",
			 what, len, file_off, io_name(io), strerror(-ret));
}

static int io_check_range(struct img_io *io, const char *what, uint64_t len,
			  uint64_t file_off)
{
	if (file_off > INT64_MAX || len > INT64_MAX - file_off)
		return img_error(-EINVAL,
				 "io: %s of %" PRIu64 " bytes at %#" PRIx64
				 " in '%s' is beyond the largest file offset",
				 what, len, file_off, io_name(io));
	return 0;
}

/* A successful write or allocation up to end: the file is at least that
 * long now. */
static void io_size_raise(struct img_io *io, uint64_t end)
{
	uint64_t seen = __atomic_load_n(&io->size_seen, __ATOMIC_RELAXED);

	while (seen < end &&
	       !__atomic_compare_exchange_n(&io->size_seen, &seen, end, true,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

void img_io_wrote(struct img_io *io, uint64_t end)
{
	io_size_raise(io, end);
}

int img_io_fd(struct img_io *io)
{
	int fd = img_io_psync_fd(io);

	return fd >= 0 ? fd : img_io_uring_fd(io);
}

static void io_size_set(struct img_io *io, uint64_t size)
{
	__atomic_store_n(&io->size_seen, size, __ATOMIC_RELAXED);
}

static int io_check_writable(struct img_io *io)
{
	if (io->flags & IMG_IO_RDONLY)
		return img_error(-EROFS, "io: '%s' is opened read-only",
				 io_name(io));
	return 0;
}

static bool io_direct(const struct img_io *io)
{
	return io->flags & IMG_IO_DIRECT;
}

static bool io_aligned(const void *buf, uint64_t len, uint64_t file_off)
{
	return !(((uintptr_t)buf | len | file_off) & (IO_DIRECT_ALIGN - 1));
}

/* A bounce buffer for len bytes at file_off: the aligned blocks covering
 * them, at most IO_CHUNK; *cap gets its size. Sized to the transfer, so a
 * small one costs no mapping of a whole chunk (measured: allocating 4 KiB
 * qcow2 writes at O_DIRECT spent half their time in munmap of 1 MiB
 * buffers). */
static uint8_t *io_bounce_alloc(uint64_t len, uint64_t file_off, uint64_t *cap)
{
	void *p = NULL;

	*cap = img_min(img_align_up(file_off % IO_DIRECT_ALIGN + len,
				    IO_DIRECT_ALIGN),
		       IO_CHUNK);
	if (posix_memalign(&p, IO_DIRECT_ALIGN, (size_t)*cap))
		return NULL;
	return p;
}

/* An unaligned read on an O_DIRECT file: read the covering aligned blocks. */
static int io_bounce_read(struct img_io *io, void *buf, uint64_t len,
			  uint64_t file_off)
{
	uint64_t cap;
	uint8_t *bounce = io_bounce_alloc(len, file_off, &cap);
	uint8_t *dst = buf;
	int ret = 0;

	if (!bounce)
		return -ENOMEM;
	while (len) {
		uint64_t start = file_off & ~(uint64_t)(IO_DIRECT_ALIGN - 1);
		uint64_t skip = file_off - start;
		uint64_t span =
			img_min(img_align_up(skip + len, IO_DIRECT_ALIGN), cap);
		uint64_t n = img_min(span - skip, len);

		ret = io->ops->pread(io, bounce, span, start);
		if (ret < 0)
			break;
		memcpy(dst, bounce + skip, n);
		dst += n;
		file_off += n;
		len -= n;
	}
	free(bounce);
	return ret;
}

/*
 * An unaligned write on an O_DIRECT file: read-modify-write of the partial
 * blocks at either end. Writing whole blocks may extend the file past the
 * end of the data; the size is then cut back to what a plain write leaves.
 */
/*
 * Bounced writes read the aligned blocks around them, patch and write them
 * back: two at once in one block would lose one another's bytes, so the
 * bounced writes of one file take turns (a stripe of these locks per file;
 * aligned writes never bounce).
 */
static pthread_mutex_t bounce_locks[16] = {
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
};

static int io_bounce_write_locked(struct img_io *io, const void *buf,
				  uint64_t len, uint64_t file_off);

static int io_bounce_write(struct img_io *io, const void *buf, uint64_t len,
			   uint64_t file_off)
{
	pthread_mutex_t *l = &bounce_locks[((uintptr_t)io >> 6) %
					   IMG_ARRAY_SIZE(bounce_locks)];
	int ret;

	pthread_mutex_lock(l);
	ret = io_bounce_write_locked(io, buf, len, file_off);
	pthread_mutex_unlock(l);
	return ret;
}

static int io_bounce_write_locked(struct img_io *io, const void *buf,
				  uint64_t len, uint64_t file_off)
{
	const uint64_t a = IO_DIRECT_ALIGN;
	uint64_t end = file_off + len, old_size = UINT64_MAX, cap;
	const uint8_t *src = buf;
	uint8_t *bounce;
	int ret = 0;

	if (end % a) {
		if (!io->ops->get_size)
			return -ENOTSUP;
		ret = io->ops->get_size(io, &old_size);
		if (ret < 0)
			return ret;
	}
	bounce = io_bounce_alloc(len, file_off, &cap);
	if (!bounce)
		return -ENOMEM;
	while (len) {
		uint64_t start = file_off & ~(a - 1);
		uint64_t skip = file_off - start;
		uint64_t span = img_min(img_align_up(skip + len, a), cap);
		uint64_t n = img_min(span - skip, len);

		if (skip) {
			ret = io->ops->pread(io, bounce, a, start);
			if (ret < 0)
				break;
		}
		if ((skip + n) % a && (span > a || !skip)) {
			ret = io->ops->pread(io, bounce + span - a, a,
					     start + span - a);
			if (ret < 0)
				break;
		}
		memcpy(bounce + skip, src, n);
		ret = io->ops->pwrite(io, bounce, span, start);
		if (ret < 0)
			break;
		src += n;
		file_off += n;
		len -= n;
	}
	free(bounce);
	if (ret < 0)
		return ret;
	/* The last block went out whole: cut what it added past end, unless
	 * another write has made the file longer since. */
	if (old_size != UINT64_MAX && old_size < img_align_up(end, a) &&
	    io->ops->truncate) {
		uint64_t now;

		ret = io->ops->get_size(io, &now);
		if (ret >= 0 && now == img_align_up(end, a))
			ret = io->ops->truncate(io, old_size > end ? old_size :
								     end);
	}
	return ret;
}

bool img_io_transfer_ok(const struct img_io *io, const void *buf, uint64_t len,
			uint64_t file_off)
{
	return !io_direct(io) || io_aligned(buf, len, file_off);
}

int img_io_pread(struct img_io *io, void *buf, uint64_t len, uint64_t file_off)
{
	int ret;

	if (!len)
		return 0;
	ret = io_check_range(io, "pread", len, file_off);
	if (ret < 0)
		return ret;
	if (io_direct(io) && !io_aligned(buf, len, file_off))
		ret = io_bounce_read(io, buf, len, file_off);
	else
		ret = io->ops->pread(io, buf, len, file_off);
	if (ret < 0)
		return io_fail(io, ret, "pread", len, file_off);
	return 0;
}

int img_io_pwrite(struct img_io *io, const void *buf, uint64_t len,
		  uint64_t file_off)
{
	int ret;

	if (!len)
		return 0;
	ret = io_check_range(io, "pwrite", len, file_off);
	if (ret < 0)
		return ret;
	ret = io_check_writable(io);
	if (ret < 0)
		return ret;
	if (io_direct(io) && !io_aligned(buf, len, file_off))
		ret = io_bounce_write(io, buf, len, file_off);
	else
		ret = io->ops->pwrite(io, buf, len, file_off);
	if (ret < 0)
		return io_fail(io, ret, "pwrite", len, file_off);
	io_size_raise(io, file_off + len);
	return 0;
}

static int io_submit_one(struct img_io *io, struct img_io_vec *v)
{
	if (v->write)
		return img_io_pwrite(io, v->buf, v->len, v->file_off);
	return img_io_pread(io, v->buf, v->len, v->file_off);
}

static void io_size_raise_vecs(struct img_io *io, const struct img_io_vec *v,
			       unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (v[i].write)
			io_size_raise(io, v[i].file_off + v[i].len);
}

/* O_DIRECT batch with some unaligned vecs: the aligned ones go in one
 * batch, the others through the bounce path one by one. */
static int io_submit_split(struct img_io *io, struct img_io_vec *v, unsigned n)
{
	struct img_io_vec *batch = malloc(sizeof(*batch) * n);
	unsigned nb = 0;
	int ret = 0, r;

	if (!batch)
		return img_error(-ENOMEM, "io: out of memory for a batch of %u",
				 n);
	for (unsigned i = 0; i < n; i++)
		if (io_aligned(v[i].buf, v[i].len, v[i].file_off))
			batch[nb++] = v[i];
	if (nb) {
		ret = io->ops->submit(io, batch, nb);
		if (ret < 0)
			ret = img_error(
				ret,
				"io: batch of %u transfers in '%s' failed: %s",
				nb, io_name(io), strerror(-ret));
		else
			io_size_raise_vecs(io, batch, nb);
	}
	free(batch);
	for (unsigned i = 0; i < n && ret >= 0; i++) {
		if (io_aligned(v[i].buf, v[i].len, v[i].file_off))
			continue;
		r = io_submit_one(io, &v[i]);
		if (r < 0 && ret >= 0)
			ret = r;
	}
	return ret;
}

int img_io_submit(struct img_io *io, struct img_io_vec *v, unsigned n)
{
	bool writes = false, unaligned = false;
	int ret;

	for (unsigned i = 0; i < n; i++) {
		ret = io_check_range(io, v[i].write ? "pwrite" : "pread",
				     v[i].len, v[i].file_off);
		if (ret < 0)
			return ret;
		writes |= v[i].write;
		unaligned |= !io_aligned(v[i].buf, v[i].len, v[i].file_off);
	}
	if (writes) {
		ret = io_check_writable(io);
		if (ret < 0)
			return ret;
	}
	if (!io->ops->submit || n == 1) {
		for (unsigned i = 0; i < n; i++) {
			ret = io_submit_one(io, &v[i]);
			if (ret < 0)
				return ret;
		}
		return 0;
	}
	if (!n)
		return 0;
	if (io_direct(io) && unaligned)
		return io_submit_split(io, v, n);
	ret = io->ops->submit(io, v, n);
	if (ret < 0)
		return img_error(ret,
				 "io: batch of %u transfers in '%s' failed: %s",
				 n, io_name(io), strerror(-ret));
	if (writes)
		io_size_raise_vecs(io, v, n);
	return 0;
}

int img_io_flush(struct img_io *io)
{
	int ret;

	if ((io->flags & IMG_IO_NOFLUSH) || !io->ops->flush)
		return 0;
	ret = io->ops->flush(io);
	if (ret < 0)
		return img_error(ret, "io: flush of '%s' failed: %s",
				 io_name(io), strerror(-ret));
	return 0;
}

static int io_write_zeroes(struct img_io *io, uint64_t file_off, uint64_t len)
{
	while (len) {
		uint64_t n = img_min(len, IO_CHUNK);
		int ret = img_io_pwrite(io, io_zero_buf, n, file_off);

		if (ret < 0)
			return ret;
		file_off += n;
		len -= n;
	}
	return 0;
}

int img_io_zero(struct img_io *io, uint64_t file_off, uint64_t len,
		unsigned flags)
{
	int ret;

	if (!len)
		return 0;
	ret = io_check_range(io, "zero", len, file_off);
	if (ret < 0)
		return ret;
	ret = io_check_writable(io);
	if (ret < 0)
		return ret;
	if (io->ops->zero) {
		ret = io->ops->zero(io, file_off, len,
				    flags & IMG_IO_ZERO_PUNCH);
		if (ret != -ENOTSUP) {
			if (ret < 0)
				return io_fail(io, ret, "zero", len, file_off);
			return 0;
		}
		/* A punch the backend cannot do may still be a zeroing. */
		if (flags & IMG_IO_ZERO_PUNCH) {
			ret = io->ops->zero(io, file_off, len, 0);
			if (ret >= 0)
				return 0;
			if (ret != -ENOTSUP)
				return io_fail(io, ret, "zero", len, file_off);
		}
	}
	if (flags & IMG_IO_ZERO_NO_WRITE)
		return -ENOTSUP;
	return io_write_zeroes(io, file_off, len);
}

int img_io_allocate(struct img_io *io, uint64_t file_off, uint64_t len)
{
	int ret;

	if (!len)
		return 0;
	ret = io_check_range(io, "allocate", len, file_off);
	if (ret < 0)
		return ret;
	ret = io_check_writable(io);
	if (ret < 0)
		return ret;
	if (!io->ops->allocate)
		return img_error(-ENOTSUP,
				 "io: '%s' (%s) cannot preallocate space",
				 io_name(io), io->ops->name);
	ret = io->ops->allocate(io, file_off, len);
	if (ret == -ENOTSUP)
		return img_error(
			ret,
			"io: the file system of '%s' cannot preallocate space",
			io_name(io));
	if (ret < 0)
		return io_fail(io, ret, "allocate", len, file_off);
	io_size_raise(io, file_off + len);
	return 0;
}

int img_io_size(struct img_io *io, uint64_t *size)
{
	int ret;

	if (!io->ops->get_size)
		return img_error(-ENOTSUP, "io: size of '%s' is unknown",
				 io_name(io));
	ret = io->ops->get_size(io, size);
	if (ret < 0)
		return img_error(ret, "io: cannot get the size of '%s': %s",
				 io_name(io), strerror(-ret));
	io_size_set(io, *size);
	return 0;
}

int img_io_holds(struct img_io *io, uint64_t end, uint64_t *size)
{
	int ret;

	if (end <= __atomic_load_n(&io->size_seen, __ATOMIC_RELAXED))
		return 1;
	/* A backend without a size cannot say; today's contract holds. */
	if (!io->ops->get_size)
		return 1;
	ret = img_io_size(io, size);
	if (ret < 0)
		return ret;
	return end <= *size;
}

int img_io_truncate(struct img_io *io, uint64_t size)
{
	int ret;

	if (size > INT64_MAX)
		return img_error(-EINVAL,
				 "io: cannot truncate '%s' to %" PRIu64
				 " bytes: too large",
				 io_name(io), size);
	ret = io_check_writable(io);
	if (ret < 0)
		return ret;
	if (!io->ops->truncate)
		return img_error(-ENOTSUP, "io: '%s' (%s) cannot be resized",
				 io_name(io), io->ops->name);
	ret = io->ops->truncate(io, size);
	if (ret < 0)
		return img_error(ret,
				 "io: truncate of '%s' to %" PRIu64
				 " bytes failed: %s",
				 io_name(io), size, strerror(-ret));
	io_size_set(io, size);
	return 0;
}

int img_io_extent(struct img_io *io, uint64_t file_off, uint64_t len,
		  bool *data, uint64_t *extent_len)
{
	int ret;

	if (!len)
		return img_error(-EINVAL, "io: extent query of 0 bytes in '%s'",
				 io_name(io));
	ret = io_check_range(io, "extent query", len, file_off);
	if (ret < 0)
		return ret;
	if (!io->ops->extent) {
		*data = true;
		*extent_len = len;
		return 0;
	}
	ret = io->ops->extent(io, file_off, len, data, extent_len);
	if (ret < 0)
		return io_fail(io, ret, "extent query", len, file_off);
	if (*extent_len == 0 || *extent_len > len)
		*extent_len = len;
	return 0;
}

int img_io_allocated(struct img_io *io, uint64_t *bytes)
{
	int ret;

	if (!io->ops->allocated)
		return img_io_size(io, bytes);
	ret = io->ops->allocated(io, bytes);
	if (ret < 0)
		return img_error(
			ret, "io: cannot get the allocated size of '%s': %s",
			io_name(io), strerror(-ret));
	return 0;
}

void img_io_close(struct img_io *io)
{
	if (io)
		io->ops->close(io);
}

/*
 * An image needs a size and random access. A pipe, socket or character
 * device has neither (its size reads as 0, reads give what it streams), so
 * it would silently become an empty or short image: refused with -ESPIPE.
 * Checked on the name, before open, because opening a FIFO for reading
 * waits for a writer.
 */
static int io_check_file_type(const char *path)
{
	const char *what;
	struct stat st;

	if (stat(path, &st) < 0)
		return 0; /* the backend's open reports it, or creates it */
	if (S_ISFIFO(st.st_mode))
		what = "a pipe";
	else if (S_ISSOCK(st.st_mode))
		what = "a socket";
	else if (S_ISCHR(st.st_mode))
		what = "a character device";
	else
		return 0;
	return img_error(
		-ESPIPE,
		"io: '%s' is %s, whose size cannot be known: images must be regular files or block devices (no streaming yet)",
		path, what);
}

int img_io_open(const char *path, unsigned flags, enum img_io_kind kind,
		struct img_io **out)
{
	int ret;

	if (!path || !*path)
		return img_error(-EINVAL, "io: empty file name");
	if (!strncmp(path, "rbd:", 4))
		return img_io_rbd_open(path, flags, out);
	ret = io_check_file_type(path);
	if (ret < 0)
		return ret;
	switch (kind) {
	case IMG_IO_AUTO:
		ret = img_io_uring_open(path, flags, out);
		/* No ring here (seccomp, old kernel, io_uring_disabled):
		 * psync does the same job, one syscall at a time. */
		if (ret == -ENOSYS)
			ret = img_io_psync_open(path, flags, out);
		return ret;
	case IMG_IO_URING:
		return img_io_uring_open(path, flags, out);
	case IMG_IO_PSYNC:
		return img_io_psync_open(path, flags, out);
	}
	return img_error(-EINVAL, "io: unknown backend kind %d", (int)kind);
}

int img_io_open_beneath(const char *dir, const char *name, unsigned flags,
			enum img_io_kind kind, struct img_io **out)
{
	struct img_io *io;
	char *path;
	int ret;

	if (!name || !*name)
		return img_error(-EINVAL, "io: empty file name");
	if (!strncmp(name, "rbd:", 4) || !strncmp(dir, "rbd:", 4))
		return img_error(
			-EXDEV,
			"io: '%s' is outside the directory '%s': an rbd "
			"name has no directory to stay in",
			name, dir);
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return img_error(-ENOMEM, "io: out of memory");
	switch (kind) {
	case IMG_IO_AUTO:
		ret = img_io_uring_open_beneath(dir, name, flags, &io);
		if (ret == -ENOSYS)
			ret = img_io_psync_open_beneath(dir, name, flags, &io);
		break;
	case IMG_IO_URING:
		ret = img_io_uring_open_beneath(dir, name, flags, &io);
		break;
	default:
		ret = img_io_psync_open_beneath(dir, name, flags, &io);
		break;
	}
	if (ret < 0) {
		free(path);
		return ret;
	}
	/* Messages name the file as the user sees it, not relative to dir. */
	free(io->path);
	io->path = path;
	*out = io;
	return 0;
}

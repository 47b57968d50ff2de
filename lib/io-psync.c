/* SPDX-License-Identifier: MIT */
/*
 * The psync backend: a host file driven with pread/pwrite, fdatasync,
 * fallocate and lseek(SEEK_DATA/SEEK_HOLE). It is the fallback where io_uring
 * cannot be set up, and the io_uring backend borrows its file descriptor and
 * its slow-path ops (zero, truncate, extents, size). Transfers loop over short
 * counts and EINTR; reads past the end of the file return zeroes. With
 * O_DIRECT, lib/io.c has already aligned every transfer.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Cap on one syscall's length; Linux transfers at most ~2 GiB anyway. */
#define PSYNC_MAX_XFER (1u << 30)

struct psync {
	struct img_io io;
	int fd;
};

static const struct img_io_ops psync_ops;

static struct psync *to_psync(struct img_io *io)
{
	return (struct psync *)io;
}

static int psync_get_size(struct img_io *io, uint64_t *size)
{
	struct psync *p = to_psync(io);
	struct stat st;

	if (fstat(p->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(p->fd, 0, SEEK_END);

		if (end < 0)
			return -errno;
		*size = (uint64_t)end;
		return 0;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

static int psync_pread(struct img_io *io, void *buf, uint64_t len,
		       uint64_t file_off)
{
	struct psync *p = to_psync(io);
	uint8_t *dst = buf;

	while (len) {
		size_t want = (size_t)img_min(len, PSYNC_MAX_XFER);
		ssize_t n = pread(p->fd, dst, want, (off_t)file_off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		dst += n;
		file_off += (uint64_t)n;
		len -= (uint64_t)n;
		if ((size_t)n < want) {
			/* A short read usually means EOF, and with O_DIRECT
			 * the next offset may be unaligned: ask for the size
			 * instead of reading again. */
			uint64_t size;
			int ret = psync_get_size(io, &size);

			if (ret < 0)
				return ret;
			if (file_off >= size)
				break;
		}
	}
	memset(dst, 0, len);
	return 0;
}

static int psync_pwrite(struct img_io *io, const void *buf, uint64_t len,
			uint64_t file_off)
{
	struct psync *p = to_psync(io);
	const uint8_t *src = buf;

	while (len) {
		size_t want = (size_t)img_min(len, PSYNC_MAX_XFER);
		ssize_t n = pwrite(p->fd, src, want, (off_t)file_off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		src += n;
		file_off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

static int psync_flush(struct img_io *io)
{
	struct psync *p = to_psync(io);

	while (fdatasync(p->fd) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int psync_errno_fallocate(void)
{
	/* EINVAL/ENODEV: the file type or file system has no such mode. */
	if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL ||
	    errno == ENODEV)
		return -ENOTSUP;
	return -errno;
}

static int psync_zero(struct img_io *io, uint64_t file_off, uint64_t len,
		      unsigned flags)
{
	struct psync *p = to_psync(io);
	uint64_t size, end = file_off + len;
	int ret;

	if (!len)
		return 0;
	if (!(flags & IMG_IO_ZERO_PUNCH)) {
		if (fallocate(p->fd, FALLOC_FL_ZERO_RANGE, (off_t)file_off,
			      (off_t)len) < 0)
			return psync_errno_fallocate();
		return 0;
	}
	if (fallocate(p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)file_off, (off_t)len) < 0)
		return psync_errno_fallocate();
	/* KEEP_SIZE is mandatory with PUNCH_HOLE; a zeroing that reaches past
	 * the end must still leave the size a write would. */
	ret = psync_get_size(io, &size);
	if (ret < 0)
		return ret;
	if (size < end && ftruncate(p->fd, (off_t)end) < 0)
		return -errno;
	return 0;
}

static int psync_allocate(struct img_io *io, uint64_t file_off, uint64_t len)
{
	struct psync *p = to_psync(io);

	if (fallocate(p->fd, 0, (off_t)file_off, (off_t)len) < 0)
		return psync_errno_fallocate();
	return 0;
}

static int psync_truncate(struct img_io *io, uint64_t size)
{
	struct psync *p = to_psync(io);

	if (ftruncate(p->fd, (off_t)size) < 0)
		return -errno;
	return 0;
}

static int psync_extent(struct img_io *io, uint64_t file_off, uint64_t len,
			bool *data, uint64_t *extent_len)
{
	struct psync *p = to_psync(io);
	off_t d, h;

	d = lseek(p->fd, (off_t)file_off, SEEK_DATA);
	if (d < 0) {
		if (errno == ENXIO) {
			/* Only holes from here, or past EOF: reads as zero. */
			*data = false;
			*extent_len = len;
			return 0;
		}
		if (errno == EINVAL || errno == EOPNOTSUPP) {
			*data = true;
			*extent_len = len;
			return 0;
		}
		return -errno;
	}
	if ((uint64_t)d > file_off) {
		*data = false;
		*extent_len = img_min((uint64_t)d - file_off, len);
		return 0;
	}
	h = lseek(p->fd, (off_t)file_off, SEEK_HOLE);
	*data = true;
	if (h < 0 || (uint64_t)h <= file_off)
		*extent_len = len;
	else
		*extent_len = img_min((uint64_t)h - file_off, len);
	return 0;
}

static int psync_allocated(struct img_io *io, uint64_t *bytes)
{
	struct psync *p = to_psync(io);
	struct stat st;

	if (fstat(p->fd, &st) < 0)
		return -errno;
	*bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}

static void psync_close(struct img_io *io)
{
	struct psync *p = to_psync(io);

	close(p->fd);
	free(p->io.path);
	free(p);
}

static const struct img_io_ops psync_ops = {
	.name = "psync",
	.pread = psync_pread,
	.pwrite = psync_pwrite,
	.flush = psync_flush,
	.zero = psync_zero,
	.allocate = psync_allocate,
	.get_size = psync_get_size,
	.truncate = psync_truncate,
	.extent = psync_extent,
	.allocated = psync_allocated,
	.close = psync_close,
};

int img_io_psync_open(const char *path, unsigned flags, struct img_io **out)
{
	return img_io_psync_open_beneath(NULL, path, flags, out);
}

int img_io_psync_open_beneath(const char *dir, const char *path, unsigned flags,
			      struct img_io **out)
{
	int oflags = O_CLOEXEC, fd, ret;
	struct psync *p;

	if (flags & IMG_IO_RDONLY)
		oflags |= O_RDONLY;
	else if (flags & IMG_IO_CREATE)
		oflags |= O_RDWR | O_CREAT; /* truncated once locked */
	else
		oflags |= O_RDWR;
	if (flags & IMG_IO_DIRECT)
		oflags |= O_DIRECT;
	if (dir) {
		fd = img_open_beneath_fd(dir, path, oflags);
		if (fd == -EXDEV || fd == -EINVAL)
			return fd;
		errno = -fd;
	} else {
		do {
			fd = open(path, oflags, 0644);
		} while (fd < 0 && errno == EINTR);
	}
	if (fd < 0) {
		int err = errno;

		if (err == EINVAL && (flags & IMG_IO_DIRECT))
			return img_error(
				-EINVAL,
				"io: cannot open '%s' with O_DIRECT: the file system does not support it",
				path);
		return img_error(-err, "io: cannot open '%s': %s", path,
				 strerror(err));
	}
	ret = img_io_lock(fd, path, flags);
	if (ret == 0 && (flags & IMG_IO_CREATE) && ftruncate(fd, 0) < 0)
		ret = img_error(-errno, "io: cannot truncate '%s': %s", path,
				strerror(errno));
	if (ret < 0) {
		close(fd);
		return ret;
	}
	p = calloc(1, sizeof(*p));
	if (!p || !(p->io.path = strdup(path))) {
		free(p);
		close(fd);
		return img_error(-ENOMEM, "io: out of memory opening '%s'",
				 path);
	}
	p->io.ops = &psync_ops;
	p->io.flags = flags;
	p->fd = fd;
	*out = &p->io;
	return 0;
}

int img_io_psync_fd(struct img_io *io)
{
	if (!io || io->ops != &psync_ops)
		return -1;
	return to_psync(io)->fd;
}

/* SPDX-License-Identifier: MIT */
/*
 * Path confinement for the files an image names (VMDK extents today): the
 * name is resolved by the kernel beneath the image's directory with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so a symlink in that
 * directory (to a file or to a directory) cannot lead to a host file, while
 * a symlink that stays inside still works. Where openat2 is missing (ENOSYS,
 * kernels before 5.6, some seccomp filters) the file is opened and the real
 * path of the very descriptor opened (/proc/self/fd) is compared with the
 * directory's real path. Either way the descriptor checked is the one the
 * backend keeps: there is no window between check and open.
 */
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

static int escape_error(const char *dir, const char *name)
{
	return img_error(-EXDEV,
			 "io: '%s' resolves outside the directory '%s' "
			 "(a symlink, an absolute name or '..')",
			 name, dir);
}

/* The path the kernel holds for the open descriptor fd, into buf. */
static int fd_path(int fd, char buf[PATH_MAX], const char *name)
{
	char link[64];
	ssize_t len;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	len = readlink(link, buf, PATH_MAX - 1);
	if (len <= 0)
		return img_error(-EXDEV, "io: cannot check where '%s' is: %s",
				 name, len < 0 ? strerror(errno) : "no path");
	buf[len] = '\0';
	return 0;
}

/* Is the open descriptor fd a file under the directory dir_fd? */
static int fd_beneath(int dir_fd, int fd, const char *dir, const char *name)
{
	char dir_real[PATH_MAX], file_real[PATH_MAX];
	size_t n;
	int ret;

	ret = fd_path(dir_fd, dir_real, name);
	if (ret == 0)
		ret = fd_path(fd, file_real, name);
	if (ret < 0)
		return ret;
	n = strlen(dir_real);
	/* "/" holds everything; else the file must be below "dir/". */
	if (n == 1 || (!strncmp(file_real, dir_real, n) && file_real[n] == '/'))
		return 0;
	return escape_error(dir, name);
}

int img_open_beneath_fd(const char *dir, const char *name, int oflags)
{
	struct open_how how = {
		.flags = (uint64_t)oflags,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	int dir_fd, fd, err, ret;

	if (!name || !*name)
		return img_error(-EINVAL, "io: empty file name");
	if (oflags & O_CREAT)
		return img_error(-EINVAL,
				 "io: '%s': confined opens never "
				 "create files",
				 name);
	/* A directory opened as a path: nothing is read through it. */
	dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return img_error(-errno, "io: cannot open directory '%s': %s",
				 dir, strerror(errno));
	do {
		fd = (int)syscall(SYS_openat2, dir_fd, name, &how, sizeof(how));
	} while (fd < 0 && (errno == EINTR || errno == EAGAIN));
	if (fd < 0 && errno == ENOSYS) {
		do {
			fd = openat(dir_fd, name, oflags);
		} while (fd < 0 && errno == EINTR);
		if (fd >= 0) {
			ret = fd_beneath(dir_fd, fd, dir, name);
			if (ret < 0) {
				close(fd);
				close(dir_fd);
				return ret;
			}
		}
	}
	err = errno;
	close(dir_fd);
	if (fd >= 0)
		return fd;
	if (err == EXDEV || err == ELOOP)
		return escape_error(dir, name);
	return -err;
}

int img_open_confined(struct img *img, const char *name, unsigned io_flags,
		      struct img_io **out)
{
	const char *base = img->filename ? img->filename : "";
	const char *slash = strrchr(base, '/');
	char *dir;
	int ret;

	if (!slash)
		dir = strdup(".");
	else if (slash == base)
		dir = strdup("/");
	else
		dir = strndup(base, (size_t)(slash - base));
	if (!dir)
		return img_error(-ENOMEM, "io: out of memory");
	ret = img_io_open_beneath(dir, name, io_flags, img->io_kind, out);
	free(dir);
	return ret;
}

/* SPDX-License-Identifier: MIT */
/*
 * Image locking that QEMU honours and that honours QEMU: open file
 * description (OFD) byte-range locks on the image file, one byte per
 * permission. A user holds a shared lock on byte 100 + P for each permission
 * P it uses (consistent read, write, write-unchanged, resize) and on byte
 * 200 + P for each permission it does not let others use. Opening checks
 * that nobody else holds 200 + P for a permission it wants, nor 100 + P for
 * one it will not share. A read-write user wants read, write and resize and
 * shares neither write nor resize; a read-only user wants read and shares
 * neither either (so readers and writers exclude each other, as qemu-img
 * and a running VM do); a forced-share user (-U) wants read and shares all.
 * The locks are taken before the check, so of two users opening at once at
 * least one sees the other. File systems without OFD locks are not locked.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "internal.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

enum {
	PERM_CONSISTENT_READ = 1u << 0,
	PERM_WRITE = 1u << 1,
	PERM_WRITE_UNCHANGED = 1u << 2,
	PERM_RESIZE = 1u << 3,
	PERM_ALL = (1u << 4) - 1,
};

static const char *const perm_names[] = { "consistent read", "write",
					  "write unchanged", "resize" };

/* F_RDLCK to take, F_UNLCK to drop, F_WRLCK to test (*held: another
 * description holds it). Returns -errno. */
static int lock_byte(int fd, unsigned byte, short type, bool *held)
{
	struct flock fl = {
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
		.l_type = type,
	};
	int cmd = type == F_WRLCK ? F_OFD_GETLK : F_OFD_SETLK;

	if (fcntl(fd, cmd, &fl) < 0)
		return -errno;
	if (held)
		*held = fl.l_type != F_UNLCK;
	return 0;
}

static void unlock_all(int fd)
{
	for (unsigned i = 0; i < IMG_ARRAY_SIZE(perm_names); i++) {
		lock_byte(fd, LOCK_PERM_BASE + i, F_UNLCK, NULL);
		lock_byte(fd, LOCK_SHARED_BASE + i, F_UNLCK, NULL);
	}
}

int img_io_lock(int fd, const char *path, unsigned io_flags)
{
	unsigned perm = PERM_CONSISTENT_READ;
	unsigned shared = PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED;
	int ret = 0;

	if (!(io_flags & IMG_IO_RDONLY))
		perm |= PERM_WRITE | PERM_RESIZE;
	else if (io_flags & IMG_IO_SHARED)
		shared = PERM_ALL;
	for (unsigned i = 0; i < IMG_ARRAY_SIZE(perm_names) && !ret; i++) {
		if (perm & (1u << i))
			ret = lock_byte(fd, LOCK_PERM_BASE + i, F_RDLCK, NULL);
		if (!ret && !(shared & (1u << i)))
			ret = lock_byte(fd, LOCK_SHARED_BASE + i, F_RDLCK,
					NULL);
	}
	/* No OFD locks here (old kernels, some network file systems). */
	if (ret == -EINVAL || ret == -ENOLCK || ret == -EOPNOTSUPP) {
		unlock_all(fd);
		return 0;
	}
	for (unsigned i = 0; i < IMG_ARRAY_SIZE(perm_names) && !ret; i++) {
		bool held = false;

		if (perm & (1u << i)) {
			ret = lock_byte(fd, LOCK_SHARED_BASE + i, F_WRLCK,
					&held);
			if (!ret && held)
				ret = img_error(
					-EBUSY,
					"Failed to get \"%s\" lock: is another process using the image [%s]?",
					perm_names[i], path);
		}
		if (!ret && !(shared & (1u << i))) {
			ret = lock_byte(fd, LOCK_PERM_BASE + i, F_WRLCK, &held);
			if (!ret && held)
				ret = img_error(
					-EBUSY,
					"Failed to get shared \"%s\" lock: is another process using the image [%s]?",
					perm_names[i], path);
		}
	}
	if (ret < 0) {
		unlock_all(fd);
		if (ret != -EBUSY)
			ret = img_error(ret, "io: cannot lock '%s': %s", path,
					strerror(-ret));
	}
	return ret;
}

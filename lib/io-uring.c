/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend (placeholder until the ring code lands): reports that
 * no ring can be set up, so IMG_IO_AUTO falls back to psync.
 */
#include "internal.h"

int img_io_uring_open(const char *path, unsigned flags, struct img_io **out)
{
	return img_error(-ENOSYS,
			 "io: io_uring is not available in this build");
}

/* SPDX-License-Identifier: MIT */
/*
 * Tests for the past-the-end rule on guest data: img_io_holds() follows the
 * file's size through writes, batches, truncates and growth behind the io's
 * back (another file descriptor) on the mem and psync backends, and
 * img_data_check/img_data_read/img_data_check_vecs fail -EIO naming the
 * guest and host offsets for a range that ends past the end, and accept one
 * that ends exactly at it. Pipes and character devices are refused at
 * img_io_open with -ESPIPE.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "internal.h"
#include "tap.h"

static void holds_basics(struct img_io *io)
{
	uint8_t buf[8192] = { 1 };
	struct img_io_vec v = { buf, 4096, 8192, true };
	uint64_t size = 0;

	CHECK_EQ(img_io_holds(io, 0, &size), 1);
	CHECK_EQ(img_io_holds(io, 1, &size), 0);
	CHECK_EQ(size, 0);
	CHECK_EQ(img_io_pwrite(io, buf, 4096, 0), 0);
	CHECK_EQ(img_io_holds(io, 4096, &size), 1);
	CHECK_EQ(img_io_holds(io, 4097, &size), 0);
	CHECK_EQ(size, 4096);
	CHECK_EQ(img_io_submit(io, &v, 1), 0);
	CHECK_EQ(img_io_holds(io, 12288, &size), 1);
	CHECK_EQ(img_io_truncate(io, 100), 0);
	CHECK_EQ(img_io_holds(io, 100, &size), 1);
	CHECK_EQ(img_io_holds(io, 101, &size), 0);
	CHECK_EQ(size, 100);
	CHECK_EQ(img_io_truncate(io, 1 << 20), 0);
	CHECK_EQ(img_io_holds(io, 1 << 20, &size), 1);
}

static void data_check(void)
{
	static const uint8_t zero[4096];
	struct img_open_opts o = { .format = "raw" };
	uint8_t buf[4096];
	struct img_io_vec v[2] = {
		{ buf, 1024, 0, false },
		{ buf + 1024, 1024, 4000, false },
	};
	struct img_io *io;
	struct img *img;
	const char *msg;

	CHECK_EQ(img_io_mem_new(zero, sizeof(zero), &io), 0);
	CHECK_EQ(img_open_io(io, "x.raw", &o, &img), 0);
	CHECK_EQ(img_data_check(img, io, 4096, 0, 0), 0);
	CHECK_EQ(img_data_check(img, io, 1, 4095, 7), 0);
	CHECK_EQ(img_data_check(img, io, 2, 4095, 0x10), -EIO);
	msg = img_last_error();
	CHECK(strstr(msg, "raw: guest offset 0x11 maps to host offset 0x1000 "
			  "past the end of 'mem' (size 4096)"));
	CHECK_EQ(img_data_check(img, io, 512, 8192, 0x200), -EIO);
	CHECK(strstr(img_last_error(), "guest offset 0x200 maps to host "
				       "offset 0x2000 past the end"));
	memset(buf, 0x55, sizeof(buf));
	CHECK_EQ(img_data_read(img, io, buf, 512, 4096, 0), -EIO);
	CHECK_EQ(buf[0], 0x55); /* nothing read: no zeroes passed as data */
	CHECK_EQ(img_data_read(img, io, buf, 96, 4000, 0), 0);
	CHECK_EQ(buf[0], 0);
	CHECK_EQ(img_data_check_vecs(img, io, buf, 1 << 20, v, 1), 0);
	CHECK_EQ(img_data_check_vecs(img, io, buf, 1 << 20, v, 2), -EIO);
	CHECK(strstr(img_last_error(),
		     "guest offset 0x100460 maps to host offset 0x1000"));
	v[1].write = true; /* writes may extend the file */
	CHECK_EQ(img_data_check_vecs(img, io, buf, 1 << 20, v, 2), 0);
	img_close(img);
}

int main(void)
{
	const char *path = test_path("f");
	struct img_io *io, *other;
	uint64_t size = 0;
	int fd;

	CHECK_EQ(img_io_mem_new(NULL, 0, &io), 0);
	holds_basics(io);
	img_io_close(io);

	CHECK_EQ(img_io_open(path, IMG_IO_CREATE, IMG_IO_PSYNC, &io), 0);
	holds_basics(io);
	/* Grown behind the io's back: the cached size is stale, but holds
	 * asks again before calling the range lost. */
	fd = open(path, O_WRONLY);
	CHECK(fd >= 0);
	CHECK_EQ(ftruncate(fd, 3 << 20), 0);
	close(fd);
	CHECK_EQ(img_io_holds(io, 3 << 20, &size), 1);
	CHECK_EQ(img_io_holds(io, (3 << 20) + 1, &size), 0);
	CHECK_EQ(size, 3 << 20);
	img_io_close(io);

	data_check();

	CHECK_EQ(mkfifo(test_path("fifo"), 0600), 0);
	CHECK_EQ(img_io_open(test_path("fifo"), IMG_IO_RDONLY, IMG_IO_AUTO,
			     &other),
		 -ESPIPE);
	CHECK(strstr(img_last_error(), "is a pipe"));
	CHECK_EQ(img_io_open("/dev/zero", IMG_IO_RDONLY, IMG_IO_AUTO, &other),
		 -ESPIPE);
	CHECK(strstr(img_last_error(), "is a character device"));
	return test_done();
}

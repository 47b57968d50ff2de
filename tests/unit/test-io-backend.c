/* SPDX-License-Identifier: MIT */
/*
 * Which host-file backend an image gets. IMG_IO_AUTO must give io_uring
 * exactly when the kernel lets this process set up a ring, and psync
 * otherwise; IMG_IO_URING must then fail with a message instead. Run under
 * tests/no-uring (IMG_TEST_NO_URING names the errno it makes io_uring_setup,
 * io_uring_enter and io_uring_register return), it also proves the launcher
 * works: all three calls are refused, so the second unit pass of
 * tests/run.sh really runs on the psync fallback.
 */
#include <errno.h>
#include <linux/io_uring.h>
#include <sys/syscall.h>

#include "internal.h"
#include "tap.h"

/* errno of a raw io_uring_setup, 0 when it gave a ring. */
static int raw_setup_errno(void)
{
	struct io_uring_params p = { 0 };
	long fd = syscall(__NR_io_uring_setup, 4, &p);

	if (fd >= 0) {
		close((int)fd);
		return 0;
	}
	return errno;
}

static int raw_errno(long nr)
{
	/* fd -1: without the filter, the kernel answers EBADF. */
	return syscall(nr, -1, 0, 0, 0, NULL, 0) < 0 ? errno : 0;
}

static int create_raw(const char *path)
{
	struct img_create_opts c = { .format = "raw", .size = 1 << 20 };

	return img_create(path, &c);
}

/* Open path with kind and write, read back and flush through it; *backend
 * gets the name of the backend its file landed on. */
static int open_and_use(const char *path, enum img_io_kind kind,
			const char **backend)
{
	struct img_open_opts o = { .format = "raw", .io = kind };
	uint8_t w[8192], r[8192];
	struct img *img;
	int ret;

	ret = img_open(path, &o, &img);
	if (ret < 0)
		return ret;
	*backend = img->file->ops->name;
	memset(w, 0x5a, sizeof(w));
	CHECK_OK(img_write(img, w, 4096, sizeof(w), 0));
	CHECK_OK(img_flush(img));
	CHECK_OK(img_read(img, r, 4096, sizeof(r)));
	CHECK(!memcmp(w, r, sizeof(w)));
	img_close(img);
	return 0;
}

int main(void)
{
	const char *expect = getenv("IMG_TEST_NO_URING");
	const char *path = test_path("disk.raw");
	const char *backend = "";
	int setup_err = raw_setup_errno();

	CHECK_OK(create_raw(path));
	if (expect) {
		int want = !strcmp(expect, "ENOSYS") ? ENOSYS : EPERM;

		CHECK(!strcmp(expect, "ENOSYS") || !strcmp(expect, "EPERM"));
		CHECK_EQ(setup_err, want);
		CHECK_EQ(raw_errno(__NR_io_uring_enter), want);
		CHECK_EQ(raw_errno(__NR_io_uring_register), want);
	} else {
		CHECK_EQ(raw_errno(__NR_io_uring_enter), EBADF);
		test_note("io_uring_setup here: %s",
			  setup_err ? strerror(setup_err) : "a ring");
	}

	CHECK_OK(open_and_use(path, IMG_IO_AUTO, &backend));
	CHECK_STR_HAS(backend, setup_err ? "psync" : "io_uring");
	test_note("IMG_IO_AUTO chose %s", backend);

	CHECK_OK(open_and_use(path, IMG_IO_PSYNC, &backend));
	CHECK_STR_HAS(backend, "psync");

	img_clear_error();
	if (setup_err) {
		CHECK_ERR(open_and_use(path, IMG_IO_URING, &backend), -ENOSYS);
		CHECK_STR_HAS(img_last_error(), "io_uring");
		CHECK_STR_HAS(img_last_error(), strerror(setup_err));
	} else {
		CHECK_OK(open_and_use(path, IMG_IO_URING, &backend));
		CHECK_STR_HAS(backend, "io_uring");
	}
	return test_done();
}

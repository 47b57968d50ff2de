/* SPDX-License-Identifier: MIT */
/*
 * Many writes in flight through one img_aio engine on a dynamic VDI image
 * in a host file whose writes are delayed at random (ft_aio_writes): pieces
 * of the same new 1 MiB block, of its neighbours and across block
 * boundaries, with zeroes, reads and flushes among them, so that blocks are
 * reserved, written and entered in the block map out of order. Every read
 * is checked against a model as it completes, the whole image after the
 * run and after reopening, then with img check, qemu-img check and
 * qemu-img compare on the closed file.
 */
#include <fcntl.h>
#include <unistd.h>

#include "fmt-testlib.h"
#include "qcow2-testlib.h"
#include "tap.h"

#define SIZE (16u << 20)
#define BLOCK (1u << 20)

int main(void)
{
	struct img_create_opts co = { .format = "vdi", .size = SIZE };
	struct img_open_opts o = { .format = "vdi" };
	const char *path = test_path("aio.vdi"), *ref_path;
	uint64_t seed = qt_seed(20261208);
	struct img_check res = { 0 };
	struct img_io *file;
	struct img *img;
	uint8_t *ref = calloc(1, SIZE);
	int fd;

	CHECK(ref != NULL);
	if (!ref)
		return test_done();
	CHECK_OK(img_create(path, &co));
	CHECK_OK(ft_open_slow(path, "vdi", &file, &img));
	CHECK_EQ(ft_aio_writes(img, ref, SIZE, BLOCK, 4000, seed), 0);
	CHECK(qt_compare(img, ref, 0, SIZE, "after the run"));
	CHECK_OK(img_close(img));
	img_io_close(file);

	CHECK_OK(img_open(path, &o, &img));
	CHECK(qt_compare(img, ref, 0, SIZE, "after reopening"));
	CHECK_OK(qt_check(img, &res, "# "));
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(res.leaks, 0);
	CHECK_OK(img_close(img));

	if (!qt_have_qemu_img()) {
		test_note("qemu-img not installed: external checks skipped");
		free(ref);
		return test_done();
	}
	fflush(stdout);
	CHECK_EQ(test_sh("qemu-img check -q -f vdi '%s'", path), 0);
	ref_path = test_path("ref.raw");
	fd = open(ref_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && pwrite(fd, ref, SIZE, 0) == (ssize_t)SIZE);
	if (fd >= 0)
		close(fd);
	CHECK_EQ(test_sh("qemu-img compare -q -f raw -F vdi '%s' '%s'",
			 ref_path, path),
		 0);
	free(ref);
	return test_done();
}

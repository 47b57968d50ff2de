/* SPDX-License-Identifier: MIT */
/*
 * Many writes in flight through one img_aio engine on VHD images in host
 * files whose writes are delayed at random (ft_aio_writes): pieces of the
 * same new 2 MiB block, of its neighbours and across block boundaries, with
 * zeroes, reads and flushes among them. On a dynamic disk, blocks are
 * reserved, written and entered in the BAT out of order; on a differencing
 * disk over a patterned parent, sector bitmaps are set by plans whose
 * partial sectors the core completes from the parent, while other writes
 * to the same block run. Every read is checked against a model as it
 * completes, the whole image after the run and after reopening, with img
 * check, and the dynamic disk with qemu-img compare (QEMU ignores the
 * bitmaps of differencing disks, so it cannot judge those).
 */
#include "fmt-testlib.h"
#include "qcow2-testlib.h"
#include "tap.h"

#define SIZE (16u << 20)
#define BLOCK (2u << 20)

static const struct img_kv force_size = { .key = "force_size", .value = "on" };

int main(void)
{
	struct img_create_opts co = {
		.format = "vpc", .size = SIZE, .opts = &force_size, .n_opts = 1
	};
	const char *dyn = test_path("dyn.vhd"), *parent = test_path("p.vhd");
	const char *child = test_path("child.vhd");
	uint64_t seed = qt_seed(20261208);
	uint8_t *ref = calloc(1, SIZE);
	struct img *img;

	CHECK(ref != NULL);
	if (!ref)
		return test_done();
	CHECK_OK(img_create(dyn, &co));
	CHECK_EQ(ft_aio_run(dyn, "vpc", ref, SIZE, BLOCK, 4000, seed), 0);
	if (qt_have_qemu_img())
		CHECK_EQ(ft_qemu_compare(ref, SIZE, "vpc", dyn), 0);
	else
		test_note("qemu-img not installed: qemu-img compare skipped");

	/* A parent whose every sector differs from zeroes and from its
	 * neighbours, so that a sector taken from the wrong place shows. */
	CHECK_OK(img_create(parent, &co));
	for (uint64_t i = 0; i < SIZE; i++)
		ref[i] = (uint8_t)(0x80 | (i / 512 * 7 + i % 251));
	CHECK_OK(img_open(parent, &(struct img_open_opts){ .format = "vpc" },
			  &img));
	CHECK_OK(img_write(img, ref, 0, SIZE, 0));
	CHECK_OK(img_close(img));
	co.opts = NULL;
	co.n_opts = 0;
	co.backing_file = "p.vhd";
	co.backing_fmt = "vpc";
	CHECK_OK(img_create(child, &co));
	CHECK_EQ(ft_aio_run(child, "vpc", ref, SIZE, BLOCK, 4000, seed + 1), 0);
	free(ref);
	return test_done();
}

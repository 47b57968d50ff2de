/* SPDX-License-Identifier: MIT */
/*
 * VMDK writes planned through .map under many requests in flight: hosted
 * sparse images with 64 KiB grains in host files take rounds of racing
 * writes, zeroes and a flush in three neighbouring unallocated grains from
 * one async engine (ft_aio_races), so that several requests allocate the
 * same grain and its neighbours at once, then overwrites in place (on the
 * ring where the machine has io_uring). One image has a backing file full
 * of data, so each new grain's bytes around the requests come from it;
 * one has zeroed grains and no backing. Each must read back as the model
 * says, before and after reopening, and pass qemu-img check and qemu-img
 * compare against the model.
 */
#include "fmt-testlib.h"
#include "qcow2-testlib.h"
#include "tap.h"

#define SIZE (16ull << 20)
#define GRAIN (64u << 10)
#define ROUNDS 40

static uint8_t ref[SIZE];

int main(void)
{
	struct img_kv zeroed = { .key = "zeroed_grain", .value = "on" };
	struct img_create_opts co = { .format = "vmdk", .size = SIZE };
	struct img_open_opts oo = { .format = "vmdk" };
	struct qt_rng r = { qt_seed(20261208) };
	struct img *base;

	CHECK_OK(img_create(test_path("base.vmdk"), &co));
	CHECK_OK(img_open(test_path("base.vmdk"), &oo, &base));
	qt_fill(&r, ref, SIZE);
	CHECK_OK(img_write(base, ref, 0, SIZE, 0));
	CHECK_OK(img_close(base));
	co.backing_file = "base.vmdk";
	co.backing_fmt = "vmdk";
	CHECK_OK(img_create(test_path("overlay.vmdk"), &co));
	CHECK_EQ(ft_aio_races("vmdk", test_path("overlay.vmdk"), ref, GRAIN,
			      ROUNDS, 20261209),
		 0);

	co = (struct img_create_opts){
		.format = "vmdk", .size = SIZE, .opts = &zeroed, .n_opts = 1
	};
	memset(ref, 0, SIZE);
	CHECK_OK(img_create(test_path("zeroed.vmdk"), &co));
	CHECK_EQ(ft_aio_races("vmdk", test_path("zeroed.vmdk"), ref, GRAIN,
			      ROUNDS, 20261210),
		 0);
	return test_done();
}

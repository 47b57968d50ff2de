/* SPDX-License-Identifier: MIT */
/*
 * VHDX writes planned through .map under many requests in flight: a
 * dynamic image with 1 MiB blocks in a host file takes rounds of racing
 * writes, zeroes and a flush in three neighbouring unallocated blocks from
 * one async engine (ft_aio_races), so that several requests allocate the
 * same block and its neighbours at once, then overwrites in place (on the
 * ring where the machine has io_uring). The image must read back as the
 * model says, before and after reopening, and pass qemu-img check and
 * qemu-img compare against the model. A fixed image takes the same
 * rounds: every block is in place there.
 */
#include "fmt-testlib.h"
#include "tap.h"

#define SIZE (48ull << 20)
#define BLOCK (1u << 20)
#define ROUNDS 12

static uint8_t ref[SIZE];

static void run(const char *subformat, uint64_t seed)
{
	struct img_kv kv[] = { { .key = "block_size", .value = "1M" },
			       { .key = "subformat", .value = subformat } };
	struct img_create_opts co = {
		.format = "vhdx", .size = SIZE, .opts = kv, .n_opts = 2
	};
	char name[64];

	snprintf(name, sizeof(name), "%s.vhdx", subformat);
	memset(ref, 0, sizeof(ref));
	CHECK_OK(img_create(test_path(name), &co));
	CHECK_EQ(ft_aio_races("vhdx", test_path(name), ref, BLOCK, ROUNDS,
			      seed),
		 0);
}

int main(void)
{
	run("dynamic", 20261208);
	run("fixed", 20261209);
	return test_done();
}

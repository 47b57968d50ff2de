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
#include "fmt-testlib.h"
#include "qcow2-testlib.h"
#include "tap.h"

#define SIZE (16u << 20)
#define BLOCK (1u << 20)

int main(void)
{
	struct img_create_opts co = { .format = "vdi", .size = SIZE };
	const char *path = test_path("aio.vdi");
	uint64_t seed = qt_seed(20261208);
	uint8_t *ref = calloc(1, SIZE);

	CHECK(ref != NULL);
	if (!ref)
		return test_done();
	CHECK_OK(img_create(path, &co));
	CHECK_EQ(ft_aio_run(path, "vdi", ref, SIZE, BLOCK, 4000, seed), 0);

	if (!qt_have_qemu_img()) {
		test_note("qemu-img not installed: external checks skipped");
		free(ref);
		return test_done();
	}
	fflush(stdout);
	CHECK_EQ(test_sh("qemu-img check -q -f vdi '%s'", path), 0);
	CHECK_EQ(ft_qemu_compare(ref, SIZE, "vdi", path), 0);
	free(ref);
	return test_done();
}

/* SPDX-License-Identifier: MIT */
/*
 * Host I/O failures during VDI writes (ft_fault_run): every host op of a
 * workload that allocates blocks (one write reserving two at once),
 * overwrites in place and flushes fails in turn. A reservation whose write
 * failed must not be named by the block map, its space must read as zeroes
 * when it is reused, and the image must reopen, hold every write that
 * succeeded and check clean. And a block placed over blocks a crash left
 * unnamed must read as zeroes around what is written to it.
 */
#include "fmt-testlib.h"
#include "tap.h"

int main(void)
{
	CHECK_EQ(ft_fault_run("vdi", NULL, 1u << 20), 0);
	CHECK_EQ(ft_fault_run("vdi", "static=on", 1u << 20), 0);
	CHECK_EQ(ft_stale_run("vdi", NULL, 1u << 20, 0), 0);
	return test_done();
}

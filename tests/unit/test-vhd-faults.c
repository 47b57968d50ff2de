/* SPDX-License-Identifier: MIT */
/*
 * Host I/O failures during VHD writes (ft_fault_run): every host op of a
 * workload that allocates blocks, overwrites in place and flushes fails in
 * turn, on a dynamic and a fixed disk. A block whose write failed must not
 * be named by the BAT, its space must read as zeroes when it is reused, and
 * the image must reopen, hold every write that succeeded and check clean.
 * And a block placed over blocks a crash left unnamed (with no footer at
 * the end of the file) must read as zeroes around what is written to it.
 */
#include "fmt-testlib.h"
#include "tap.h"

int main(void)
{
	CHECK_EQ(ft_fault_run("vpc", "force_size=on", 2u << 20), 0);
	CHECK_EQ(ft_fault_run("vpc", "force_size=on,subformat=fixed", 2u << 20),
		 0);
	CHECK_EQ(ft_stale_run("vpc", "force_size=on", 2u << 20, 512), 0);
	return test_done();
}

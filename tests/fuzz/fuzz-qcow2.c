/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the qcow2 driver: the input bytes become a mem backend
 * opened as qcow2 without its backing chain, read-only (read, map, check)
 * and read-write on a copy (writes, zeroes, discards, flush, read back,
 * reopen, check), with the invariants of tests/fuzz/fuzz-format.h. Any
 * crash, leak, broken invariant or unbounded time or memory is a bug in the
 * driver: everything it allocates from header fields must be capped.
 */
#include "fuzz-format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_format_opts(data, size, "qcow2", FUZZ_DISCARD);
}

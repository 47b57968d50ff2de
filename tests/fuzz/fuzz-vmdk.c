/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the VMDK driver: sparse extent headers, grain directories and tables, stream-optimized markers and compressed grains, embedded descriptors: the input is opened as vmdk read-only and
 * read-write, read, mapped, written and checked (tests/fuzz/fuzz-format.h).
 */
#include "fuzz-format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_format(data, size, "vmdk");
}

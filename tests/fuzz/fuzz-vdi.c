/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the VDI driver: header, block map, static and dynamic images: the input is opened as vdi read-only and
 * read-write, read, mapped, written and checked (tests/fuzz/fuzz-format.h).
 */
#include "fuzz-format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_format(data, size, "vdi");
}

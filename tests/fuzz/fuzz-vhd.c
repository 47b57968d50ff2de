/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the VHD (vpc) driver: fixed, dynamic and differencing disks (footer, dynamic header, BAT, sector bitmaps, parent locators): the input is opened as vpc read-only and
 * read-write, read, mapped, written and checked (tests/fuzz/fuzz-format.h).
 */
#include "fuzz-format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_format(data, size, "vpc");
}

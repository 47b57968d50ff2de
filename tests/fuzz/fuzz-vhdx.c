/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the VHDX driver: file identifier, headers, region
 * table, log replay, metadata region, BAT: the input is opened as vhdx
 * read-only and read-write, read, mapped, written and checked
 * (tests/fuzz/fuzz-format.h); a block's tail may lie past the end of the
 * file (FUZZ_SHORT_TAIL), as QEMU allows.
 */
#include "fuzz-format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_format_opts(data, size, "vhdx", FUZZ_SHORT_TAIL);
}

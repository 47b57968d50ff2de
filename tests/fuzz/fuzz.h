/* SPDX-License-Identifier: MIT */
/*
 * The entry point every fuzz target (tests/fuzz/fuzz-<target>.c) defines.
 * With libFuzzer (`make fuzz`) the fuzzer calls it; in `make check` the plain
 * main() in replay.c calls it once per corpus file.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Run one input; must not crash, leak or hang on any bytes. Returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif

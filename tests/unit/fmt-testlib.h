/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the VHD, VHDX, VDI and VMDK unit tests: build an image in
 * memory with the driver's own create (and optional writes), open bytes as a
 * format on the mem backend, and run an invalid-field case: the image must
 * fail to open, or fail on a full read, block status walk, check or write,
 * always with a clean -errno and a one-line message that starts with the
 * format's name; it must never crash or return wrong success.
 */
#ifndef FMT_TESTLIB_H
#define FMT_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "img.h"

/* A pattern write applied after create: len bytes of val at off. */
struct ft_write {
	uint64_t off;
	uint64_t len;
	uint8_t val;
};

/*
 * Create a fmt image of size with -o opts (may be NULL) on the mem backend,
 * apply n writes, and return its bytes (malloc'd) in *buf / *len.
 */
int ft_build(const char *fmt, uint64_t size, const char *opts,
	     const struct ft_write *w, unsigned n, uint8_t **buf, size_t *len);
/* Open a copy of buf as fmt (no backing chain). */
int ft_open(const uint8_t *buf, size_t len, const char *fmt, unsigned flags,
	    struct img **out);
/*
 * Run buf through open, read, block status, check and a write; return the
 * first -errno (0 if everything succeeded). *msg gets the error message.
 */
int ft_exercise(const uint8_t *buf, size_t len, const char *fmt, char *msg,
		size_t msg_size);
/*
 * One invalid-field case: at_open says the read-only open itself must fail;
 * otherwise some step of ft_exercise must. The error must be -err (any if
 * 0) with a one-line message starting "<fmt>: " and containing msg (if not
 * NULL). Prints the difference and returns false otherwise.
 */
bool ft_invalid_case(const char *name, const uint8_t *buf, size_t len,
		     const char *fmt, bool at_open, int err, const char *msg);

/*
 * Allocation races through one async engine (img_aio) on the image of
 * format fmt at path, created and closed. Round r takes the three
 * neighbouring units (blocks, grains: unit bytes) from (3r + 1) * unit,
 * which must still be unallocated, and puts up to 48 requests on distinct
 * sector runs in them in flight at once: writes (two of them across the
 * units' boundaries) and some zeroes, so that several requests allocate the
 * same unit and its neighbours together; with them a flush and reads of
 * settled data elsewhere, checked in done(). After the rounds, rounds of
 * 4 KiB overwrites and reads in the allocated units (in place: on the ring
 * where the engine has one). ref (the image's size) is the model: it must
 * hold the image's contents on entry and is updated with every write and
 * zero. The image must then read as ref says, before and after reopening,
 * pass qemu-img check and equal ref by qemu-img compare (skipped with a
 * note without qemu-img). Returns the number of failed requests, wrong
 * reads and mismatches (0: all good); prints what went wrong.
 */
int ft_aio_races(const char *fmt, const char *path, uint8_t *ref, uint64_t unit,
		 unsigned rounds, uint64_t seed);

#endif

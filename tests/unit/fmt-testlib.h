/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the VHD, VHDX, VDI and VMDK unit tests: build an image in
 * memory with the driver's own create (and optional writes), open bytes as a
 * format on the mem backend, and run an invalid-field case: the image must
 * fail to open, or fail on a full read, block status walk, check or write,
 * always with a clean -errno and a one-line message that starts with the
 * format's name; it must never crash or return wrong success. And a run of
 * many writes in flight through one async engine, checked against a model.
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

/*
 * Many writes in flight through one img_aio engine on the image at path,
 * opened read-write as fmt (with its backing chain) through a wrapper of
 * its host file that delays about one write in four by up to half a
 * millisecond. ref holds its contents (size bytes), the model, kept up to
 * date: n_ops writes, zeroes, reads and flushes of random length and
 * alignment, crowded around a hot block of block_size bytes that moves on
 * in a scattered order (pieces of the same new block and of its
 * neighbours, whole blocks, writes across a block boundary, reads of the
 * end of a block being written). A write or zero never overlaps a request
 * in flight, a read never overlaps a write or zero in flight; every read is
 * checked against the model when it completes, the whole image after the
 * run and after reopening, then img_check. Returns the number of failures
 * (each printed).
 */
int ft_aio_run(const char *path, const char *fmt, uint8_t *ref, uint64_t size,
	       uint64_t block_size, unsigned n_ops, uint64_t seed);
/*
 * qemu-img compare of the fmt image at path with the size bytes of ref
 * (written next to it as a raw file): its exit status (0: identical), 77
 * without qemu-img, -1 if it could not run.
 */
int ft_qemu_compare(const uint8_t *ref, uint64_t size, const char *fmt,
		    const char *path);
/*
 * A fixed workload of writes and a flush on a new fmt image (-o opts; 8
 * blocks of bs bytes) on the mem backend, run once with each of its host
 * ops failing with EIO in turn (the faulty backend, not sticky): the image
 * must then reopen, read every byte a successful write wrote (zeroes where
 * none did, unless the write there failed) and check clean. Returns the
 * number of failures (each printed).
 */
unsigned ft_fault_run(const char *fmt, const char *opts, uint64_t bs);
/*
 * A fmt image (-o opts; 8 blocks of bs bytes, a write in block 0) whose
 * file loses its last keep_tail bytes (a trailing footer) and gains three
 * blocks of 0xee, as a crash after writing blocks that no table names
 * leaves it: a small write into block 2 must get a block that reads as
 * zeroes around the write. Returns the number of failures (printed).
 */
int ft_stale_run(const char *fmt, const char *opts, uint64_t bs,
		 uint64_t keep_tail);
#endif

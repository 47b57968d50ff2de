/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the qcow2 robustness tests (invalid images, random
 * operations, fault injection, crash replay): a seeded random generator, a
 * byte-by-byte builder of small valid qcow2 images whose fields the tests
 * then corrupt, images on the mem backend, a "borrowed" I/O backend that lets
 * a test keep a mem or faulty backend alive after img_close, and whole-image
 * read and check helpers. Linked into every unit test binary, so it only uses
 * functions that lib/ has had from the start.
 */
#ifndef QCOW2_TESTLIB_H
#define QCOW2_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* ---- random numbers ---- */

struct qt_rng {
	uint64_t s;
};

/* The seed: $IMG_TEST_SEED if set, else dflt; printed as a "# seed" note. */
uint64_t qt_seed(uint64_t dflt);
uint64_t qt_rand(struct qt_rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t qt_below(struct qt_rng *r, uint64_t n);
void qt_fill(struct qt_rng *r, void *buf, size_t len);

/* ---- environment ---- */

/* True if this build registers a "qcow2" driver. */
bool qt_have_qcow2(void);
/* True if qemu-img is on $PATH. */
bool qt_have_qemu_img(void);

/* ---- hand-built images ---- */

/* Field offsets of the qcow2 header (QEMU docs/interop/qcow2.txt). */
enum {
	QT_H_MAGIC = 0,
	QT_H_VERSION = 4,
	QT_H_BACKING_OFF = 8,
	QT_H_BACKING_SIZE = 16,
	QT_H_CLUSTER_BITS = 20,
	QT_H_SIZE = 24,
	QT_H_CRYPT = 32,
	QT_H_L1_SIZE = 36,
	QT_H_L1_OFF = 40,
	QT_H_RT_OFF = 48,
	QT_H_RT_CLUSTERS = 56,
	QT_H_NB_SNAPSHOTS = 60,
	QT_H_SNAPSHOTS_OFF = 64,
	QT_H_INCOMPAT = 72,
	QT_H_COMPAT = 80,
	QT_H_AUTOCLEAR = 88,
	QT_H_REFCOUNT_ORDER = 96,
	QT_H_HEADER_LENGTH = 100,
	QT_H_COMPRESSION = 104,
};

struct qt_geom {
	unsigned version; /* 2 or 3 */
	unsigned cluster_bits;
	unsigned refcount_order;
	uint64_t size; /* virtual size */
	bool extended_l2;
	bool data; /* map guest cluster 0 to a data cluster (with an L2) */
	bool feature_table; /* v3: write QEMU's feature-name table */
	const char *backing; /* backing file name, or NULL */
	const char *backing_fmt; /* backing format extension, or NULL */
};

/* A built image and where its parts are, for tests that corrupt them. */
struct qt_img {
	uint8_t *buf;
	size_t len;
	uint64_t cluster_size;
	uint64_t ext_off; /* first header extension */
	uint64_t ext_end; /* the end-of-extensions marker */
	uint64_t feature_table_off; /* its extension header, 0 if none */
	uint64_t backing_name_off;
	uint64_t reftable_off, refblock_off, l1_off, l2_off, data_off;
};

/* The default geometry: v3, 4 KiB clusters, refcount_order 4, 8 MiB, data
 * mapped, feature table. */
struct qt_geom qt_geom_default(void);
/* Build a consistent image (qemu-img check passes on it). Free im->buf. */
int qt_build(const struct qt_geom *g, struct qt_img *im);
void qt_img_free(struct qt_img *im);

void qt_put32(struct qt_img *im, uint64_t off, uint32_t v);
void qt_put64(struct qt_img *im, uint64_t off, uint64_t v);

/* ---- images on the mem backend ---- */

/*
 * Create a qcow2 image of size bytes in a new mem backend with the -o style
 * options in opts (may be NULL or ""), and an optional backing file name.
 */
int qt_create_mem(const char *opts, uint64_t size, const char *backing,
		  const char *backing_fmt, struct img_io **out);
/* Open a copy of data as a qcow2 image with IMG_OPEN_* flags. */
int qt_open_bytes(const void *data, size_t len, unsigned flags,
		  struct img **out);
/*
 * Wrap inner without taking ownership: closing the wrapper leaves inner
 * open, so an image can be closed and its backend inspected afterwards.
 */
int qt_io_borrow(struct img_io *inner, struct img_io **out);
/* Open the image held by io (not taking ownership of io). */
int qt_open_borrowed(struct img_io *io, unsigned flags, struct img **out);
/* Write the contents of a mem backend to a host file. */
int qt_save_mem(struct img_io *mem, const char *path);

/* ---- whole-image helpers ---- */

/* Read the image (up to cap bytes of it) in chunks; 0 or the first error. */
int qt_read_all(struct img *img, uint64_t cap);
/* img_check, printing the lines it reports with prefix (NULL: quiet). */
int qt_check(struct img *img, struct img_check *res, const char *prefix);
/* Compare len bytes at off with ref; prints the first mismatch. */
bool qt_compare(struct img *img, const uint8_t *ref, uint64_t off, uint64_t len,
		const char *what);
/* "qemu-img check" on path: 0 clean, 1 problems, 77 not installed. */
int qt_qemu_check(const char *path);
/* Write len bytes of data as the file path (created or truncated): 0 or
 * -EIO. */
int qt_write_file(const char *path, const uint8_t *data, uint64_t len);

#endif

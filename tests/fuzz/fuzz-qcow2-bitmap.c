/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the qcow2 bitmap code (formats/qcow2/qcow2-bitmap.c):
 * the input bytes are a qcow2 image on the mem backend. Read-only, it lists
 * the bitmaps (parsing and validating the extension, the directory and the
 * bitmap tables) and walks the dirty runs of the first few; read-write on a
 * copy, it writes (marking the enabled bitmaps and setting in_use), flushes
 * (storing them), clears, disables, merges, adds and removes bitmaps, closes,
 * and lists and checks again. Any crash, leak, hang or unbounded allocation
 * is a bug; queries are skipped on images over 256 MiB so that the target
 * stays fast (the driver caps bitmap memory on its own). Invariants (abort
 * when broken): dirty runs are 1..rest bytes; a bitmap added enabled is
 * listed under its name as enabled, and a write that succeeded after it
 * leaves the written byte dirty in it.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"

#define MAX_QUERY_SIZE (256ull << 20)
#define MAX_BITMAPS 4
#define MAX_RUNS 4096

static int open_bytes(const uint8_t *data, size_t size, unsigned flags,
		      struct img **out)
{
	struct img_open_opts o = {
		.format = "qcow2",
		.flags = flags | IMG_OPEN_NO_BACKING,
	};
	struct img_io *io;

	if (img_io_mem_new(data, size, &io) < 0)
		return -1;
	return img_open_io(io, "fuzz.qcow2", &o, out);
}

/* Walk the dirty runs of a bitmap: each must make progress. */
static void walk(struct img *img, const char *name)
{
	uint64_t size = img_size(img), off = 0;
	unsigned n = 0;

	while (off < size && n++ < MAX_RUNS) {
		uint64_t run = 0;
		bool dirty;

		if (img_bitmap_dirty(img, name, off, size - off, &dirty, &run) <
		    0)
			return;
		if (run == 0 || run > size - off)
			abort(); /* the contract: 1..len bytes */
		off += run;
	}
}

static void list_and_walk(struct img *img, bool query)
{
	struct img_bitmap_info *l = NULL;
	size_t n = 0;

	if (img_bitmap_list(img, &l, &n) < 0)
		return;
	for (size_t i = 0; query && i < n && i < MAX_BITMAPS; i++)
		walk(img, l[i].name);
	img_bitmap_list_free(l, n);
}

static void check(struct img *img)
{
	struct img_check res;

	memset(&res, 0, sizeof(res));
	img_check(img, 0, &res);
}

/* The flags of the bitmap called name, 0 if it is not listed. */
static unsigned listed_flags(struct img *img, const char *name)
{
	struct img_bitmap_info *l = NULL;
	unsigned flags = 0;
	size_t n = 0;

	if (img_bitmap_list(img, &l, &n) < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i].name, name) == 0)
			flags = l[i].flags;
	img_bitmap_list_free(l, n);
	return flags;
}

static void modify(struct img *img)
{
	struct img_bitmap_info *l = NULL;
	uint64_t size = img_size(img);
	static uint8_t buf[8192];
	size_t n = 0;

	memset(buf, 0x5a, sizeof(buf));
	if (size) {
		img_write(img, buf, 0, img_min(size, sizeof(buf)), 0);
		img_write(img, buf, size - 1, 1, 0);
		img_zero(img, size / 2, img_min(size - size / 2, 70000), 0);
		img_discard(img, 0, size);
	}
	img_flush(img);
	if (img_bitmap_list(img, &l, &n) == 0 && n) {
		const char *a = l[0].name, *b = l[n - 1].name;

		img_bitmap_merge(img, b, img, a);
		img_bitmap_clear(img, a);
		img_bitmap_enable(img, b, false);
		img_bitmap_enable(img, a, true);
		img_bitmap_remove(img, b);
	}
	img_bitmap_list_free(l, n);
	if (img_bitmap_add(img, "fuzz", 0, false) < 0)
		return;
	if (!(listed_flags(img, "fuzz") & IMG_BITMAP_AUTO))
		abort(); /* added enabled: listed, and tracking writes */
	if (size && img_write(img, buf, size / 3,
			      img_min(size - size / 3, 4096), 0) == 0) {
		uint64_t run = 0;
		bool dirty = false;

		if (img_bitmap_dirty(img, "fuzz", size / 3, 1, &dirty, &run) <
			    0 ||
		    !dirty)
			abort(); /* a tracked write that left no mark */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img *img;
	bool query;

	if (open_bytes(data, size, IMG_OPEN_RDONLY, &img) < 0)
		return 0;
	query = img_size(img) <= MAX_QUERY_SIZE;
	list_and_walk(img, query);
	img_close(img);
	if (!query)
		return 0;

	if (open_bytes(data, size, 0, &img) >= 0) {
		modify(img);
		list_and_walk(img, true);
		check(img);
		img_close(img);
	}
	return 0;
}

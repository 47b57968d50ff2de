/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the qcow2 snapshot table (formats/qcow2/
 * qcow2-snapshot.c): the input bytes become a mem backend opened as qcow2
 * (no backing chain); the target lists the snapshots, opens the read-only
 * view of each of the first few and reads and maps a bounded part of it,
 * then, on a read-write copy, creates a snapshot, applies and deletes the
 * listed ones and checks. Table entries, extra data, id and name lengths and
 * snapshot L1 tables all come from the input: any crash, leak, hang or
 * unbounded allocation is a bug.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"

#define READ_CAP (4ull << 20)
#define CHUNK (1ull << 20)
#define MAX_VIEWS 4

static int open_bytes(const uint8_t *data, size_t size, unsigned flags,
		      const char *snapshot, struct img **out)
{
	struct img_open_opts o = {
		.format = "qcow2",
		.flags = flags | IMG_OPEN_NO_BACKING,
		.snapshot = snapshot,
	};
	struct img_io *io;

	if (img_io_mem_new(data, size, &io) < 0)
		return -1;
	return img_open_io(io, "fuzz.qcow2", &o, out);
}

static void read_some(struct img *img, uint8_t *buf)
{
	uint64_t end = img_min(img_size(img), READ_CAP), off = 0;
	unsigned n = 0;

	for (uint64_t pos = 0; pos < end; pos += CHUNK)
		if (img_read(img, buf, pos, img_min(CHUNK, end - pos)) < 0)
			break;
	while (off < end && n++ < 1024) {
		struct img_extent ext;

		if (img_block_status(img, off, end - off, IMG_BS_NO_CHAIN,
				     &ext) < 0)
			break;
		if (ext.len == 0 || ext.len > end - off)
			abort();
		off += ext.len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_snapshot_info *list = NULL;
	uint8_t *buf = malloc(CHUNK);
	struct img_check res;
	struct img *img;
	size_t n = 0;

	if (!buf)
		return 0;
	if (open_bytes(data, size, IMG_OPEN_RDONLY, NULL, &img) >= 0) {
		if (img_snapshot_list(img, &list, &n) < 0)
			n = 0;
		img_close(img);
	}
	for (size_t i = 0; i < n && i < MAX_VIEWS; i++) {
		if (open_bytes(data, size, IMG_OPEN_RDONLY, list[i].id, &img) <
		    0)
			continue;
		read_some(img, buf);
		img_close(img);
	}
	if (open_bytes(data, size, IMG_OPEN_NO_REPAIR, NULL, &img) >= 0) {
		img_snapshot_create(img, "fuzz");
		for (size_t i = 0; i < n && i < MAX_VIEWS; i++) {
			if (i % 2)
				img_snapshot_delete(img, list[i].id);
			else
				img_snapshot_apply(img, list[i].id);
		}
		memset(&res, 0, sizeof(res));
		img_check(img, 0, &res);
		img_close(img);
	}
	img_snapshot_list_free(list, n);
	free(buf);
	return 0;
}

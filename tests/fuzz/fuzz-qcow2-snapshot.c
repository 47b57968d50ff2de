/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the qcow2 snapshot table (formats/qcow2/
 * qcow2-snapshot.c): the input bytes become a mem backend opened as qcow2
 * (no backing chain); the target lists the snapshots, opens the read-only
 * view of each of the first few and reads and maps a bounded part of it,
 * then, on a read-write copy, creates a snapshot, applies and deletes the
 * listed ones and checks. Table entries, extra data, id and name lengths and
 * snapshot L1 tables all come from the input: any crash, leak, hang or
 * unbounded allocation is a bug. Invariants (abort when broken), on top of
 * the map invariant of fuzz-format.h on every view:
 *  - a snapshot that was created is listed under its name;
 *  - after a successful apply, the active image has the size and, over the
 *    first READ_CAP bytes, the contents of that snapshot's read-only view
 *    (when the view could be read);
 *  - a successful delete of a snapshot does not change the active image.
 * The last two hold unless check found the image corrupt first (refcounts
 * below the references let apply free clusters still in use, as qemu-img
 * warns: "further writes to the image may corrupt it").
 */
#include "fuzz-format.h"

#define READ_CAP (4ull << 20)
#define MAX_VIEWS 4

struct view {
	bool known; /* the whole window read without error */
	uint64_t size, hash;
};

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
	return img_open_io(io, "fuzz.img", &o, out);
}

/* Size and FNV-1a hash of the first READ_CAP bytes (known if readable). */
static struct view look(struct img *img, uint8_t *buf)
{
	struct view v = { .known = true, .size = img_size(img) };
	uint64_t end = img_min(v.size, READ_CAP);

	v.hash = 0xcbf29ce484222325ull;
	for (uint64_t pos = 0; pos < end && v.known; pos += FUZZ_CHUNK) {
		uint64_t len = img_min(FUZZ_CHUNK, end - pos);

		v.known = img_read(img, buf, pos, len) == 0;
		for (uint64_t i = 0; i < len && v.known; i++)
			v.hash = (v.hash ^ buf[i]) * 0x100000001b3ull;
	}
	return v;
}

static bool listed(struct img *img, const char *name)
{
	struct img_snapshot_info *l = NULL;
	bool found = false;
	size_t n = 0;

	if (img_snapshot_list(img, &l, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		found = found || strcmp(l[i].name, name) == 0;
	img_snapshot_list_free(l, n);
	return found;
}

static void same(struct img *img, const struct view *want, uint8_t *buf,
		 const char *what)
{
	struct view got = look(img, buf);

	if (got.size != want->size)
		fuzz_fail(what, got.size, want->size);
	if (!got.known || got.hash != want->hash)
		fuzz_fail(what, got.known, got.hash);
}

static void modify(struct img *img, const struct img_snapshot_info *list,
		   size_t n, const struct view *views, bool trusted,
		   uint8_t *buf)
{
	struct img_check res;

	if (img_snapshot_create(img, "fuzz") == 0 && !listed(img, "fuzz"))
		fuzz_fail("a created snapshot is not listed", 0, 0);
	for (size_t i = 0; i < n && i < MAX_VIEWS; i++) {
		if (i % 2) {
			struct view before = look(img, buf);

			if (img_snapshot_delete(img, list[i].id) == 0 &&
			    trusted && before.known)
				same(img, &before, buf,
				     "delete changed the active image");
		} else if (img_snapshot_apply(img, list[i].id) == 0 &&
			   trusted && views[i].known) {
			same(img, &views[i], buf,
			     "apply did not restore the snapshot's contents");
		}
	}
	memset(&res, 0, sizeof(res));
	img_check(img, 0, &res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_snapshot_info *list = NULL;
	struct view views[MAX_VIEWS] = { 0 };
	uint8_t *buf = malloc(FUZZ_CHUNK);
	bool trusted = false;
	struct img_check res;
	struct img *img;
	size_t n = 0;

	if (!buf)
		return 0;
	if (open_bytes(data, size, IMG_OPEN_RDONLY, NULL, &img) >= 0) {
		if (img_snapshot_list(img, &list, &n) < 0)
			n = 0;
		trusted = fuzz_check_clean(img, &res);
		img_close(img);
	}
	for (size_t i = 0; i < n && i < MAX_VIEWS; i++) {
		if (open_bytes(data, size, IMG_OPEN_RDONLY, list[i].id, &img) <
		    0)
			continue;
		views[i] = look(img, buf);
		fuzz_map(img, IMG_BS_NO_CHAIN, READ_CAP, size, 0, buf);
		img_close(img);
	}
	if (open_bytes(data, size, IMG_OPEN_NO_REPAIR, NULL, &img) >= 0) {
		modify(img, list, n, views, trusted, buf);
		img_close(img);
	}
	img_snapshot_list_free(list, n);
	free(buf);
	return 0;
}

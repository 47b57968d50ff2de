/* SPDX-License-Identifier: MIT */
/*
 * Snapshots and change tracking that the storage keeps (struct img_io_ops
 * snapshot, snapshot_list, changed, clone: what the rbd backend offers),
 * without a Ceph cluster: a fake backend keeps whole copies of a mem file as
 * its snapshots. The core must offer them exactly for images whose disk is
 * the file byte for byte (raw): a raw image lists, creates, reverts to
 * (taking the snapshot's size) and deletes them and sees what changed since
 * one; a vpc image on the same storage gets -ENOTSUP (its disk is not the
 * file: a storage snapshot under it would not be its snapshot), a qcow2 image
 * keeps its own snapshots, and raw on storage without snapshots or clones
 * gets -ENOTSUP.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tap.h"

#define MAX_SNAPS 4
#define BLOCK 512u

struct snapio {
	struct img_io io;
	struct img_io *cur; /* the live file */
	unsigned n;
	struct {
		char name[32];
		uint8_t *data;
		size_t len;
	} snap[MAX_SNAPS];
};

static struct snapio *to_snapio(struct img_io *io)
{
	return (struct snapio *)io;
}

static int sio_pread(struct img_io *io, void *buf, uint64_t len, uint64_t off)
{
	return img_io_pread(to_snapio(io)->cur, buf, len, off);
}

static int sio_pwrite(struct img_io *io, const void *buf, uint64_t len,
		      uint64_t off)
{
	return img_io_pwrite(to_snapio(io)->cur, buf, len, off);
}

static int sio_flush(struct img_io *io)
{
	return 0;
}

static int sio_get_size(struct img_io *io, uint64_t *size)
{
	return img_io_size(to_snapio(io)->cur, size);
}

static int sio_truncate(struct img_io *io, uint64_t size)
{
	return img_io_truncate(to_snapio(io)->cur, size);
}

static void sio_close(struct img_io *io)
{
	struct snapio *s = to_snapio(io);

	for (unsigned i = 0; i < s->n; i++)
		free(s->snap[i].data);
	img_io_close(s->cur);
	free(s);
}

static int sio_find(struct snapio *s, const char *name)
{
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->snap[i].name, name))
			return (int)i;
	return -ENOENT;
}

static int sio_snapshot(struct img_io *io, enum img_io_snap_op op,
			const char *name, uint64_t *size)
{
	struct snapio *s = to_snapio(io);
	int i = sio_find(s, name);
	const uint8_t *d;
	size_t len;

	if (op == IMG_IO_SNAP_CREATE) {
		if (i >= 0 || s->n == MAX_SNAPS)
			return -EEXIST;
		img_io_mem_data(s->cur, &d, &len);
		s->snap[s->n].data = malloc(len ? len : 1);
		if (!s->snap[s->n].data)
			return -ENOMEM;
		memcpy(s->snap[s->n].data, d, len);
		s->snap[s->n].len = len;
		snprintf(s->snap[s->n].name, sizeof(s->snap[0].name), "%s",
			 name);
		s->n++;
	} else if (i < 0) {
		return i;
	} else if (op == IMG_IO_SNAP_DELETE) {
		free(s->snap[i].data);
		s->snap[i] = s->snap[--s->n];
	} else {
		struct img_io *copy;
		int ret =
			img_io_mem_new(s->snap[i].data, s->snap[i].len, &copy);

		if (ret < 0)
			return ret;
		img_io_close(s->cur);
		s->cur = copy;
	}
	return img_io_size(s->cur, size);
}

static int sio_snapshot_list(struct img_io *io, struct img_snapshot_info **out,
			     size_t *n)
{
	struct snapio *s = to_snapio(io);
	struct img_snapshot_info *l = calloc(s->n + 1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	for (unsigned i = 0; i < s->n; i++) {
		char id[16];

		snprintf(id, sizeof(id), "%u", i + 1);
		l[i].id = strdup(id);
		l[i].name = strdup(s->snap[i].name);
		l[i].disk_size = s->snap[i].len;
	}
	*out = l;
	*n = s->n;
	return 0;
}

/* Per BLOCK: does the live file differ from snapshot from (NULL: zeroes)? */
static bool sio_block_changed(struct snapio *s, int from, uint64_t off)
{
	const uint8_t *d;
	size_t len;

	img_io_mem_data(s->cur, &d, &len);
	for (uint64_t i = off; i < off + BLOCK && i < len; i++) {
		uint8_t ref = 0;

		if (from >= 0 && i < s->snap[from].len)
			ref = s->snap[from].data[i];
		if (d[i] != ref)
			return true;
	}
	return false;
}

static int sio_changed(struct img_io *io, const char *from, unsigned flags,
		       uint64_t off, uint64_t len, bool *changed, uint64_t *n)
{
	struct snapio *s = to_snapio(io);
	int i = from ? sio_find(s, from) : -1;
	uint64_t run = 0;

	if (from && i < 0)
		return i;
	*changed = sio_block_changed(s, i, off);
	while (run < len && sio_block_changed(s, i, off + run) == *changed)
		run += BLOCK;
	*n = img_min(run, len);
	return 0;
}

static const struct img_io_ops snapio_ops = {
	.name = "snapio",
	.pread = sio_pread,
	.pwrite = sio_pwrite,
	.flush = sio_flush,
	.get_size = sio_get_size,
	.truncate = sio_truncate,
	.close = sio_close,
	.snapshot = sio_snapshot,
	.snapshot_list = sio_snapshot_list,
	.changed = sio_changed,
};

static struct snapio *snapio_new(void)
{
	struct snapio *s = calloc(1, sizeof(*s));

	if (!s || img_io_mem_new(NULL, 0, &s->cur) < 0) {
		free(s);
		return NULL;
	}
	s->io.ops = &snapio_ops;
	s->io.path = NULL;
	return s;
}

/* Create fmt on a new snapio and open it there. */
static struct img *open_on_snapio(const char *fmt, struct snapio **sp)
{
	struct img_create_opts co = { .format = fmt, .size = 1 << 20 };
	struct img_open_opts o = { .format = fmt };
	struct snapio *s = snapio_new();
	struct img *img;

	if (!s || img_create_io(&s->io, "s.img", &co) < 0) {
		if (s)
			sio_close(&s->io);
		return NULL;
	}
	if (img_open_io(&s->io, "s.img", &o, &img) < 0)
		return NULL;
	*sp = s;
	return img;
}

static bool reads(struct img *img, uint64_t off, uint64_t len, uint8_t val)
{
	uint8_t buf[4096];

	if (len > sizeof(buf) || img_read(img, buf, off, len) < 0)
		return false;
	for (uint64_t i = 0; i < len; i++)
		if (buf[i] != val)
			return false;
	return true;
}

static void raw_has_storage_snapshots(void)
{
	uint8_t buf[4096];
	struct img_snapshot_info *list;
	struct snapio *s;
	struct img *img = open_on_snapio("raw", &s);
	bool changed;
	uint64_t n;
	size_t k;

	CHECK(img != NULL);
	if (!img)
		return;
	memset(buf, 0x11, sizeof(buf));
	CHECK_OK(img_write(img, buf, 0, 4096, 0));
	CHECK_OK(img_changed(img, NULL, 0, 0, 1 << 20, &changed, &n));
	CHECK(changed);
	CHECK_EQ(n, 4096);
	CHECK_OK(img_snapshot_create(img, "a"));
	CHECK_EQ(s->n, 1);
	memset(buf, 0x22, sizeof(buf));
	CHECK_OK(img_write(img, buf, 8192, 1024, 0));
	CHECK_OK(img_changed(img, "a", 0, 0, 1 << 20, &changed, &n));
	CHECK(!changed);
	CHECK_EQ(n, 8192);
	CHECK_OK(img_changed(img, "a", 0, 8192, 1 << 20, &changed, &n));
	CHECK(changed);
	CHECK_EQ(n, 1024);
	CHECK_ERR(img_changed(img, "nosuch", 0, 0, 512, &changed, &n), -ENOENT);

	CHECK_OK(img_snapshot_list(img, &list, &k));
	CHECK_EQ(k, 1);
	if (k == 1)
		CHECK(!strcmp(list[0].name, "a"));
	img_snapshot_list_free(list, k);

	CHECK_OK(img_resize(img, 2 << 20, 0, IMG_PREALLOC_OFF));
	CHECK_OK(img_snapshot_apply(img, "a"));
	CHECK_EQ(img_size(img), 1 << 20); /* the snapshot's size */
	CHECK(reads(img, 8192, 1024, 0));
	CHECK(reads(img, 0, 4096, 0x11));
	CHECK_OK(img_snapshot_delete(img, "a"));
	CHECK_EQ(s->n, 0);
	CHECK_OK(img_close(img));
}

static void other_formats_do_not(void)
{
	struct img_snapshot_info *list;
	struct snapio *s;
	struct img *img = open_on_snapio("vpc", &s);
	bool changed;
	uint64_t n;
	size_t k;

	CHECK(img != NULL);
	if (img) {
		CHECK_ERR(img_snapshot_list(img, &list, &k), -ENOTSUP);
		CHECK_ERR(img_snapshot_create(img, "v"), -ENOTSUP);
		CHECK_EQ(s->n, 0);
		CHECK_ERR(img_changed(img, NULL, 0, 0, 512, &changed, &n),
			  -ENOTSUP);
		CHECK_STR_HAS(img_last_error(), "snapshot: 's.img' is not");
		CHECK_OK(img_close(img));
	}

	img = open_on_snapio("qcow2", &s);
	CHECK(img != NULL);
	if (img) {
		CHECK_OK(img_snapshot_create(img, "q"));
		CHECK_EQ(s->n, 0); /* qcow2's own snapshot, in the file */
		CHECK_OK(img_snapshot_list(img, &list, &k));
		CHECK_EQ(k, 1);
		img_snapshot_list_free(list, k);
		CHECK_ERR(img_changed(img, NULL, 0, 0, 512, &changed, &n),
			  -ENOTSUP);
		CHECK_OK(img_close(img));
	}
}

static void plain_storage_has_none(void)
{
	struct img_open_opts o = { .format = "raw" };
	const char *path = test_path("plain.raw");
	struct img_snapshot_info *list;
	struct img_io *io;
	struct img *img;
	bool changed;
	uint64_t n;
	size_t k;

	CHECK_OK(img_io_mem_new(NULL, 0, &io));
	CHECK_OK(img_open_io(io, "m.raw", &o, &img));
	CHECK_ERR(img_snapshot_list(img, &list, &k), -ENOTSUP);
	CHECK_ERR(img_changed(img, NULL, 0, 0, 512, &changed, &n), -ENOTSUP);
	CHECK_OK(img_close(img));

	CHECK_OK(img_io_open(path, IMG_IO_CREATE, IMG_IO_AUTO, &io));
	img_io_close(io);
	CHECK_ERR(img_clone(path, "rbd:pool/child", 1 << 20), -ENOTSUP);
	CHECK_STR_HAS(img_last_error(), "clone: '");
}

int main(void)
{
	raw_has_storage_snapshots();
	other_formats_do_not();
	plain_storage_has_none();
	return test_done();
}

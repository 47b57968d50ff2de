/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for lib/backend.c, the one caller of driver ops: a deliberately
 * broken driver, opened through the core on the mem backend, returns
 * positive values where 0 or -errno is due, lengths outside the request,
 * counts beyond the capacity given and NULL where a pointer is required.
 * Every such answer must come back as -EIO with a message naming the driver
 * and the op (and lists the driver built must be freed, which ASan checks),
 * while well-formed answers, errors included, pass through unchanged.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tap.h"

#define SIZE (1u << 20)

/* What the broken driver answers; reset by open_bad(). */
static struct {
	int ret; /* every op's return value */
	unsigned closes;
	uint64_t len; /* block status / map / bitmap run length; 0: asked */
	unsigned flags; /* block status / map flags */
	struct img_map map; /* the rest of map's answer */
	struct img_map wmap; /* map's whole answer for a write */
	unsigned commits; /* commit: calls, and the last result given */
	int commit_result;
	uint64_t cluster_size; /* info, compress params */
	size_t n_fields;
	bool null_key;
	uint64_t total, allocated; /* check */
	size_t n_list; /* snapshot and bitmap lists */
	bool null_list, null_name;
	enum img_compress_type codec;
	unsigned n_slots;
	uint64_t required, fully;
} B;

static int bad_open(struct img *img, unsigned flags)
{
	img_set_size(img, SIZE);
	return B.ret;
}

static void bad_close(struct img *img)
{
	B.closes++;
}

static int bad_commit(struct img *img, struct img_plan *plan, int result)
{
	B.commits++;
	B.commit_result = result;
	return B.ret;
}

static int bad_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags)
{
	return B.ret;
}

static int bad_flush(struct img *img)
{
	return B.ret;
}

static int bad_map(struct img *img, uint64_t off, uint64_t len,
		   struct img_map *m)
{
	if (m->write) {
		enum img_map_write w = m->write;

		*m = B.wmap;
		m->write = w;
		m->len = B.len ? B.len : len;
		return B.ret;
	}
	*m = B.map;
	m->len = B.len ? B.len : len;
	m->flags = B.flags;
	return B.ret;
}

static int bad_info(struct img *img, struct img_info *info)
{
	info->cluster_size = B.cluster_size;
	info->n_fields = B.n_fields;
	for (size_t i = 0; i < B.n_fields && i < IMG_INFO_MAX_FIELDS; i++)
		info->fields[i] = (struct img_field){
			.key = B.null_key ? NULL : "k",
			.type = IMG_VAL_U64,
		};
	return B.ret;
}

static int bad_check(struct img *img, unsigned flags, struct img_check *res)
{
	res->has_stats = true;
	res->total_clusters = B.total;
	res->allocated_clusters = B.allocated;
	return B.ret;
}

static int bad_resize(struct img *img, uint64_t size, unsigned flags,
		      enum img_prealloc prealloc)
{
	return B.ret;
}

static int bad_create(const char *path, struct img_io *file,
		      const struct img_create_opts *opts)
{
	return B.ret;
}

static int bad_measure(const struct img_create_opts *opts, struct img *src,
		       struct img_measure *out)
{
	out->required = B.required;
	out->fully_allocated = B.fully;
	return B.ret;
}

static int bad_snapshot_list(struct img *img, struct img_snapshot_info **out,
			     size_t *n)
{
	struct img_snapshot_info *l = NULL;

	if (!B.null_list) {
		l = calloc(B.n_list ? B.n_list : 1, sizeof(*l));
		for (size_t i = 0; l && i < B.n_list; i++) {
			l[i].id = strdup("1");
			l[i].name = B.null_name && i ? NULL : strdup("s");
		}
	}
	*out = l;
	*n = B.n_list;
	return B.ret;
}

static int bad_snapshot_op(struct img *img, const char *name)
{
	return B.ret;
}

static int bad_amend(struct img *img, const struct img_kv *opts, size_t n,
		     const struct img_progress *progress)
{
	return B.ret;
}

static int bad_set_backing(struct img *img, const char *name, const char *fmt)
{
	return B.ret;
}

static int bad_make_empty(struct img *img)
{
	return B.ret;
}

static int bad_compress_params(struct img *img, enum img_compress_type *type,
			       uint64_t *cluster_size)
{
	*type = B.codec;
	*cluster_size = B.cluster_size;
	return B.ret;
}

static int bad_write_compressed(struct img *img, const struct img_compressed *v,
				size_t n)
{
	return B.ret;
}

static int bad_crypt_info(struct img *img, struct img_crypt_info *out)
{
	memset(out, 0, sizeof(*out));
	out->format = "luks";
	out->n_slots = B.n_slots;
	return B.ret;
}

static int bad_bitmap_list(struct img *img, struct img_bitmap_info **out,
			   size_t *n)
{
	struct img_bitmap_info *l = NULL;

	if (!B.null_list) {
		l = calloc(B.n_list ? B.n_list : 1, sizeof(*l));
		for (size_t i = 0; l && i < B.n_list; i++) {
			l[i].name = B.null_name && i ? NULL : strdup("b");
			l[i].granularity = 65536;
		}
	}
	*out = l;
	*n = B.n_list;
	return B.ret;
}

static int bad_bitmap_name_op(struct img *img, const char *name)
{
	return B.ret;
}

static int bad_bitmap_add(struct img *img, const char *name,
			  uint64_t granularity, bool disabled)
{
	return B.ret;
}

static int bad_bitmap_enable(struct img *img, const char *name, bool enable)
{
	return B.ret;
}

static int bad_bitmap_set_dirty(struct img *img, const char *name, uint64_t off,
				uint64_t len)
{
	return B.ret;
}

static int bad_bitmap_dirty(struct img *img, const char *name, uint64_t off,
			    uint64_t len, bool *dirty, uint64_t *run_len)
{
	*dirty = true;
	*run_len = B.len;
	return B.ret;
}

static int bad_probe(const uint8_t *buf, size_t len)
{
	return B.ret;
}

static const struct img_create_ops bad_create_ops = {
	.create = bad_create,
	.measure = bad_measure,
};

static const struct img_snapshot_ops bad_snapshot_ops = {
	.list = bad_snapshot_list,
	.create = bad_snapshot_op,
	.apply = bad_snapshot_op,
	.delete = bad_snapshot_op,
	.load = bad_snapshot_op,
};

static const struct img_amend_ops bad_amend_ops = {
	.amend = bad_amend,
	.resize = bad_resize,
	.set_backing = bad_set_backing,
	.make_empty = bad_make_empty,
};

static const struct img_compress_ops bad_compress_ops = {
	.params = bad_compress_params,
	.write = bad_write_compressed,
};

static const struct img_crypt_ops bad_crypt_ops = {
	.info = bad_crypt_info,
};

static const struct img_bitmap_ops bad_bitmap_ops = {
	.list = bad_bitmap_list,
	.add = bad_bitmap_add,
	.remove = bad_bitmap_name_op,
	.clear = bad_bitmap_name_op,
	.enable = bad_bitmap_enable,
	.set_dirty = bad_bitmap_set_dirty,
	.dirty = bad_bitmap_dirty,
};

static const struct img_driver bad_driver = {
	.name = "bad",
	.probe = bad_probe,
	.open = bad_open,
	.close = bad_close,
	.commit = bad_commit,
	.zero = bad_zero,
	.flush = bad_flush,
	.map = bad_map,
	.create = &bad_create_ops,
	.info = bad_info,
	.check = bad_check,
	.snapshot = &bad_snapshot_ops,
	.amend = &bad_amend_ops,
	.compress = &bad_compress_ops,
	.bitmap = &bad_bitmap_ops,
	.crypt = &bad_crypt_ops,
};

/* A table with one member missing: the op is refused, not called. */
static const struct img_snapshot_ops list_only_ops = {
	.list = bad_snapshot_list,
};

static const struct img_driver partial_driver = {
	.name = "partial",
	.open = bad_open,
	.close = bad_close,
	.map = bad_map,
	.snapshot = &list_only_ops,
};

static struct img *open_drv(const struct img_driver *drv, unsigned flags)
{
	struct img_open_opts o = { .flags = flags };
	struct img_io *io;
	struct img *img = NULL;

	memset(&B, 0, sizeof(B));
	CHECK_OK(img_io_mem_new(NULL, 0, &io));
	CHECK_OK(img_open_driver(io, drv, &o, &img));
	if (!img)
		exit(1);
	return img;
}

static struct img *open_bad(void)
{
	return open_drv(&bad_driver, 0);
}

/* The call fails -EIO and the message names the driver and the op. */
#define CHECK_BUG(expr, what)                                  \
	do {                                                   \
		CHECK_ERR(expr, -EIO);                         \
		CHECK(!strncmp(img_last_error(), "bad: ", 5)); \
		CHECK_STR_HAS(img_last_error(), what);         \
	} while (0)

static void test_open_close(void)
{
	struct img_open_opts o = { 0 };
	struct img_io *io;
	struct img *img = NULL;

	memset(&B, 0, sizeof(B));
	B.ret = 1;
	CHECK_OK(img_io_mem_new(NULL, 0, &io));
	CHECK_BUG(img_open_driver(io, &bad_driver, &o, &img),
		  "open returned 1");
	CHECK(img == NULL);
	/* It claimed success: what it holds is released. */
	CHECK_EQ(B.closes, 1);

	B.ret = -EACCES;
	B.closes = 0;
	CHECK_OK(img_io_mem_new(NULL, 0, &io));
	CHECK_ERR(img_open_driver(io, &bad_driver, &o, &img), -EACCES);
	CHECK_EQ(B.closes, 0);

	img = open_bad();
	CHECK_EQ(img_size(img), SIZE);
	B.ret = 7;
	CHECK_BUG(img_close(img), "flush returned 7");
	CHECK_EQ(B.closes, 1);
}

static void test_returns(void)
{
	struct img *img = open_bad();
	uint8_t buf[4096];

	B.ret = 5;
	CHECK_BUG(img_read(img, buf, 0, sizeof(buf)), "map returned 5");
	CHECK_BUG(img_write(img, buf, 0, sizeof(buf), 0), "map returned 5");
	CHECK_BUG(img_zero(img, 0, 4096, 0), "zero returned 5");
	CHECK_BUG(img_discard(img, 0, 4096), "discard returned 5");
	CHECK_BUG(img_flush(img), "flush returned 5");
	CHECK_BUG(img_resize(img, 2 * SIZE, 0, IMG_PREALLOC_OFF),
		  "resize returned 5");
	CHECK_EQ(img_size(img), SIZE);
	CHECK_BUG(img_set_backing(img, NULL, NULL), "set_backing returned 5");
	CHECK_BUG(img_amend(img, NULL, 0, NULL), "amend returned 5");
	CHECK_BUG(img_snapshot_create(img, "s"), "snapshot create returned 5");
	CHECK_BUG(img_snapshot_apply(img, "s"), "snapshot apply returned 5");
	CHECK_BUG(img_snapshot_delete(img, "s"), "snapshot delete returned 5");
	CHECK_BUG(img_bitmap_add(img, "b", 0, false), "bitmap add returned 5");
	CHECK_BUG(img_bitmap_remove(img, "b"), "bitmap remove returned 5");
	CHECK_BUG(img_bitmap_clear(img, "b"), "bitmap clear returned 5");
	CHECK_BUG(img_bitmap_enable(img, "b", true),
		  "bitmap enable returned 5");
	CHECK_BUG(backend_make_empty(img), "make_empty returned 5");
	CHECK_BUG(backend_create(&bad_driver, "x", img_file(img), NULL),
		  "create returned 5");
	struct img_compressed c = { .off = 0, .data = buf, .len = 10 };
	CHECK_BUG(img_write_compressed(img, &c, 1),
		  "write_compressed returned 5");
	struct img_crypt_info ci;
	CHECK_BUG(img_crypt_info(img, &ci), "crypt_info returned 5");

	/* Not an errno either. */
	B.ret = INT_MIN;
	CHECK_BUG(img_read(img, buf, 0, sizeof(buf)), "map returned");
	B.ret = 150;
	CHECK_BUG(backend_probe(&bad_driver, buf, sizeof(buf)),
		  "probe returned score 150");

	/* Well-formed answers pass through unchanged. */
	B.ret = -ENOSPC;
	CHECK_ERR(img_write(img, buf, 0, sizeof(buf), 0), -ENOSPC);
	CHECK_ERR(img_flush(img), -ENOSPC);
	B.ret = 0;
	memset(buf, 0x5a, sizeof(buf));
	CHECK_OK(img_read(img, buf, 0, sizeof(buf))); /* unallocated: zeroes */
	CHECK_EQ(buf[0], 0);
	CHECK_OK(img_resize(img, 2 * SIZE, 0, IMG_PREALLOC_OFF));
	CHECK_EQ(img_size(img), 2 * SIZE);
	B.ret = 100;
	CHECK_EQ(backend_probe(&bad_driver, buf, sizeof(buf)), 100);
	B.ret = 0;
	CHECK_OK(img_close(img));
}

static void test_extents(void)
{
	struct img *img = open_bad();
	struct img_extent ext;
	struct img_map m = { .write = IMG_MAP_NO_WRITE };

	B.len = 8192;
	CHECK_BUG(img_block_status(img, 0, 4096, 0, &ext),
		  "map at offset 0 returned length 8192");
	B.len = 0;
	B.flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | (1u << 9);
	CHECK_BUG(img_block_status(img, 0, 4096, 0, &ext), "unknown flags");
	B.flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED;
	CHECK_OK(img_block_status(img, 0, 4096, 0, &ext));
	CHECK_EQ(ext.len, 4096);

	/* map: length, overflow, compressed and encrypted extents. */
	B.len = 4097;
	CHECK_BUG(backend_map(img, 0, 4096, &m), "map at offset 0 returned");
	B.len = 0;
	B.flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	B.map.file_off = UINT64_MAX - 100;
	CHECK_BUG(backend_map(img, 0, 4096, &m), "overflows");
	B.map.file_off = 65536;
	CHECK_OK(backend_map(img, 0, 4096, &m));
	/* A NULL io is the image's own file. */
	CHECK(m.io == img_file(img));
	CHECK_EQ(m.file_off, 65536);

	B.flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_COMPRESSED;
	B.map.cluster_size = 65536;
	B.map.clen = 1000;
	B.map.in_cluster = 65536 - 4095;
	CHECK_BUG(backend_map(img, 0, 4096, &m),
		  "compressed cluster of 65536 bytes");
	B.map.in_cluster = 0;
	B.map.clen = 0;
	CHECK_BUG(backend_map(img, 0, 4096, &m), "compressed stream of 0");
	B.map.clen = 1000;
	B.map.codec = (enum img_compress_type)9;
	CHECK_BUG(backend_map(img, 0, 4096, &m), "unknown codec 9");
	B.map.codec = IMG_COMPRESS_ZSTD;
	CHECK_OK(backend_map(img, 0, 4096, &m));
	CHECK(m.io == img_file(img));

	B.flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID |
		  IMG_EXT_ENCRYPTED;
	B.map = (struct img_map){ .file_off = 4096 };
	CHECK_BUG(backend_map(img, 0, 4096, &m), "encrypted without a cipher");

	B.ret = 1;
	B.flags = 0;
	CHECK_BUG(backend_map(img, 0, 4096, &m), "map returned 1");
	B.ret = 0;
	CHECK_OK(img_close(img));
}

/* A token for the driver's plan: the core only hands it back. */
static char plan_token;

static void test_map_write(void)
{
	struct img *img = open_bad();
	const unsigned data = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			      IMG_EXT_OFFSET_VALID;
	struct img_io_vec vecs[4];
	struct img_io *io;
	uint8_t buf[4096];
	unsigned n = 4;

	memset(buf, 0xc3, sizeof(buf));
	B.wmap = (struct img_map){ .flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED };
	CHECK_BUG(img_write(img, buf, 0, sizeof(buf), 0),
		  "not data at a host offset");
	B.wmap = (struct img_map){ .flags = data,
				   .region_off = 512,
				   .region_len = 8192 };
	CHECK_BUG(img_write(img, buf, 4096, sizeof(buf), 0),
		  "returned region 512+8192");
	/* A plan the checks refuse is released, not leaked. */
	B.wmap = (struct img_map){ .flags = data,
				   .file_off = 4096,
				   .region_off = 0,
				   .region_len = 8192,
				   .lock_off = 0,
				   .lock_len = 4096,
				   .plan = (struct img_plan *)&plan_token };
	B.commits = 0;
	CHECK_BUG(img_write(img, buf, 4096, sizeof(buf), 0),
		  "less than its region");
	CHECK_EQ(B.commits, 1);
	CHECK(B.commit_result < 0);
	/* The ring's map never gets a plan. */
	B.wmap.lock_len = 0;
	B.commits = 0;
	CHECK_BUG(img_direct_map(img, buf, 4096, sizeof(buf), true, &io, vecs,
				 &n),
		  "a plan it may not make");
	CHECK_EQ(B.commits, 1);

	/* In place: guest 0 at host 8192. */
	B.wmap = (struct img_map){ .flags = data, .file_off = 8192 };
	CHECK_OK(img_write(img, buf, 0, sizeof(buf), 0));
	/* A plan: guest 4096 at host 20480, in a region from guest 0 whose
	 * head the core reads from the current contents (host 8192), then
	 * one commit with 0. */
	B.flags = data;
	B.map = (struct img_map){ .file_off = 8192 };
	B.wmap = (struct img_map){ .flags = data,
				   .file_off = 20480,
				   .region_off = 0,
				   .region_len = 8192,
				   .plan = (struct img_plan *)&plan_token };
	B.commits = 0;
	memset(buf, 0x5a, sizeof(buf));
	CHECK_OK(img_write(img, buf, 4096, sizeof(buf), 0));
	CHECK_EQ(B.commits, 1);
	CHECK_EQ(B.commit_result, 0);
	memset(buf, 0, sizeof(buf));
	B.map = (struct img_map){ .file_off = 16384 };
	CHECK_OK(img_read(img, buf, 0, sizeof(buf)));
	CHECK_EQ(buf[0], 0xc3);
	CHECK_EQ(buf[4095], 0xc3);
	B.map = (struct img_map){ .file_off = 20480 };
	CHECK_OK(img_read(img, buf, 0, sizeof(buf)));
	CHECK_EQ(buf[0], 0x5a);
	CHECK_EQ(buf[4095], 0x5a);
	/* A failed commit fails the write. */
	B.ret = -ENOSPC;
	CHECK_ERR(img_write(img, buf, 4096, sizeof(buf), 0), -ENOSPC);
	B.ret = 0;
	B.map = (struct img_map){ .file_off = 0 };
	B.flags = 0;
	CHECK_OK(img_close(img));
}

static void test_info_check(void)
{
	struct img *img = open_bad();
	struct img_info *info = calloc(1, sizeof(*info));
	struct img_check res = { 0 };
	struct img_measure me;

	CHECK(info);
	if (!info)
		return;
	B.cluster_size = 3000;
	CHECK_BUG(img_info(img, info), "info returned cluster size 3000");
	B.cluster_size = 65536;
	B.n_fields = IMG_INFO_MAX_FIELDS + 1;
	CHECK_BUG(img_info(img, info), "info returned 25 fields");
	B.n_fields = 2;
	B.null_key = true;
	CHECK_BUG(img_info(img, info), "info field 0 has no name");
	B.null_key = false;
	CHECK_OK(img_info(img, info));
	CHECK_EQ(info->cluster_size, 65536);
	free(info);

	B.total = 10;
	B.allocated = 11;
	CHECK_BUG(img_check(img, 0, &res), "check returned 11 allocated");
	B.allocated = 10;
	CHECK_OK(img_check(img, 0, &res));

	B.required = 2;
	B.fully = 1;
	CHECK_BUG(backend_measure(&bad_driver, NULL, NULL, &me),
		  "measure returned 2 bytes required");
	B.fully = 2;
	CHECK_OK(backend_measure(&bad_driver, NULL, NULL, &me));
	CHECK_OK(img_close(img));
}

static void test_lists(void)
{
	struct img *img = open_bad();
	struct img_snapshot_info *sl = NULL;
	struct img_bitmap_info *bl = NULL;
	size_t n = 0;
	bool dirty;
	uint64_t run;

	B.n_list = 2;
	B.null_list = true;
	CHECK_BUG(img_snapshot_list(img, &sl, &n),
		  "snapshot list returned 2 snapshots and no list");
	CHECK_BUG(img_bitmap_list(img, &bl, &n),
		  "bitmap list returned 2 bitmaps and no list");
	B.null_list = false;
	B.null_name = true;
	CHECK_BUG(img_snapshot_list(img, &sl, &n),
		  "snapshot list returned snapshot 1 without a name");
	CHECK_BUG(img_bitmap_list(img, &bl, &n),
		  "bitmap list returned bitmap 1 without a name");
	CHECK(sl == NULL && bl == NULL);
	B.null_name = false;
	CHECK_OK(img_snapshot_list(img, &sl, &n));
	CHECK_EQ(n, 2);
	img_snapshot_list_free(sl, n);
	CHECK_OK(img_bitmap_list(img, &bl, &n));
	CHECK_EQ(n, 2);
	img_bitmap_list_free(bl, n);

	B.len = 0;
	CHECK_BUG(img_bitmap_dirty(img, "b", 0, 4096, &dirty, &run),
		  "bitmap dirty at offset 0 returned a run of 0 bytes");
	B.len = 8192;
	CHECK_BUG(img_bitmap_dirty(img, "b", 0, 4096, &dirty, &run),
		  "returned a run of 8192 bytes for a request of 4096");
	B.len = 4096;
	CHECK_OK(img_bitmap_dirty(img, "b", 0, 4096, &dirty, &run));
	CHECK_EQ(run, 4096);
	CHECK_OK(img_close(img));
}

static void test_compress_crypt(void)
{
	struct img *img = open_bad();
	enum img_compress_type type;
	uint64_t cluster_size;
	struct img_crypt_info ci;

	B.codec = (enum img_compress_type)7;
	B.cluster_size = 65536;
	CHECK_BUG(img_compress_params(img, &type, &cluster_size),
		  "compress_params returned unknown codec 7");
	B.codec = IMG_COMPRESS_ZSTD;
	B.cluster_size = 1000;
	CHECK_BUG(img_compress_params(img, &type, &cluster_size),
		  "compress_params returned cluster size 1000");
	B.cluster_size = 65536;
	B.ret = 2;
	CHECK_BUG(img_compress_params(img, &type, &cluster_size),
		  "compress_params returned 2, not 0, 1 or -errno");
	/* 1: the image stores only compressed data. */
	B.ret = 1;
	CHECK_EQ(img_compress_params(img, &type, &cluster_size), 1);
	CHECK_EQ(cluster_size, 65536);

	B.ret = 0;
	B.n_slots = IMG_CRYPT_MAX_SLOTS + 1;
	CHECK_BUG(img_crypt_info(img, &ci), "crypt_info returned 9 key slots");
	B.n_slots = 2;
	CHECK_OK(img_crypt_info(img, &ci));
	CHECK_OK(img_close(img));
}

static void test_partial_table(void)
{
	struct img *img = open_drv(&partial_driver, IMG_OPEN_RDONLY);

	CHECK_ERR(img_snapshot_load(img, "s"), -ENOTSUP);
	CHECK_STR_HAS(img_last_error(),
		      "partial: format does not support internal snapshots");
	CHECK_ERR(img_bitmap_add(img, "b", 0, false), -ENOTSUP);
	CHECK_ERR(img_amend(img, NULL, 0, NULL), -ENOTSUP);
	CHECK_ERR(img_compress_params(img, NULL, NULL), -ENOTSUP);
	CHECK_OK(img_close(img));
}

int main(void)
{
	test_open_close();
	test_returns();
	test_extents();
	test_map_write();
	test_info_check();
	test_lists();
	test_compress_crypt();
	test_partial_table();
	return test_done();
}

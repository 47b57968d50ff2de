/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the qcow2 robustness tests (see qcow2-testlib.h): random
 * numbers, a builder of small consistent qcow2 images laid out as QEMU 7.2
 * lays them out (header, refcount table at cluster 1, one refcount block at
 * cluster 2, L1 at cluster 3, then an optional L2 table and data cluster),
 * mem-backed images and a borrowing I/O wrapper. Self-contained: it uses only
 * the public and I/O APIs so every unit test binary links with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qcow2-testlib.h"

uint64_t qt_seed(uint64_t dflt)
{
	const char *e = getenv("IMG_TEST_SEED");
	uint64_t seed = dflt;

	if (e && *e)
		seed = strtoull(e, NULL, 0);
	printf("# seed %" PRIu64 " (override with IMG_TEST_SEED)\n", seed);
	return seed;
}

/* splitmix64: small, fast, and any seed (0 too) gives a good sequence. */
uint64_t qt_rand(struct qt_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t qt_below(struct qt_rng *r, uint64_t n)
{
	return n ? qt_rand(r) % n : 0;
}

void qt_fill(struct qt_rng *r, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t i = 0;

	while (i < len) {
		uint64_t v = qt_rand(r);

		for (int k = 0; k < 8 && i < len; k++, v >>= 8)
			p[i++] = (uint8_t)v;
	}
}

bool qt_have_qcow2(void)
{
	for (const char *const *f = img_formats(); f && *f; f++)
		if (!strcmp(*f, "qcow2"))
			return true;
	return false;
}

bool qt_have_qemu_img(void)
{
	return system("command -v qemu-img >/dev/null 2>&1") == 0;
}

/* ---- the builder ---- */

struct qt_geom qt_geom_default(void)
{
	struct qt_geom g = {
		.version = 3,
		.cluster_bits = 12,
		.refcount_order = 4,
		.size = 8ull << 20,
		.data = true,
		.feature_table = true,
	};
	return g;
}

void qt_put32(struct qt_img *im, uint64_t off, uint32_t v)
{
	if (off + 4 <= im->len)
		img_put_be32(im->buf + off, v);
}

void qt_put64(struct qt_img *im, uint64_t off, uint64_t v)
{
	if (off + 8 <= im->len)
		img_put_be64(im->buf + off, v);
}

static void put_refcount(uint8_t *block, unsigned order, uint64_t idx,
			 uint64_t rc)
{
	unsigned bits = 1u << order;

	if (bits >= 8) {
		unsigned bytes = bits / 8;

		for (unsigned i = 0; i < bytes; i++)
			block[idx * bytes + i] =
				(uint8_t)(rc >> (8 * (bytes - 1 - i)));
	} else {
		uint64_t bit = idx * bits;

		/* Narrow refcounts are packed from the low bits of a byte. */
		block[bit / 8] &= (uint8_t) ~(((1u << bits) - 1) << (bit % 8));
		block[bit / 8] |=
			(uint8_t)((rc & ((1u << bits) - 1)) << (bit % 8));
	}
}

static const struct {
	uint8_t type, bit;
	const char *name;
} qemu_features[] = {
	{ 0, 0, "dirty bit" },
	{ 0, 1, "corrupt bit" },
	{ 0, 2, "external data file" },
	{ 0, 3, "compression type" },
	{ 0, 4, "extended L2 entries" },
	{ 1, 0, "lazy refcounts" },
	{ 2, 0, "bitmaps" },
	{ 2, 1, "raw external data" },
};

int qt_build(const struct qt_geom *g, struct qt_img *im)
{
	uint64_t cs = 1ull << g->cluster_bits;
	unsigned l2_entry_size = g->extended_l2 ? 16 : 8;
	uint64_t l2_entries = cs / l2_entry_size;
	uint64_t l1_size = (g->size + cs * l2_entries - 1) / (cs * l2_entries);
	uint64_t l1_clusters = l1_size ? (l1_size * 8 + cs - 1) / cs : 0;
	uint64_t next, n_clusters, p;

	memset(im, 0, sizeof(*im));
	if (g->cluster_bits < 9 || g->cluster_bits > 16 ||
	    g->refcount_order > 6)
		return -EINVAL;
	im->cluster_size = cs;
	im->reftable_off = cs;
	im->refblock_off = 2 * cs;
	im->l1_off = 3 * cs;
	next = 3 + l1_clusters;
	if (g->data) {
		im->l2_off = next++ * cs;
		im->data_off = next++ * cs;
	}
	n_clusters = next;
	if (n_clusters > cs * 8 / (1u << g->refcount_order))
		return -EINVAL;
	im->len = (size_t)(n_clusters * cs);
	im->buf = calloc(1, im->len);
	if (!im->buf)
		return -ENOMEM;

	qt_put32(im, QT_H_MAGIC, 0x514649fb);
	qt_put32(im, QT_H_VERSION, g->version);
	qt_put32(im, QT_H_CLUSTER_BITS, g->cluster_bits);
	qt_put64(im, QT_H_SIZE, g->size);
	qt_put32(im, QT_H_L1_SIZE, (uint32_t)l1_size);
	qt_put64(im, QT_H_L1_OFF, im->l1_off);
	qt_put64(im, QT_H_RT_OFF, im->reftable_off);
	qt_put32(im, QT_H_RT_CLUSTERS, 1);
	p = 72;
	if (g->version >= 3) {
		qt_put64(im, QT_H_INCOMPAT, g->extended_l2 ? 1ull << 4 : 0);
		qt_put32(im, QT_H_REFCOUNT_ORDER, g->refcount_order);
		qt_put32(im, QT_H_HEADER_LENGTH, 112);
		p = 112;
	}
	im->ext_off = p;
	if (g->backing_fmt) {
		size_t n = strlen(g->backing_fmt);

		qt_put32(im, p, 0xe2792aca);
		qt_put32(im, p + 4, (uint32_t)n);
		memcpy(im->buf + p + 8, g->backing_fmt, n);
		p += 8 + img_align_up(n, 8);
	}
	if (g->feature_table && g->version >= 3) {
		size_t n = IMG_ARRAY_SIZE(qemu_features);

		im->feature_table_off = p;
		qt_put32(im, p, 0x6803f857);
		qt_put32(im, p + 4, (uint32_t)(n * 48));
		for (size_t i = 0; i < n; i++) {
			uint8_t *e = im->buf + p + 8 + i * 48;

			e[0] = qemu_features[i].type;
			e[1] = qemu_features[i].bit;
			memcpy(e + 2, qemu_features[i].name,
			       strlen(qemu_features[i].name));
		}
		p += 8 + n * 48;
	}
	im->ext_end = p;
	p += 8; /* end-of-extensions marker, all zero */
	if (g->backing) {
		size_t n = strlen(g->backing);

		im->backing_name_off = p;
		memcpy(im->buf + p, g->backing, n);
		qt_put64(im, QT_H_BACKING_OFF, p);
		qt_put32(im, QT_H_BACKING_SIZE, (uint32_t)n);
	}

	qt_put64(im, im->reftable_off, im->refblock_off);
	for (uint64_t i = 0; i < n_clusters; i++)
		put_refcount(im->buf + im->refblock_off, g->refcount_order, i,
			     1);
	if (g->data) {
		uint64_t copied = 1ull << 63;

		qt_put64(im, im->l1_off, im->l2_off | copied);
		qt_put64(im, im->l2_off, im->data_off | copied);
		if (g->extended_l2)
			qt_put64(im, im->l2_off + 8, 0xffffffffull);
		for (uint64_t i = 0; i < cs; i++)
			im->buf[im->data_off + i] = (uint8_t)(i * 7 + 1);
	}
	return 0;
}

void qt_img_free(struct qt_img *im)
{
	free(im->buf);
	im->buf = NULL;
	im->len = 0;
}

/* ---- mem images ---- */

int qt_create_mem(const char *opts, uint64_t size, const char *backing,
		  const char *backing_fmt, struct img_io **out)
{
	struct img_create_opts co = {
		.format = "qcow2",
		.size = size,
		.backing_file = backing,
		.backing_fmt = backing_fmt,
		.unsafe_backing = true,
	};
	struct img_kv *kv = NULL;
	size_t n = 0;
	struct img_io *io;
	int ret;

	if (opts && *opts) {
		ret = img_kv_parse(opts, &kv, &n);
		if (ret < 0)
			return ret;
	}
	co.opts = kv;
	co.n_opts = n;
	ret = img_io_mem_new(NULL, 0, &io);
	if (ret < 0)
		goto out;
	ret = img_create_io(io, "mem.qcow2", &co);
	if (ret < 0) {
		img_io_close(io);
		goto out;
	}
	*out = io;
out:
	img_kv_free(kv, n);
	return ret;
}

int qt_open_bytes(const void *data, size_t len, unsigned flags,
		  struct img **out)
{
	struct img_open_opts o = { .format = "qcow2", .flags = flags };
	struct img_io *io;
	int ret;

	ret = img_io_mem_new(data, len, &io);
	if (ret < 0)
		return ret;
	return img_open_io(io, "mem.qcow2", &o, out);
}

struct borrow {
	struct img_io io;
	struct img_io *inner;
};

static struct img_io *inner(struct img_io *io)
{
	return ((struct borrow *)io)->inner;
}

static int b_pread(struct img_io *io, void *buf, uint64_t len, uint64_t off)
{
	return img_io_pread(inner(io), buf, len, off);
}

static int b_pwrite(struct img_io *io, const void *buf, uint64_t len,
		    uint64_t off)
{
	return img_io_pwrite(inner(io), buf, len, off);
}

static int b_submit(struct img_io *io, struct img_io_vec *v, unsigned n)
{
	return img_io_submit(inner(io), v, n);
}

static int b_flush(struct img_io *io)
{
	return img_io_flush(inner(io));
}

static int b_zero(struct img_io *io, uint64_t off, uint64_t len, unsigned flags)
{
	return img_io_zero(inner(io), off, len, flags);
}

static int b_allocate(struct img_io *io, uint64_t off, uint64_t len)
{
	return img_io_allocate(inner(io), off, len);
}

static int b_get_size(struct img_io *io, uint64_t *size)
{
	return img_io_size(inner(io), size);
}

static int b_truncate(struct img_io *io, uint64_t size)
{
	return img_io_truncate(inner(io), size);
}

static int b_extent(struct img_io *io, uint64_t off, uint64_t len, bool *data,
		    uint64_t *extent_len)
{
	return img_io_extent(inner(io), off, len, data, extent_len);
}

static int b_allocated(struct img_io *io, uint64_t *bytes)
{
	return img_io_allocated(inner(io), bytes);
}

static void b_close(struct img_io *io)
{
	free(io);
}

static const struct img_io_ops borrow_ops = {
	.name = "borrow",
	.pread = b_pread,
	.pwrite = b_pwrite,
	.submit = b_submit,
	.flush = b_flush,
	.zero = b_zero,
	.allocate = b_allocate,
	.get_size = b_get_size,
	.truncate = b_truncate,
	.extent = b_extent,
	.allocated = b_allocated,
	.close = b_close,
};

int qt_io_borrow(struct img_io *in, struct img_io **out)
{
	struct borrow *b = calloc(1, sizeof(*b));

	if (!b)
		return -ENOMEM;
	b->io.ops = &borrow_ops;
	b->io.path = in->path;
	b->io.flags = in->flags;
	b->inner = in;
	*out = &b->io;
	return 0;
}

int qt_open_borrowed(struct img_io *io, unsigned flags, struct img **out)
{
	struct img_open_opts o = { .format = "qcow2", .flags = flags };
	struct img_io *b;
	int ret;

	ret = qt_io_borrow(io, &b);
	if (ret < 0)
		return ret;
	return img_open_io(b, "mem.qcow2", &o, out);
}

int qt_save_mem(struct img_io *mem, const char *path)
{
	const uint8_t *data;
	size_t len;
	FILE *f;
	int ret = 0;

	img_io_mem_data(mem, &data, &len);
	f = fopen(path, "wb");
	if (!f)
		return -errno;
	if (len && fwrite(data, 1, len, f) != len)
		ret = -EIO;
	if (fclose(f) != 0 && !ret)
		ret = -EIO;
	return ret;
}

/* ---- whole-image helpers ---- */

int qt_read_all(struct img *img, uint64_t cap)
{
	uint64_t size = img_min(img_size(img), cap);
	uint64_t chunk = 1ull << 20;
	uint8_t *buf = malloc(chunk);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < size && ret >= 0; off += chunk)
		ret = img_read(img, buf, off, img_min(chunk, size - off));
	free(buf);
	return ret < 0 ? ret : 0;
}

static void print_report(void *opaque, const char *line)
{
	printf("# %s%s\n", (const char *)opaque, line);
}

int qt_check(struct img *img, struct img_check *res, const char *prefix)
{
	memset(res, 0, sizeof(*res));
	if (prefix) {
		res->report = print_report;
		res->opaque = (void *)prefix;
	}
	return img_check(img, 0, res);
}

bool qt_compare(struct img *img, const uint8_t *ref, uint64_t off, uint64_t len,
		const char *what)
{
	uint64_t chunk = 1ull << 20;
	uint8_t *buf = malloc(chunk);
	bool ok = buf != NULL;

	for (uint64_t pos = off; ok && pos < off + len; pos += chunk) {
		uint64_t n = img_min(chunk, off + len - pos);
		int ret = img_read(img, buf, pos, n);

		if (ret < 0) {
			printf("# %s: read of %" PRIu64 " bytes at %#" PRIx64
			       " failed: %s\n",
			       what, n, pos, img_last_error());
			ok = false;
			break;
		}
		if (!memcmp(buf, ref + pos, n))
			continue;
		for (uint64_t i = 0; i < n; i++) {
			if (buf[i] != ref[pos + i]) {
				printf("# %s: mismatch at %#" PRIx64
				       ": image %#x, expected %#x\n",
				       what, pos + i, buf[i], ref[pos + i]);
				ok = false;
				break;
			}
		}
	}
	free(buf);
	return ok;
}

int qt_qemu_check(const char *path)
{
	char cmd[1200];
	int st;

	if (!qt_have_qemu_img())
		return 77;
	snprintf(cmd, sizeof(cmd), "qemu-img check -f qcow2 '%s' >&2", path);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return 1;
	return WEXITSTATUS(st) == 0 ? 0 : 1;
}

int qt_write_file(const char *path, const uint8_t *data, uint64_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	bool ok = fd >= 0 && pwrite(fd, data, len, 0) == (ssize_t)len;

	if (fd >= 0)
		close(fd);
	return ok ? 0 : -EIO;
}

/* SPDX-License-Identifier: MIT */
/*
 * Random-operation property test for the qcow2 driver: a seeded stream of
 * unaligned writes (1 byte to several clusters), zeroes (with and without
 * IMG_ZERO_MAY_UNMAP), discards, reads, flushes and close+reopen is applied
 * to a qcow2 image and to a flat reference buffer; after every flush and
 * reopen the whole image must equal the reference. Variants cover cluster
 * sizes 512/4k/64k, refcount_bits 1 and 16, extended L2, compat 0.10, lazy
 * refcounts, and qcow2 or raw backing files with random content (the
 * reference then starts as the backing's content). At the end img_check must
 * find no corruption and no leak (a cleanly closed image has no reason to
 * leak), and qemu-img, when installed, must agree: `qemu-img check` passes and
 * `qemu-img compare` finds the image equal to the reference.
 *
 * The seed is printed; set IMG_TEST_SEED to replay a failure, and
 * IMG_TEST_OPS to change the number of operations per variant.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2-testlib.h"
#include "tap.h"

enum backing_kind { B_NONE, B_QCOW2, B_RAW };

struct variant {
	const char *name;
	const char *opts;
	uint64_t size;
	bool on_file;
	enum backing_kind backing;
	uint64_t cluster_size; /* to pick request sizes */
};

static const struct variant variants[] = {
	{ "mem 64k", "cluster_size=65536", 6 << 20, false, B_NONE, 65536 },
	{ "file 4k", "cluster_size=4096", 6 << 20, true, B_NONE, 4096 },
	{ "mem 512", "cluster_size=512", 1 << 20, false, B_NONE, 512 },
	{ "mem refcount_bits=1", "cluster_size=4096,refcount_bits=1", 4 << 20,
	  false, B_NONE, 4096 },
	{ "mem 512 refcount_bits=16", "cluster_size=512,refcount_bits=16",
	  1 << 20, false, B_NONE, 512 },
	{ "file extended_l2 64k", "cluster_size=65536,extended_l2=on", 6 << 20,
	  true, B_NONE, 65536 },
	{ "mem compat 0.10", "compat=0.10,cluster_size=4096", 4 << 20, false,
	  B_NONE, 4096 },
	{ "mem lazy_refcounts", "cluster_size=4096,lazy_refcounts=on", 4 << 20,
	  false, B_NONE, 4096 },
	{ "file qcow2 backing", "cluster_size=4096", 4 << 20, true, B_QCOW2,
	  4096 },
	{ "file raw backing extended_l2 32k",
	  "cluster_size=32768,extended_l2=on", 4 << 20, true, B_RAW, 32768 },
	{ "file raw backing compat 0.10", "compat=0.10,cluster_size=4096",
	  4 << 20, true, B_RAW, 4096 },
};

struct run {
	const struct variant *v;
	struct qt_rng rng;
	uint8_t *ref; /* what the image must read as */
	uint8_t *base; /* backing content (zeroes without one) */
	uint8_t *buf;
	struct img_io *mem; /* mem variants: the file, kept across reopen */
	const char *path; /* file variants */
	struct img *img;
	unsigned long n_ops[7];
	bool failed;
};

static int open_image(struct run *r, unsigned flags)
{
	int ret;

	if (r->v->on_file) {
		/* No fdatasync: durability is the crash test's business, and
		 * the driver's flush path runs all the same. */
		struct img_open_opts o = { .format = "qcow2",
					   .flags = flags | IMG_OPEN_UNSAFE };

		ret = img_open(r->path, &o, &r->img);
	} else {
		ret = qt_open_borrowed(r->mem, flags, &r->img);
	}
	if (ret < 0)
		printf("# %s: open failed: %s\n", r->v->name, img_last_error());
	return ret;
}

static int make_backing(struct run *r, const char *base_path)
{
	const struct variant *v = r->v;
	uint64_t size = v->size;
	int ret;

	/* Random data over about half of the backing, zeroes elsewhere. */
	for (uint64_t off = 0; off < size; off += 8192)
		if (qt_below(&r->rng, 2))
			qt_fill(&r->rng, r->base + off, 8192);

	if (v->backing == B_RAW) {
		int fd = open(base_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd < 0 || pwrite(fd, r->base, size, 0) != (ssize_t)size) {
			perror(base_path);
			if (fd >= 0)
				close(fd);
			return -EIO;
		}
		close(fd);
		return 0;
	}

	struct img_create_opts co = { .format = "qcow2", .size = size };
	struct img_open_opts oo = { .format = "qcow2" };
	struct img *b;

	ret = img_create(base_path, &co);
	if (ret < 0)
		return ret;
	ret = img_open(base_path, &oo, &b);
	if (ret < 0)
		return ret;
	for (uint64_t off = 0; off < size && ret >= 0; off += 8192)
		if (!img_is_zero(r->base + off, 8192))
			ret = img_write(b, r->base + off, off, 8192, 0);
	if (ret < 0) {
		img_close(b);
		return ret;
	}
	return img_close(b);
}

static int create_image(struct run *r)
{
	const struct variant *v = r->v;
	struct img_create_opts co = { .format = "qcow2", .size = v->size };
	struct img_kv *kv = NULL;
	size_t n = 0;
	const char *base_path = test_path("base.img");
	int ret;

	if (v->backing != B_NONE) {
		ret = make_backing(r, base_path);
		if (ret < 0)
			return ret;
		co.backing_file = base_path;
		co.backing_fmt = v->backing == B_RAW ? "raw" : "qcow2";
	}
	memcpy(r->ref, r->base, v->size);
	if (!v->on_file)
		return qt_create_mem(v->opts, v->size, NULL, NULL, &r->mem);
	ret = img_kv_parse(v->opts, &kv, &n);
	if (ret < 0)
		return ret;
	co.opts = kv;
	co.n_opts = n;
	r->path = test_path("image.qcow2");
	ret = img_create(r->path, &co);
	img_kv_free(kv, n);
	return ret;
}

static bool compare_all(struct run *r, const char *when)
{
	char what[160];

	snprintf(what, sizeof(what), "%s: after %s", r->v->name, when);
	if (qt_compare(r->img, r->ref, 0, r->v->size, what))
		return true;
	r->failed = true;
	return false;
}

/* A request: mostly unaligned, sometimes cluster-aligned, 1 byte to about
 * three clusters. */
static void pick_range(struct run *r, uint64_t *off, uint64_t *len)
{
	uint64_t cs = r->v->cluster_size, size = r->v->size;
	uint64_t o, l;

	switch (qt_below(&r->rng, 4)) {
	case 0: /* whole clusters */
		o = qt_below(&r->rng, size / cs) * cs;
		l = (1 + qt_below(&r->rng, 3)) * cs;
		break;
	case 1: /* small */
		o = qt_below(&r->rng, size);
		l = 1 + qt_below(&r->rng, 64);
		break;
	default:
		o = qt_below(&r->rng, size);
		l = 1 + qt_below(&r->rng, 3 * cs + 1000);
		break;
	}
	if (l > size - o)
		l = size - o;
	*off = o;
	*len = l;
}

static int do_op(struct run *r, unsigned long i)
{
	uint64_t off, len, dice = qt_below(&r->rng, 100);
	int ret = 0;

	pick_range(r, &off, &len);
	if (dice < 50) {
		r->n_ops[0]++;
		qt_fill(&r->rng, r->buf, len);
		ret = img_write(r->img, r->buf, off, len,
				qt_below(&r->rng, 20) ? 0 : IMG_FUA);
		if (ret >= 0)
			memcpy(r->ref + off, r->buf, len);
	} else if (dice < 65) {
		unsigned flags = qt_below(&r->rng, 2) ? IMG_ZERO_MAY_UNMAP : 0;

		r->n_ops[1]++;
		ret = img_zero(r->img, off, len, flags);
		if (ret >= 0)
			memset(r->ref + off, 0, len);
	} else if (dice < 73) {
		r->n_ops[2]++;
		ret = img_discard(r->img, off, len);
		if (ret < 0)
			goto fail;
		/* The range now reads as before, as zeroes or as the backing:
		 * byte by byte one of those, and stable from now on. */
		ret = img_read(r->img, r->buf, off, len);
		if (ret < 0)
			goto fail;
		for (uint64_t k = 0; k < len; k++) {
			uint8_t b = r->buf[k];

			if (b != r->ref[off + k] && b != 0 &&
			    b != r->base[off + k]) {
				printf("# %s: op %lu: discard [%#" PRIx64
				       ", +%#" PRIx64 ") left %#x at %#" PRIx64
				       "\n",
				       r->v->name, i, off, len, b, off + k);
				r->failed = true;
				break;
			}
		}
		memcpy(r->ref + off, r->buf, len);
	} else if (dice < 88) {
		r->n_ops[3]++;
		ret = img_read(r->img, r->buf, off, len);
		if (ret >= 0 && memcmp(r->buf, r->ref + off, len)) {
			printf("# %s: op %lu: read [%#" PRIx64 ", +%#" PRIx64
			       ") differs from the reference\n",
			       r->v->name, i, off, len);
			r->failed = true;
		}
	} else if (dice < 96) {
		r->n_ops[4]++;
		ret = img_flush(r->img);
		if (ret >= 0)
			compare_all(r, "flush");
	} else {
		r->n_ops[5]++;
		ret = img_close(r->img);
		r->img = NULL;
		if (ret < 0)
			goto fail;
		ret = open_image(r, 0);
		if (ret < 0)
			return ret;
		compare_all(r, "reopen");
	}
fail:
	if (ret < 0) {
		printf("# %s: op %lu [%#" PRIx64 ", +%#" PRIx64
		       "] failed: %s\n",
		       r->v->name, i, off, len, img_last_error());
		r->failed = true;
	}
	return ret;
}

static void external_checks(struct run *r)
{
	const char *img_path = r->path;
	const char *ref_path = test_path("ref.raw");
	int fd, st;

	if (!qt_have_qemu_img()) {
		test_note("qemu-img not installed: external checks skipped");
		return;
	}
	if (!r->v->on_file) {
		img_path = test_path("mem.qcow2");
		CHECK_OK(qt_save_mem(r->mem, img_path));
	}
	st = qt_qemu_check(img_path);
	CHECK_EQ(st, 0);
	if (st)
		printf("# %s: qemu-img check failed\n", r->v->name);

	fd = open(ref_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK(pwrite(fd, r->ref, r->v->size, 0) == (ssize_t)r->v->size);
	close(fd);
	st = test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", ref_path,
		     img_path);
	CHECK_EQ(st, 0);
	if (st)
		printf("# %s: qemu-img compare: image differs from reference\n",
		       r->v->name);
}

static void run_variant(const struct variant *v, uint64_t seed,
			unsigned long n_ops)
{
	struct run r = { .v = v };
	struct img_check res;
	int fails_before = tap_failures;
	int ret;

	r.rng.s = seed;
	r.ref = calloc(1, v->size);
	r.base = calloc(1, v->size);
	r.buf = malloc(4 * v->cluster_size + 1000);
	if (!r.ref || !r.base || !r.buf) {
		CHECK(!"out of memory");
		goto out;
	}
	ret = create_image(&r);
	CHECK_OK(ret);
	if (ret < 0)
		goto out;
	if (open_image(&r, 0) < 0) {
		CHECK(!"open");
		goto out;
	}
	for (unsigned long i = 0; i < n_ops && !r.failed; i++)
		if (do_op(&r, i) < 0 && !r.img)
			break;
	CHECK(!r.failed);
	if (!r.img)
		goto out;
	CHECK_OK(img_flush(r.img));
	CHECK_OK(img_close(r.img));
	r.img = NULL;

	if (open_image(&r, IMG_OPEN_RDONLY) < 0) {
		CHECK(!"reopen read-only");
		goto out;
	}
	CHECK(compare_all(&r, "final reopen"));
	ret = qt_check(r.img, &res, "check: ");
	CHECK_OK(ret);
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(res.leaks, 0);
	CHECK_EQ(res.check_errors, 0);
	img_close(r.img);
	r.img = NULL;
	external_checks(&r);
out:
	printf("%s - %s: %lu writes, %lu zeroes, %lu discards, %lu reads, "
	       "%lu flushes, %lu reopens\n",
	       tap_failures == fails_before ? "ok" : "not ok", v->name,
	       r.n_ops[0], r.n_ops[1], r.n_ops[2], r.n_ops[3], r.n_ops[4],
	       r.n_ops[5]);
	fflush(stdout);
	img_close(r.img);
	img_io_close(r.mem);
	if (v->on_file)
		unlink(test_path("image.qcow2"));
	free(r.ref);
	free(r.base);
	free(r.buf);
}

int main(void)
{
	uint64_t seed;
	unsigned long n_ops = 2000;
	const char *e = getenv("IMG_TEST_OPS");

	if (!qt_have_qcow2())
		test_skip("no qcow2 driver in this build");
	seed = qt_seed(20240611);
	if (e && *e)
		n_ops = strtoul(e, NULL, 0);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(variants); i++)
		run_variant(&variants[i], seed + i, n_ops);
	return test_done();
}

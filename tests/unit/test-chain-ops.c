/* SPDX-License-Identifier: MIT */
/*
 * Crash replay and fault injection for the chain operations: img_commit
 * (overlay with 512-byte clusters, larger than its 4 KiB-cluster base),
 * safe img_rebase onto a shorter image that partly matches the old backing,
 * and the qcow2 refcount width change of img_amend. Each operation runs on
 * faulty backends that record every host write and flush. Every prefix of
 * those logs (commit: every prefix of the base's log with the overlay
 * untouched, then the whole base log and every prefix of the overlay's, the
 * order commit writes in) is a crash; every op number, failed once or from
 * then on, is a fault. Each resulting set of files must open, check with no
 * corruption (leaks are allowed) and read, through the backing file its
 * header names, exactly what the overlay read before the operation; after a
 * successful commit the base alone reads it too.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define MIB (1ull << 20)
#define TOP_SIZE (3 * MIB)
#define BASE_SIZE (2 * MIB)
#define NEW_SIZE (3 * MIB / 2)
/* Fault points tried per operation (spread over its host ops). */
#define MAX_FAULTS 24

struct files {
	struct img_io *base, *top; /* mem backends */
	char new_path[256]; /* rebase: the new backing, a host file */
};

static uint8_t *ref; /* what the overlay reads, TOP_SIZE bytes */
static uint8_t *buf;
static unsigned long n_bad;

static int write_random(struct img *img, struct qt_rng *rng, uint64_t size,
			int n)
{
	uint8_t *p = malloc(256 << 10);
	int ret = p ? 0 : -ENOMEM;

	for (int i = 0; i < n && ret == 0; i++) {
		uint64_t len = 1 + qt_below(rng, 200 << 10);
		uint64_t off = qt_below(rng, size - len);

		qt_fill(rng, p, len);
		if (i % 5 == 4)
			ret = img_zero(img, off, len,
				       i % 2 ? IMG_ZERO_MAY_UNMAP : 0);
		else
			ret = img_write(img, p, off, len, 0);
	}
	free(p);
	return ret;
}

static void attach(struct img *top, struct img *base)
{
	top->backing = base;
	base->depth = top->depth + 1;
	top->flags &= ~IMG_OPEN_NO_BACKING;
}

static struct img *open_copy(struct img_io *mem, unsigned flags)
{
	const uint8_t *data;
	size_t len;
	struct img *img = NULL;

	img_io_mem_data(mem, &data, &len);
	if (qt_open_bytes(data, len, flags, &img) < 0)
		printf("# open: %s\n", img_last_error());
	return img;
}

static bool check_clean(struct img *img, const char *what, const char *layer)
{
	struct img_check res;
	int ret = qt_check(img, &res, NULL);

	if (ret < 0 || res.corruptions || res.check_errors) {
		printf("# %s: %s: check %d, %" PRIu64 " corruptions\n", what,
		       layer, ret, ret < 0 ? 0 : res.corruptions);
		return false;
	}
	return true;
}

/* The overlay in top_mem, on the backing its header names, reads ref. */
static bool verify(struct img_io *base_mem, struct img_io *top_mem,
		   const char *new_path, const char *what)
{
	struct img_open_opts bo = { .format = "qcow2",
				    .flags = IMG_OPEN_RDONLY };
	struct img *top, *b = NULL;
	struct img_info info;
	bool ok;

	top = open_copy(top_mem, IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING);
	if (!top) {
		printf("# %s: overlay does not open\n", what);
		return false;
	}
	ok = check_clean(top, what, "overlay");
	if (img_info(top, &info) < 0)
		ok = false;
	if (ok && info.backing_file && !strcmp(info.backing_file, new_path)) {
		if (img_open(new_path, &bo, &b) < 0)
			ok = false;
	} else if (ok && info.backing_file) {
		b = open_copy(base_mem, IMG_OPEN_RDONLY);
		ok = b && check_clean(b, what, "base");
	}
	if (b)
		attach(top, b);
	if (ok)
		ok = qt_compare(top, ref, 0, TOP_SIZE, what);
	img_close(top); /* and b, attached to it */
	return ok;
}

/* Fresh base and overlay (and the new backing file for rebase). */
static int make_files(struct files *f, uint64_t seed)
{
	struct qt_rng rng = { seed };
	struct img *base, *top, *nb;
	struct img_io *mem;
	int ret;

	ret = qt_create_mem("cluster_size=4096", BASE_SIZE, NULL, NULL,
			    &f->base);
	if (ret == 0)
		ret = qt_create_mem("cluster_size=512", TOP_SIZE, "base.qcow2",
				    "qcow2", &f->top);
	if (ret < 0)
		return ret;
	ret = qt_open_borrowed(f->base, 0, &base);
	if (ret == 0) {
		ret = write_random(base, &rng, BASE_SIZE, 20);
		img_close(base);
	}
	if (ret == 0)
		ret = qt_open_borrowed(f->top, IMG_OPEN_NO_BACKING, &top);
	if (ret < 0)
		return ret;
	base = open_copy(f->base, IMG_OPEN_RDONLY);
	if (!base) {
		img_close(top);
		return -EIO;
	}
	attach(top, base);
	ret = write_random(top, &rng, TOP_SIZE, 12);
	if (ret == 0)
		ret = img_read(top, ref, 0, TOP_SIZE);
	img_close(top);
	if (ret < 0)
		return ret;

	/* The new backing: the base's first MiB, then other data. */
	snprintf(f->new_path, sizeof(f->new_path), "%s",
		 test_path("new.qcow2"));
	ret = qt_create_mem("cluster_size=16384", NEW_SIZE, NULL, NULL, &mem);
	if (ret < 0)
		return ret;
	ret = qt_open_borrowed(mem, 0, &nb);
	if (ret == 0) {
		base = open_copy(f->base, IMG_OPEN_RDONLY);
		ret = base ? img_read(base, buf, 0, MIB) : -EIO;
		img_close(base);
		if (ret == 0)
			ret = img_write(nb, buf, 0, MIB, 0);
		if (ret == 0)
			ret = write_random(nb, &rng, NEW_SIZE, 4);
		img_close(nb);
	}
	if (ret == 0)
		ret = qt_save_mem(mem, f->new_path);
	img_io_close(mem);
	return ret;
}

static void free_files(struct files *f)
{
	img_io_close(f->base);
	img_io_close(f->top);
	f->base = f->top = NULL;
}

enum op { OP_COMMIT, OP_REBASE, OP_AMEND };
static const char *const op_names[] = { "commit", "rebase",
					"amend refcount_bits=64" };

/* Run op on faulty wrappers of f's backends; 0 or the first error. */
static int run_op(enum op op, struct files *f, struct img_io *fb,
		  struct img_io *ft)
{
	static const struct img_kv kv[] = { { "refcount_bits", "64" } };
	struct img *top = NULL, *base = NULL;
	int ret, ret2;

	if (op == OP_AMEND) {
		ret = qt_open_borrowed(ft, IMG_OPEN_NO_BACKING, &top);
		if (ret == 0)
			ret = img_amend(top, kv, 1, NULL);
		ret2 = img_close(top);
		return ret < 0 ? ret : ret2;
	}
	ret = qt_open_borrowed(ft, IMG_OPEN_NO_BACKING, &top);
	if (ret < 0)
		return ret;
	if (op == OP_COMMIT)
		ret = qt_open_borrowed(fb, 0, &base);
	else
		base = open_copy(f->base, IMG_OPEN_RDONLY);
	if (ret < 0 || !base) {
		img_close(top);
		return ret < 0 ? ret : -EIO;
	}
	attach(top, base);
	if (op == OP_COMMIT)
		ret = img_commit(top, NULL, 0, NULL);
	else
		ret = img_rebase(top, f->new_path, "qcow2", 0, NULL);
	ret2 = img_close(top);
	return ret < 0 ? ret : ret2;
}

static int faulty_pair(struct files *f, struct img_io **fb, struct img_io **ft)
{
	struct img_io *b;
	int ret = qt_io_borrow(f->base, &b);

	if (ret == 0)
		ret = img_io_faulty_new(b, fb);
	if (ret == 0)
		ret = qt_io_borrow(f->top, &b);
	if (ret == 0)
		ret = img_io_faulty_new(b, ft);
	return ret;
}

/* Replay every prefix of log (n entries) onto init, with verify(). */
static void replay(struct img_io *fixed, const uint8_t *init, size_t init_len,
		   const struct img_io_log_entry *log, size_t n, bool is_base,
		   const char *new_path, const char *name)
{
	struct img_io *mem;
	char what[160];

	if (img_io_mem_new(init, init_len, &mem) < 0) {
		CHECK(!"mem");
		return;
	}
	for (size_t k = 0; k <= n && n_bad < 5; k++) {
		if (k && img_io_log_apply(mem, &log[k - 1], 1) < 0) {
			CHECK(!"replay");
			break;
		}
		snprintf(what, sizeof(what),
			 "%s: crash after %zu of %zu %s writes", name, k, n,
			 is_base ? "base" : "overlay");
		if (!(is_base ? verify(mem, fixed, new_path, what) :
				verify(fixed, mem, new_path, what)))
			n_bad++;
	}
	img_io_close(mem);
}

static uint8_t *copy_of(struct img_io *mem, size_t *len)
{
	const uint8_t *data;
	uint8_t *c;

	img_io_mem_data(mem, &data, len);
	c = malloc(*len ? *len : 1);
	if (c)
		memcpy(c, data, *len);
	return c;
}

static void test_crash(enum op op, uint64_t seed)
{
	const struct img_io_log_entry *lb, *lt;
	struct img_io *fb = NULL, *ft = NULL, *mem;
	struct files f = { 0 };
	uint8_t *base0, *top0;
	size_t nb, nt, base0_len, top0_len;
	unsigned long bad0 = n_bad;

	test_note("%s: crash replay", op_names[op]);
	CHECK_OK(make_files(&f, seed));
	base0 = copy_of(f.base, &base0_len);
	top0 = copy_of(f.top, &top0_len);
	CHECK_OK(faulty_pair(&f, &fb, &ft));
	if (!base0 || !top0 || !fb || !ft)
		goto out;
	if (run_op(op, &f, fb, ft) < 0) {
		printf("# %s failed: %s\n", op_names[op], img_last_error());
		CHECK(!"operation");
		goto out;
	}
	img_io_faulty_log(fb, &lb, &nb);
	img_io_faulty_log(ft, &lt, &nt);
	printf("# %s: %zu base and %zu overlay log entries\n", op_names[op], nb,
	       nt);
	CHECK(op != OP_COMMIT || nb > 0);
	CHECK(nt > 0);
	/* The overlay as it was while the base changes, then the whole base
	 * log and the overlay's (commit empties the overlay only after the
	 * base is flushed). */
	if (img_io_mem_new(top0, top0_len, &mem) == 0) {
		if (nb)
			replay(mem, base0, base0_len, lb, nb, true, f.new_path,
			       op_names[op]);
		img_io_close(mem);
	}
	if (img_io_mem_new(base0, base0_len, &mem) == 0 &&
	    img_io_log_apply(mem, lb, nb) == 0)
		replay(mem, top0, top0_len, lt, nt, false, f.new_path,
		       op_names[op]);
	if (op == OP_COMMIT) {
		/* Committed: the base alone reads what the overlay read. */
		struct img *b = open_copy(mem, IMG_OPEN_RDONLY);

		CHECK(b && img_size(b) == TOP_SIZE);
		CHECK(b && qt_compare(b, ref, 0, TOP_SIZE, "committed base"));
		img_close(b);
	}
	img_io_close(mem);
	CHECK_EQ(n_bad, bad0);
out:
	img_io_close(fb);
	img_io_close(ft);
	free(base0);
	free(top0);
	free_files(&f);
}

static void test_faults(enum op op, uint64_t seed)
{
	struct img_io *fb = NULL, *ft = NULL;
	struct files f = { 0 };
	uint64_t ops_b, ops_t, total, step;
	unsigned long bad0 = n_bad, failed = 0, tried = 0;
	char what[160];

	test_note("%s: fault injection", op_names[op]);
	CHECK_OK(make_files(&f, seed));
	CHECK_OK(faulty_pair(&f, &fb, &ft));
	CHECK_OK(run_op(op, &f, fb, ft));
	ops_b = img_io_faulty_ops(fb);
	ops_t = img_io_faulty_ops(ft);
	img_io_close(fb);
	img_io_close(ft);
	free_files(&f);
	total = ops_b + ops_t;
	step = total / MAX_FAULTS + 1;
	for (uint64_t at = 1; at <= total && n_bad < bad0 + 5; at += step) {
		for (int sticky = 0; sticky < 2; sticky++) {
			bool on_base = at <= ops_b;
			int ret;

			fb = ft = NULL;
			if (make_files(&f, seed) < 0 ||
			    faulty_pair(&f, &fb, &ft) < 0) {
				CHECK(!"setup");
				goto next;
			}
			img_io_faulty_arm(on_base ? fb : ft,
					  on_base ? at : at - ops_b, EIO,
					  sticky);
			ret = run_op(op, &f, fb, ft);
			tried++;
			failed += ret < 0;
			snprintf(what, sizeof(what),
				 "%s: %s EIO at %s op %" PRIu64, op_names[op],
				 sticky ? "sticky" : "one",
				 on_base ? "base" : "overlay",
				 on_base ? at : at - ops_b);
			if (!verify(f.base, f.top, f.new_path, what))
				n_bad++;
next:
			img_io_close(fb);
			img_io_close(ft);
			free_files(&f);
		}
	}
	printf("# %s: %lu fault runs, %lu failed\n", op_names[op], tried,
	       failed);
	CHECK(failed > 0);
	CHECK_EQ(n_bad, bad0);
}

/* img_set_backing onto a file that does not open changes nothing: the old
 * chain stays attached and the header keeps the old name. */
static void test_set_backing_failure(uint64_t seed)
{
	struct files f = { 0 };
	struct img *top = NULL, *base;
	struct img_info info;

	test_note("set_backing failure keeps the old chain");
	CHECK_OK(make_files(&f, seed));
	CHECK_OK(qt_open_borrowed(f.top, IMG_OPEN_NO_BACKING, &top));
	base = open_copy(f.base, IMG_OPEN_RDONLY);
	if (!top || !base) {
		CHECK(!"open");
		goto out;
	}
	attach(top, base);
	CHECK(img_set_backing(top, "/nonexistent/new.qcow2", "qcow2") < 0);
	CHECK(img_backing(top) == base);
	CHECK(qt_compare(top, ref, 0, TOP_SIZE, "after failed set_backing"));
	CHECK_OK(img_close(top));
	top = NULL;
	CHECK_OK(qt_open_borrowed(f.top, IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING,
				  &top));
	CHECK(top && img_info(top, &info) == 0 && info.backing_file &&
	      !strcmp(info.backing_file, "base.qcow2"));
out:
	img_close(top);
	free_files(&f);
}

int main(void)
{
	uint64_t seed = qt_seed(0xc4a1);

	if (!qt_have_qcow2())
		test_skip("qcow2 driver not built");
	ref = malloc(TOP_SIZE);
	buf = malloc(TOP_SIZE);
	if (!ref || !buf) {
		CHECK(!"setup");
		return test_done();
	}
	test_set_backing_failure(seed);
	for (enum op op = OP_COMMIT; op <= OP_AMEND; op++) {
		test_crash(op, seed + op);
		test_faults(op, seed + op);
	}
	free(ref);
	free(buf);
	return test_done();
}

/* SPDX-License-Identifier: MIT */
/*
 * Fault injection for the qcow2 driver: a fixed workload (create, writes
 * across clusters that allocate many L2 tables and grow the refcount table,
 * zeroes, discards, flushes, close) runs once cleanly on the faulty backend to
 * count its host I/O ops, N; then for every n in 1..N it runs again with op n
 * failing, once with a single -EIO (the workload carries on after the error)
 * and once sticky (every later op fails too, as a dead disk). Torn writes are
 * left out: they tear 8-byte table entries, which a sector-atomic disk never
 * does and which QEMU does not survive either. Each run must report the injected error through some call
 * as a clean -errno with a one-line message, never crash, and leave a file
 * that (if create got through) opens read-only and checks with no corruption;
 * leaked clusters are allowed, since a failed request may strand a cluster
 * it allocated.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define SIZE (4ull << 20)
/* 512-byte clusters: an L2 table per 32 KiB of guest space and a refcount
 * block per 128 KiB of file; with 64-bit refcounts one refcount table
 * cluster covers only 2 MiB of file, so the workload grows the table. */
static const char *const configs[] = {
	"cluster_size=512",
	"cluster_size=512,refcount_bits=64",
};
/* A clean run needs a few thousand ops; past this the driver ran away. */
#define MAX_CLEAN_OPS 200000

struct outcome {
	bool created;
	int n_errors;
	bool unclean; /* an error without a clean message */
	char first_error[256];
};

static void note_error(struct outcome *o, const char *what, int ret)
{
	const char *m = img_last_error();

	if (ret >= 0)
		return;
	if (!o->n_errors++)
		snprintf(o->first_error, sizeof(o->first_error), "%s: %s", what,
			 m);
	if (!*m || strchr(m, '\n') || ret == -EINVAL || ret > 0) {
		o->unclean = true;
		printf("# unclean error from %s: %d \"%s\"\n", what, ret, m);
	}
}

static void run_workload(const char *opts, struct img_io *faulty,
			 struct outcome *o)
{
	struct img_create_opts co = { .format = "qcow2", .size = SIZE };
	struct img_kv *kv = NULL;
	size_t n = 0;
	struct img *img;
	static uint8_t buf[320 << 10];
	int ret;

	memset(o, 0, sizeof(*o));
	if (!buf[1])
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (uint8_t)(i * 13 + (i >> 9));
	if (img_kv_parse(opts, &kv, &n) < 0) {
		note_error(o, "setup", -ENOMEM);
		return;
	}
	co.opts = kv;
	co.n_opts = n;
	ret = img_create_io(faulty, "mem.qcow2", &co);
	img_kv_free(kv, n);
	if (ret < 0) {
		note_error(o, "create", ret);
		return;
	}
	o->created = true;
	ret = qt_open_borrowed(faulty, 0, &img);
	if (ret < 0) {
		note_error(o, "open", ret);
		return;
	}
	note_error(o, "write 1", img_write(img, buf, 0, 100, 0));
	note_error(o, "write 2", img_write(img, buf, 1000, 5000, 0));
	/* 2.25 MiB of data: with 512-byte clusters and 64-bit refcounts one
	 * refcount table cluster covers 2 MiB of file, so the table grows, and
	 * every 32 KiB of guest space needs its own L2 table. */
	for (uint64_t k = 0; k < 48; k++)
		note_error(o, "write loop",
			   img_write(img, buf + k, k * (48 << 10) + 7, 40 << 10,
				     0));
	note_error(o, "zero", img_zero(img, 4096, 8192, 0));
	note_error(o, "zero unmap",
		   img_zero(img, 100000, 70000, IMG_ZERO_MAY_UNMAP));
	note_error(o, "discard", img_discard(img, 200000, 64 << 10));
	note_error(o, "flush 1", img_flush(img));
	note_error(o, "write 3",
		   img_write(img, buf, (3ull << 20) + 5, 300 << 10, 0));
	note_error(o, "rewrite", img_write(img, buf + 1, 3000, 70000, 0));
	note_error(o, "zero 2",
		   img_zero(img, 1 << 20, 256 << 10, IMG_ZERO_MAY_UNMAP));
	note_error(o, "discard 2", img_discard(img, 0, 1 << 20));
	note_error(o, "write fua", img_write(img, buf, 600000, 1000, IMG_FUA));
	note_error(o, "close", img_close(img));
}

/* refcount_table_clusters after the clean run (did the table grow?). */
static uint32_t clean_reftable_clusters;

/* The file left behind must open read-only and check without corruption. */
static bool inspect(struct img_io *mem, const char *what)
{
	struct img *img;
	struct img_check res;
	int ret;

	ret = qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img);
	if (ret < 0) {
		printf("# %s: the file left does not open: %s\n", what,
		       img_last_error());
		return false;
	}
	ret = qt_read_all(img, SIZE);
	if (ret < 0)
		printf("# %s: read failed: %s\n", what, img_last_error());
	if (ret >= 0)
		ret = qt_check(img, &res, NULL);
	img_close(img);
	if (ret < 0) {
		printf("# %s: check failed: %s\n", what, img_last_error());
		return false;
	}
	if (res.corruptions) {
		printf("# %s: %" PRIu64 " corruptions, %" PRIu64 " leaks\n",
		       what, res.corruptions, res.leaks);
		return false;
	}
	return true;
}

/* One run with op fail_at failing (0: none); returns the ops counted. */
static uint64_t run(const char *opts, uint64_t fail_at, int err, bool sticky,
		    bool *ok)
{
	struct img_io *mem, *b, *faulty;
	struct outcome o;
	char what[160];
	uint64_t nops;

	*ok = false;
	if (img_io_mem_new(NULL, 0, &mem) < 0)
		return 0;
	if (qt_io_borrow(mem, &b) < 0 || img_io_faulty_new(b, &faulty) < 0) {
		img_io_close(mem);
		return 0;
	}
	if (fail_at)
		img_io_faulty_arm(faulty, fail_at, err, sticky);
	else
		img_io_faulty_arm(faulty, MAX_CLEAN_OPS, ENOSPC, true);
	run_workload(opts, faulty, &o);
	nops = img_io_faulty_ops(faulty);
	img_io_close(faulty);
	if (!fail_at) {
		const uint8_t *data;
		size_t len;

		img_io_mem_data(mem, &data, &len);
		clean_reftable_clusters = len >= 60 ? img_be32(data + 56) : 0;
	}

	snprintf(what, sizeof(what), "%s: fault at op %" PRIu64 " (%s%s)", opts,
		 fail_at, strerror(err), sticky ? ", sticky" : "");
	*ok = !o.unclean;
	if (fail_at && !o.n_errors) {
		printf("# %s: no call reported the error\n", what);
		*ok = false;
	}
	if (!fail_at && o.n_errors) {
		printf("# clean run failed%s: %s\n",
		       nops >= MAX_CLEAN_OPS ? " (runaway host I/O)" : "",
		       o.first_error);
		*ok = false;
	}
	if (o.created && !inspect(mem, what))
		*ok = false;
	if (!*ok && o.n_errors)
		printf("#   first error: %s\n", o.first_error);
	img_io_close(mem);
	return nops;
}

/* Sanitized builds run this many times slower: there, a fault at every 7th
 * host op; the plain build (make check) covers every one. */
#ifdef __SANITIZE_ADDRESS__
#define FAULT_STRIDE 7
#else
#define FAULT_STRIDE 1
#endif

int main(void)
{
	if (!qt_have_qcow2())
		test_skip("no qcow2 driver in this build");
	for (size_t c = 0; c < IMG_ARRAY_SIZE(configs); c++) {
		const char *opts = configs[c];
		unsigned bad = 0;
		uint64_t n;
		bool ok;

		n = run(opts, 0, 0, false, &ok);
		CHECK(ok);
		test_note("%s: clean run: %" PRIu64
			  " host ops, refcount table of %u clusters",
			  opts, n, clean_reftable_clusters);
		if (strstr(opts, "refcount_bits=64"))
			CHECK(clean_reftable_clusters > 1);
		if (!ok)
			continue;
		for (uint64_t i = 1; i <= n && bad <= 20; i += FAULT_STRIDE) {
			run(opts, i, EIO, false, &ok);
			bad += !ok;
			run(opts, i, ENOSPC, true, &ok);
			bad += !ok;
		}
		if (bad > 20)
			printf("# %s: stopped after 20 failing runs\n", opts);
		CHECK_EQ(bad, 0);
		printf("%s - %s: %" PRIu64 " x 2 fault runs\n",
		       bad ? "not ok" : "ok", opts,
		       (n + FAULT_STRIDE - 1) / FAULT_STRIDE);
	}
	return test_done();
}

/* SPDX-License-Identifier: MIT */
/*
 * Crash replay for VHDX writes: a workload of 64 KiB writes that allocate
 * blocks in every round, with a flush after each round, runs on the faulty backend, which
 * records every host write, truncate and flush. Every prefix of that log
 * (and, after each host flush, random subsets of the next writes in random
 * order) applied to the created file is a crash state. Each must open
 * read-only (the log replayed in memory), check clean and hold every chunk
 * a completed flush covered; then a read-write open replays the log into
 * the file and the image must read the same. A state where a log entry
 * was just flushed but not yet applied must hold the whole round (the entry
 * commits it), and goes through qemu-img too: `qemu-img check -r all` replays our entry and qemu-img
 * reads what img reads.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt-testlib.h"
#include "internal.h"
#include "qcow2-testlib.h"
#include "tap.h"

#define SIZE (16ull << 20)
#define BLOCK_CHUNKS ((1u << 20) / CHUNK)
#define CHUNK (64u << 10)
#define N_CHUNKS (SIZE / CHUNK)
#define ROUNDS 6
#define LOG_OFF (1ull << 20) /* where vhdx_create puts the log */

struct state {
	uint8_t val[ROUNDS + 1][N_CHUNKS]; /* chunk values after flush r */
	uint8_t last[N_CHUNKS]; /* round that last wrote the chunk */
	size_t flush_pos[ROUNDS + 1]; /* log length when flush r returned */
	uint8_t *init;
	size_t init_len;
	const char *dir;
	unsigned long n_checked, n_bad, n_qemu;
};

static int open_vhdx(struct img_io *io, unsigned flags, struct img **out)
{
	struct img_open_opts o = { .format = "vhdx", .flags = flags };
	struct img_io *b;
	int ret = qt_io_borrow(io, &b);

	return ret < 0 ? ret : img_open_io(b, "mem.vhdx", &o, out);
}

static int workload(struct state *s, struct img_io *faulty)
{
	struct qt_rng rng = { qt_seed(0x7d8) };
	uint8_t *buf = malloc(CHUNK);
	struct img *img;
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = open_vhdx(faulty, 0, &img);
	for (unsigned r = 1; r <= ROUNDS && ret >= 0; r++) {
		memcpy(s->val[r], s->val[r - 1], N_CHUNKS);
		for (unsigned i = 0; i < 8 && ret >= 0; i++) {
			/* Two in blocks no earlier round wrote (so that
			 * every flush changes the BAT), the others in
			 * blocks 0 to 2r - 1. */
			uint64_t c =
				i < 2 ? (2 * r + i) * BLOCK_CHUNKS +
						qt_below(&rng, BLOCK_CHUNKS) :
					qt_below(&rng, 2 * r * BLOCK_CHUNKS);
			uint8_t v = (uint8_t)(r * 16 + i + 1);

			memset(buf, v, CHUNK);
			ret = img_write(img, buf, c * CHUNK, CHUNK, 0);
			s->val[r][c] = v;
			s->last[c] = (uint8_t)r;
		}
		if (ret >= 0)
			ret = img_flush(img);
		if (ret >= 0) {
			const struct img_io_log_entry *e;

			img_io_faulty_log(faulty, &e, &s->flush_pos[r]);
		}
	}
	if (ret < 0)
		printf("# workload: %s\n", img_last_error());
	free(buf);
	if (ret >= 0)
		return img_close(img);
	img_close(img);
	return ret;
}

/* The image reads every chunk flush f made stable; check finds nothing. */
static bool verify_img(struct state *s, struct img *img, unsigned f,
		       const char *what)
{
	struct img_check res;
	uint8_t *buf = malloc(2 * CHUNK), *want = buf + CHUNK;
	bool ok = buf != NULL;
	int ret = qt_check(img, &res, NULL);

	if (ret < 0 || res.corruptions) {
		printf("# %s: check %d, %" PRIu64 " corruptions: %s\n", what,
		       ret, ret < 0 ? 0 : res.corruptions, img_last_error());
		ok = false;
	}
	for (uint64_t c = 0; ok && c < N_CHUNKS; c++) {
		if (s->last[c] > f)
			continue; /* written after flush f: either value */
		memset(want, s->val[f][c], CHUNK);
		ret = img_read(img, buf, c * CHUNK, CHUNK);
		if (ret < 0 || memcmp(buf, want, CHUNK)) {
			printf("# %s: chunk %" PRIu64
			       " (flushed at %u) does not read %#x: %s\n",
			       what, c, f, s->val[f][c], img_last_error());
			ok = false;
		}
	}
	free(buf);
	return ok;
}

/* Save mem as a file, let qemu-img replay its log, compare its reads. */
static bool verify_qemu(struct state *s, struct img_io *mem, const char *what)
{
	char cmd[512];

	s->n_qemu++;
	snprintf(cmd, sizeof(cmd), "%s/c.vhdx", s->dir);
	if (qt_save_mem(mem, cmd) < 0)
		return false;
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && qemu-img check -q -r all -f vhdx c.vhdx >&2 && "
		 "qemu-img convert -f vhdx -O raw c.vhdx q.raw && "
		 "qemu-img compare -q -f raw -F raw mine.raw q.raw >&2",
		 s->dir);
	if (system(cmd) != 0) {
		printf("# %s: qemu-img replay/compare failed\n", what);
		return false;
	}
	return true;
}

/* Open the crash state read-only, then read-write (replay), then again. */
static bool verify(struct state *s, struct img_io *mem, unsigned f, bool qemu,
		   const char *what)
{
	struct img *img;
	bool ok;
	int ret;

	s->n_checked++;
	ret = open_vhdx(mem, IMG_OPEN_RDONLY, &img);
	if (ret < 0) {
		printf("# %s: read-only open: %s\n", what, img_last_error());
		return false;
	}
	ok = verify_img(s, img, f, what);
	if (ok && qemu) {
		char path[128];
		struct img_io *raw;

		snprintf(path, sizeof(path), "%s/mine.raw", s->dir);
		ret = img_io_mem_new(NULL, 0, &raw);
		if (ret >= 0) {
			uint8_t *buf = malloc(SIZE);

			ret = buf ? img_read(img, buf, 0, SIZE) : -ENOMEM;
			if (ret >= 0)
				ret = img_io_pwrite(raw, buf, SIZE, 0);
			if (ret >= 0)
				ret = qt_save_mem(raw, path);
			free(buf);
			img_io_close(raw);
		}
		ok = ret >= 0 && verify_qemu(s, mem, what);
	}
	img_close(img);
	if (!ok)
		return false;
	ret = open_vhdx(mem, 0, &img);
	if (ret >= 0)
		ret = img_close(img);
	if (ret >= 0)
		ret = open_vhdx(mem, IMG_OPEN_RDONLY, &img);
	if (ret < 0) {
		printf("# %s: after a read-write open: %s\n", what,
		       img_last_error());
		return false;
	}
	ok = verify_img(s, img, f, what);
	img_close(img);
	return ok;
}

static unsigned flushed_at(const struct state *s, size_t n)
{
	unsigned f = 0;

	while (f < ROUNDS && s->flush_pos[f + 1] <= n)
		f++;
	return f;
}

static void replay(struct state *s, const struct img_io_log_entry *log,
		   size_t n_log)
{
	struct qt_rng rng = { qt_seed(0x7d8) + 1 };
	size_t *idx = malloc(n_log * sizeof(*idx) + 1);
	unsigned log_writes = 0;
	char what[128];

	for (size_t k = 0; k <= n_log && s->n_bad < 5; k++) {
		struct img_io *mem;
		/* Just after the flush that makes a log entry durable. */
		bool committed = k >= 2 && log[k - 1].kind == IMG_LOG_FLUSH &&
				 log[k - 2].kind == IMG_LOG_WRITE &&
				 log[k - 2].file_off == LOG_OFF;

		log_writes += k < n_log && log[k].kind == IMG_LOG_WRITE &&
			      log[k].file_off == LOG_OFF;
		if (img_io_mem_new(s->init, s->init_len, &mem) < 0 ||
		    img_io_log_apply(mem, log, k) < 0) {
			CHECK(!"replay");
			img_io_close(mem);
			break;
		}
		snprintf(what, sizeof(what), "crash after %zu of %zu%s", k,
			 n_log, committed ? " (log entry committed)" : "");
		/* A committed entry makes the whole round durable: its data
		 * was flushed before, and the entry maps the new blocks. */
		if (!verify(s, mem, flushed_at(s, k) + committed,
			    committed && qt_have_qemu_img(), what))
			s->n_bad++;
		img_io_close(mem);
	}
	CHECK(log_writes >= ROUNDS);
	for (size_t h = 0; idx && h < n_log && s->n_bad < 5; h++) {
		size_t m = 0;

		if (h > 0 && log[h - 1].kind != IMG_LOG_FLUSH)
			continue;
		for (size_t e = h; e < n_log && log[e].kind != IMG_LOG_FLUSH;
		     e++)
			if (log[e].kind == IMG_LOG_WRITE)
				idx[m++] = e;
		for (int trial = 0; m >= 2 && trial < 3; trial++) {
			struct img_io *mem;
			size_t keep = 1 + qt_below(&rng, m);
			int ret;

			for (size_t i = m - 1; i > 0; i--) {
				size_t j = qt_below(&rng, i + 1), t = idx[i];

				idx[i] = idx[j];
				idx[j] = t;
			}
			if (img_io_mem_new(s->init, s->init_len, &mem) < 0)
				break;
			ret = img_io_log_apply(mem, log, h);
			for (size_t i = 0; i < keep && ret >= 0; i++)
				ret = img_io_log_apply(mem, &log[idx[i]], 1);
			CHECK_OK(ret);
			snprintf(what, sizeof(what),
				 "%zu of %zu reordered writes after %zu", keep,
				 m, h);
			if (!verify(s, mem, flushed_at(s, h), false, what))
				s->n_bad++;
			img_io_close(mem);
		}
	}
	free(idx);
}

int main(void)
{
	struct state s = { .n_bad = 0 };
	struct img_io *mem = NULL, *b, *faulty = NULL;
	const struct img_io_log_entry *log;
	size_t n_log;
	int ret;

	ret = ft_build("vhdx", SIZE, "block_size=1M", NULL, 0, &s.init,
		       &s.init_len);
	CHECK_OK(ret);
	s.dir = test_tmpdir();
	if (ret < 0 || !s.dir)
		goto out;
	ret = img_io_mem_new(s.init, s.init_len, &mem);
	if (ret >= 0)
		ret = qt_io_borrow(mem, &b);
	if (ret >= 0)
		ret = img_io_faulty_new(b, &faulty);
	CHECK_OK(ret);
	if (ret < 0)
		goto out;
	ret = workload(&s, faulty);
	CHECK_OK(ret);
	if (ret < 0)
		goto out;
	img_io_faulty_log(faulty, &log, &n_log);
	test_note("%zu host ops logged", n_log);
	replay(&s, log, n_log);
	CHECK_EQ(s.n_bad, 0);
	CHECK(s.n_qemu >= ROUNDS || !qt_have_qemu_img());
	printf("%s - %lu crash states checked (%lu through qemu-img), %lu "
	       "bad\n",
	       s.n_bad ? "not ok" : "ok", s.n_checked, s.n_qemu, s.n_bad);
out:
	img_io_close(faulty);
	img_io_close(mem);
	free(s.init);
	return test_done();
}

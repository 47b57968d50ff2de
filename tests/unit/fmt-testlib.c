/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the VHD, VHDX, VDI and VMDK unit tests (see fmt-testlib.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "fmt-testlib.h"
#include "img-driver.h"
#include "internal.h"
#include "qcow2-testlib.h"

static int ft_take(struct img_io *io, uint8_t **buf, size_t *len)
{
	const uint8_t *d;
	size_t n;

	img_io_mem_data(io, &d, &n);
	*buf = malloc(n ? n : 1);
	if (!*buf)
		return -ENOMEM;
	memcpy(*buf, d, n);
	*len = n;
	return 0;
}

int ft_build(const char *fmt, uint64_t size, const char *opts,
	     const struct ft_write *w, unsigned n, uint8_t **buf, size_t *len)
{
	struct img_create_opts co = { .format = fmt, .size = size };
	struct img_kv *kv = NULL;
	size_t n_kv = 0;
	struct img_io *io;
	struct img *img;
	uint8_t *b;
	size_t l;
	int ret;

	if (opts && (ret = img_kv_parse(opts, &kv, &n_kv)) < 0)
		return ret;
	co.opts = kv;
	co.n_opts = n_kv;
	ret = img_io_mem_new(NULL, 0, &io);
	if (ret < 0)
		goto out;
	ret = img_create_io(io, "ft.img", &co);
	if (ret >= 0)
		ret = ft_take(io, &b, &l);
	img_io_close(io);
	if (ret < 0 || !n) {
		if (ret >= 0) {
			*buf = b;
			*len = l;
		}
		goto out;
	}
	ret = ft_open(b, l, fmt, 0, &img);
	free(b);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < n && ret >= 0; i++) {
		uint8_t *p = malloc(w[i].len);

		if (!p) {
			ret = -ENOMEM;
			break;
		}
		memset(p, w[i].val, w[i].len);
		ret = img_write(img, p, w[i].off, w[i].len, 0);
		free(p);
	}
	if (ret >= 0)
		ret = img_flush(img);
	if (ret >= 0)
		ret = ft_take(img_file(img), buf, len);
	img_close(img);
out:
	img_kv_free(kv, n_kv);
	return ret;
}

int ft_open(const uint8_t *buf, size_t len, const char *fmt, unsigned flags,
	    struct img **out)
{
	struct img_open_opts o = {
		.format = fmt,
		.flags = flags | IMG_OPEN_NO_BACKING,
	};
	struct img_io *io;
	int ret;

	ret = img_io_mem_new(buf, len, &io);
	if (ret < 0)
		return ret;
	return img_open_io(io, "ft.img", &o, out);
}

static int ft_walk(struct img *img)
{
	uint64_t size = img_size(img), off = 0;
	uint8_t *p = malloc(1 << 20);
	struct img_check res;
	int ret = 0;

	if (!p)
		return -ENOMEM;
	for (uint64_t pos = 0; pos < size && ret >= 0 && pos < (256u << 20);
	     pos += 1 << 20)
		ret = img_read(img, p, pos, img_min(1 << 20, size - pos));
	while (ret >= 0 && off < size && off < (256u << 20)) {
		struct img_extent ext;

		ret = img_block_status(img, off, size - off, 0, &ext);
		if (ret >= 0)
			off += ext.len;
	}
	memset(&res, 0, sizeof(res));
	if (ret >= 0) {
		ret = img_check(img, 0, &res);
		if (ret == -ENOTSUP)
			ret = 0;
		if (ret >= 0 && res.corruptions)
			ret = img_error(-IMG_ECORRUPT,
					"%s: check found %" PRIu64
					" corruptions",
					img_format(img), res.corruptions);
	}
	free(p);
	return ret;
}

int ft_exercise(const uint8_t *buf, size_t len, const char *fmt, char *msg,
		size_t msg_size)
{
	struct img *img;
	int ret;

	img_clear_error();
	ret = ft_open(buf, len, fmt, IMG_OPEN_RDONLY, &img);
	if (ret >= 0) {
		ret = ft_walk(img);
		img_close(img);
	}
	if (ret >= 0) {
		ret = ft_open(buf, len, fmt, 0, &img);
		if (ret >= 0) {
			uint8_t p[4096];

			memset(p, 0x5a, sizeof(p));
			ret = img_write(img, p, 0,
					img_min(sizeof(p), img_size(img)), 0);
			if (ret >= 0)
				ret = img_flush(img);
			img_close(img);
		}
	}
	snprintf(msg, msg_size, "%s", img_last_error());
	return ret;
}

bool ft_invalid_case(const char *name, const uint8_t *buf, size_t len,
		     const char *fmt, bool at_open, int err, const char *msg)
{
	char got[512], prefix[32];
	struct img *img;
	int ret;

	if (at_open) {
		img_clear_error();
		ret = ft_open(buf, len, fmt, IMG_OPEN_RDONLY, &img);
		snprintf(got, sizeof(got), "%s", img_last_error());
		if (ret >= 0)
			img_close(img);
	} else {
		ret = ft_exercise(buf, len, fmt, got, sizeof(got));
	}
	snprintf(prefix, sizeof(prefix), "%s: ", fmt);
	if (ret >= 0 || (err && ret != -err) || strchr(got, '\n') ||
	    strncmp(got, prefix, strlen(prefix)) ||
	    (msg && !strstr(got, msg))) {
		fprintf(stderr,
			"case %s: got %d (%s) '%s', want %d with '%s%s'\n",
			name, ret, strerror(ret < 0 ? -ret : 0), got, -err,
			prefix, msg ? msg : "");
		return false;
	}
	return true;
}

/* ---- allocation races through one async engine ---- */

#define FT_RACE_REQS 64
#define FT_RACE_MAX_LEN (16 * 512)

struct ft_req {
	struct img_aio_req req;
	uint8_t buf[FT_RACE_MAX_LEN];
	const uint8_t *expect; /* READ: what it must return */
	int *bad;
};

static void ft_race_done(struct img_aio_req *req, int ret)
{
	struct ft_req *t = (struct ft_req *)req;

	if (ret < 0) {
		printf("# %s at %#" PRIx64 " failed: %s\n",
		       req->op == IMG_AIO_READ ? "read" : "request", req->off,
		       req->error ? req->error : "?");
		(*t->bad)++;
	} else if (req->op == IMG_AIO_READ &&
		   memcmp(t->buf, t->expect, req->len)) {
		printf("# read at %#" PRIx64 " returned wrong data\n",
		       req->off);
		(*t->bad)++;
	}
}

static int ft_race_submit(struct img_aio *aio, struct img *img,
			  struct ft_req *t, enum img_aio_op op, uint64_t off,
			  uint64_t len, int *bad)
{
	t->req = (struct img_aio_req){ .op = op,
				       .buf = t->buf,
				       .off = off,
				       .len = len,
				       .done = ft_race_done };
	t->bad = bad;
	return img_aio_submit(aio, img, &t->req);
}

/* Runs [off, off + len) taken so far in a round. */
static bool ft_race_free(uint64_t (*runs)[2], unsigned n, uint64_t off,
			 uint64_t len)
{
	for (unsigned i = 0; i < n; i++)
		if (off < runs[i][1] && runs[i][0] < off + len)
			return false;
	return true;
}

/* One round of racing requests in [base, base + 3 * unit). */
static int ft_race_round(struct img_aio *aio, struct img *img, uint8_t *ref,
			 uint64_t base, uint64_t unit, struct qt_rng *r,
			 struct ft_req *reqs, int *bad)
{
	uint64_t runs[48][2], size = img_size(img), span = 3 * unit;
	unsigned n_runs = 0, n = 0;
	int ret = 0;

	for (unsigned tries = 0; n_runs < 48 && tries < 1000; tries++) {
		uint64_t len = (1 + qt_below(r, FT_RACE_MAX_LEN / 512)) * 512;
		uint64_t off = base + qt_below(r, (span - len) / 512 + 1) * 512;

		/* The first two cross the boundaries between the units. */
		if (n_runs < 2) {
			len = len < 1024 ? 1024 : len;
			off = base + (n_runs + 1) * unit -
			      512 * (1 + qt_below(r, len / 512 - 1));
		}
		if (!ft_race_free(runs, n_runs, off, len))
			continue;
		runs[n_runs][0] = off;
		runs[n_runs++][1] = off + len;
	}
	for (unsigned i = 0; i < n_runs && ret >= 0; i++) {
		struct ft_req *t = &reqs[n++];
		uint64_t off = runs[i][0], len = runs[i][1] - off;
		bool zero = i >= 2 && qt_below(r, 8) == 0;

		if (zero) {
			memset(ref + off, 0, len);
			ret = ft_race_submit(aio, img, t, IMG_AIO_ZERO, off,
					     len, bad);
			continue;
		}
		qt_fill(r, t->buf, len);
		memcpy(ref + off, t->buf, len);
		ret = ft_race_submit(aio, img, t, IMG_AIO_WRITE, off, len, bad);
		if (i == n_runs / 2 && ret >= 0)
			ret = ft_race_submit(aio, img, &reqs[n++],
					     IMG_AIO_FLUSH, 0, 0, bad);
	}
	/* Reads of 4 KiB outside the round's units. */
	while (n < FT_RACE_REQS && ret >= 0) {
		uint64_t off = qt_below(r, size / 4096) * 4096;

		if (off + 4096 > base && off < base + span)
			continue;
		reqs[n].expect = ref + off;
		ret = ft_race_submit(aio, img, &reqs[n++], IMG_AIO_READ, off,
				     4096, bad);
	}
	img_aio_drain(aio);
	return ret;
}

/* The races on the open img; the number of problems found. */
static int ft_races_on(struct img *img, uint8_t *ref, uint64_t unit,
		       unsigned rounds, uint64_t seed)
{
	struct qt_rng r = { qt_seed(seed) };
	uint64_t size = img_size(img);
	struct ft_req *reqs = calloc(FT_RACE_REQS, sizeof(*reqs));
	struct img_aio *aio = NULL;
	int bad = 0, ret;

	if (!reqs || (3ull * rounds + 1) * unit > size) {
		free(reqs);
		printf("# ft_aio_races: %u rounds of 3 x %" PRIu64
		       " bytes do not fit %" PRIu64 " bytes\n",
		       rounds, unit, size);
		return 1;
	}
	ret = img_aio_new(2, &aio);
	printf("# engine %s\n", ret < 0 ? "missing" :
				img_aio_uses_ring(aio) ?
					  "with an io_uring ring" :
					  "without a ring (pool only)");
	for (unsigned k = 0; k < rounds && ret >= 0; k++)
		ret = ft_race_round(aio, img, ref, (3 * k + 1) * unit, unit, &r,
				    reqs, &bad);
	/* Overwrites in place and reads, in the units now allocated. */
	for (unsigned k = 0; k < 2 * rounds && ret >= 0; k++) {
		bool used[FT_RACE_REQS] = { false };
		uint64_t n4k = 3 * rounds * unit / 4096;

		for (unsigned i = 0; i < FT_RACE_REQS && ret >= 0; i++) {
			uint64_t slot = qt_below(&r, FT_RACE_REQS);
			uint64_t off =
				unit + (slot * (n4k / FT_RACE_REQS) +
					qt_below(&r, n4k / FT_RACE_REQS)) *
					       4096;
			struct ft_req *t = &reqs[i];

			if (used[slot])
				continue;
			used[slot] = true;
			if (qt_below(&r, 2)) {
				qt_fill(&r, t->buf, 4096);
				memcpy(ref + off, t->buf, 4096);
				ret = ft_race_submit(aio, img, t, IMG_AIO_WRITE,
						     off, 4096, &bad);
			} else {
				t->expect = ref + off;
				ret = ft_race_submit(aio, img, t, IMG_AIO_READ,
						     off, 4096, &bad);
			}
		}
		img_aio_drain(aio);
	}
	img_aio_free(aio);
	free(reqs);
	if (ret < 0) {
		printf("# ft_aio_races: %s\n", img_last_error());
		bad++;
	}
	if (!qt_compare(img, ref, 0, size, "after the races"))
		bad++;
	return bad;
}

/* qemu-img check of the image at path, and qemu-img compare with ref
 * (written to path + ".ref"): 0, 1 on a difference, 77 without qemu-img. */
static int ft_qemu_verify(const char *fmt, const char *path, const uint8_t *ref,
			  uint64_t size)
{
	char ref_path[600], cmd[1400];
	FILE *f;
	int st;

	if (!qt_have_qemu_img())
		return 77;
	snprintf(ref_path, sizeof(ref_path), "%s.ref", path);
	f = fopen(ref_path, "wb");
	if (!f || fwrite(ref, 1, size, f) != size) {
		if (f)
			fclose(f);
		return 1;
	}
	if (fclose(f))
		return 1;
	fflush(stdout);
	snprintf(cmd, sizeof(cmd),
		 "qemu-img check -f %s '%s' >&2 && "
		 "qemu-img compare -f raw -F %s '%s' '%s' >&2",
		 fmt, path, fmt, ref_path, path);
	st = system(cmd);
	return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

int ft_aio_races(const char *fmt, const char *path, uint8_t *ref, uint64_t unit,
		 unsigned rounds, uint64_t seed)
{
	struct img_open_opts oo = { .format = fmt };
	struct img *img;
	uint64_t size;
	int bad, ret;

	ret = img_open(path, &oo, &img);
	if (ret < 0) {
		printf("# open '%s': %s\n", path, img_last_error());
		return 1;
	}
	size = img_size(img);
	bad = ft_races_on(img, ref, unit, rounds, seed);
	ret = img_close(img);
	if (ret >= 0)
		ret = img_open(path, &oo, &img);
	if (ret < 0) {
		printf("# close and reopen '%s': %s\n", path, img_last_error());
		return bad + 1;
	}
	if (!qt_compare(img, ref, 0, size, "after reopening"))
		bad++;
	img_close(img);
	ret = ft_qemu_verify(fmt, path, ref, size);
	if (ret == 77)
		printf("# qemu-img not installed: external checks skipped\n");
	return bad + (ret == 1);
}

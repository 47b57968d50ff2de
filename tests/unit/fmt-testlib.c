/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the VHD, VHDX, VDI and VMDK unit tests (see fmt-testlib.h).
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

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

/* ---- many writes in flight (ft_aio_writes) ---- */

#define FA_SLOTS 32

struct fa_slot {
	struct img_aio_req req;
	uint8_t *expect; /* a read: the model's bytes at submission */
	bool busy;
};

struct fa_run {
	struct fa_slot slot[FA_SLOTS];
	unsigned bad;
	uint64_t rng;
};

static uint64_t fa_below(struct fa_run *r, uint64_t n)
{
	r->rng ^= r->rng << 13;
	r->rng ^= r->rng >> 7;
	r->rng ^= r->rng << 17;
	return r->rng % n;
}

static void fa_done(struct img_aio_req *req, int ret)
{
	struct fa_slot *t = (struct fa_slot *)req;
	struct fa_run *r = req->opaque;

	if (ret < 0) {
		printf("# aio op %d at %" PRIu64 "+%" PRIu64 " failed: %s\n",
		       req->op, req->off, req->len,
		       req->error ? req->error : "?");
		r->bad++;
	} else if (req->op == IMG_AIO_READ &&
		   memcmp(req->buf, t->expect, req->len)) {
		uint64_t i = 0;

		while (((uint8_t *)req->buf)[i] == t->expect[i])
			i++;
		printf("# aio read at %" PRIu64 "+%" PRIu64 ": byte %#" PRIx64
		       " is %#x, expected %#x\n",
		       req->off, req->len, req->off + i,
		       ((uint8_t *)req->buf)[i], t->expect[i]);
		r->bad++;
	}
	free(req->buf);
	free(t->expect);
	t->expect = NULL;
	t->busy = false;
}

/* Whether [off, off + len) overlaps a request in flight (writes and zeroes
 * only, unless all). */
static bool fa_conflict(const struct fa_run *r, uint64_t off, uint64_t len,
			bool all)
{
	for (int i = 0; i < FA_SLOTS; i++) {
		const struct img_aio_req *q = &r->slot[i].req;

		if (!r->slot[i].busy || q->op == IMG_AIO_FLUSH ||
		    (!all && q->op == IMG_AIO_READ))
			continue;
		if (off < q->off + q->len && q->off < off + len)
			return true;
	}
	return false;
}

/* A range near block hot: a small unaligned piece, a piece of whole
 * sectors, a whole block, or a run across the block's end. */
static void fa_range(struct fa_run *r, uint64_t size, uint64_t bs, uint64_t hot,
		     uint64_t *off, uint64_t *len)
{
	uint64_t kind = fa_below(r, 10), base;

	base = (hot ? hot - 1 : 0) * bs;
	if (kind < 4) {
		*len = 1 + fa_below(r, 8192);
		*off = base + fa_below(r, 3 * bs);
	} else if (kind < 7) {
		*len = 512 * (1 + fa_below(r, 128));
		*off = base + 512 * fa_below(r, 3 * bs / 512);
	} else if (kind < 8) {
		*len = bs;
		*off = (hot + fa_below(r, 2)) * bs;
	} else {
		*len = 1 + fa_below(r, bs);
		*off = (hot + 1) * bs - fa_below(r, *len);
	}
	if (*off >= size)
		*off = size - 1;
	*len = img_min(*len, size - *off);
}

/* Deliver completions; block for one if wait. */
static void fa_reap(struct img_aio *aio, bool wait)
{
	if (img_aio_poll(aio) == 0 && wait)
		img_aio_wait(aio);
}

/* The run itself (ft_aio_run): failures, or -errno. */
static int fa_writes(struct img *img, uint8_t *ref, uint64_t size,
		     uint64_t block_size, unsigned n_ops, uint64_t seed)
{
	uint64_t n_blocks = (size + block_size - 1) / block_size, hot = 1;
	uint64_t epoch = 0;
	struct fa_run *r = calloc(1, sizeof(*r));
	struct img_aio *aio;
	unsigned done = 0;
	int ret;

	if (!r)
		return -ENOMEM;
	r->rng = seed | 1;
	ret = img_aio_new(4, &aio);
	if (ret < 0) {
		free(r);
		return ret;
	}
	while (done < n_ops) {
		struct fa_slot *t = NULL;
		uint64_t kind = fa_below(r, 100), off = 0, len = 0;
		bool write = kind < 70;

		for (int i = 0; i < FA_SLOTS && !t; i++)
			if (!r->slot[i].busy)
				t = &r->slot[i];
		if (!t) {
			fa_reap(aio, true);
			continue;
		}
		/* Every 64 requests the hot block moves on, in a scattered
		 * order that visits every block before it comes back, and
		 * starts with a small write near its start: the rest of a
		 * new block must read as zeroes while it is partly written. */
		if (done / 64 != epoch) {
			epoch = done / 64;
			hot = (hot * 5 + 3) % n_blocks;
		}
		memset(&t->req, 0, sizeof(t->req));
		t->req.opaque = r;
		t->req.done = fa_done;
		if (kind >= 95 && done % 64) {
			t->req.op = IMG_AIO_FLUSH;
		} else if (!(done % 64)) {
			kind = 0;
			write = true;
			off = img_min(hot * block_size + fa_below(r, 65536),
				      size - 1);
			len = img_min(1 + fa_below(r, 8192), size - off);
		} else if (kind >= 85) {
			/* The end of the hot block, which writes reach last. */
			len = 1 + fa_below(r, 4096);
			off = (hot + 1) * block_size - len;
			if (off + len > size)
				off = size - len;
		} else {
			fa_range(r, size, block_size, hot, &off, &len);
		}
		if (len) {
			if (fa_conflict(r, off, len, write)) {
				fa_reap(aio, false);
				continue;
			}
			t->req.off = off;
			t->req.len = len;
			t->req.buf = malloc(len);
			if (!t->req.buf) {
				ret = -ENOMEM;
				break;
			}
		}
		if (kind < 60) {
			t->req.op = IMG_AIO_WRITE;
			for (uint64_t i = 0; i < len; i++)
				((uint8_t *)t->req.buf)[i] =
					(uint8_t)(done + i / 512 + 1);
			memcpy(ref + off, t->req.buf, len);
		} else if (kind < 70) {
			t->req.op = IMG_AIO_ZERO;
			memset(ref + off, 0, len);
		} else if (kind < 95) {
			t->req.op = IMG_AIO_READ;
			t->expect = malloc(len);
			if (!t->expect) {
				ret = -ENOMEM;
				break;
			}
			memcpy(t->expect, ref + off, len);
		}
		t->busy = true;
		ret = img_aio_submit(aio, img, &t->req);
		if (ret < 0) {
			printf("# aio submit failed: %s\n", img_last_error());
			t->busy = false;
			r->bad++;
			break;
		}
		done++;
	}
	img_aio_free(aio);
	if (ret != -ENOMEM)
		ret = (int)r->bad;
	free(r);
	return ret;
}

/* ---- a host file whose writes are delayed at random ---- */

static struct img_io_ops fs_base, fs_slow;
static atomic_uint fs_seq;

/* Sleep 0-500 us on about one write in four, so that planned writes, their
 * commits and the transfers around them interleave. */
static void fs_jitter(void)
{
	uint64_t h = (atomic_fetch_add(&fs_seq, 1) + 1) * 0x9e3779b97f4a7c15ull;
	struct timespec ts = { 0, (long)((h >> 20) % 500) * 1000 };

	if ((h >> 62) == 0)
		nanosleep(&ts, NULL);
}

static int fs_pwrite(struct img_io *io, const void *buf, uint64_t len,
		     uint64_t off)
{
	fs_jitter();
	return fs_base.pwrite(io, buf, len, off);
}

static int fs_submit(struct img_io *io, struct img_io_vec *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (v[i].write) {
			fs_jitter();
			break;
		}
	return fs_base.submit(io, v, n);
}

/* Open path as fmt through a wrapper of its host file *file (closed by the
 * caller after the image) whose writes fs_jitter delays. */
static int fa_open_slow(const char *path, const char *fmt, struct img_io **file,
			struct img **out)
{
	struct img_open_opts o = { .format = fmt };
	struct img_io *b;
	int ret;

	ret = img_io_open(path, 0, IMG_IO_AUTO, file);
	if (ret < 0)
		return ret;
	ret = qt_io_borrow(*file, &b);
	if (ret < 0) {
		img_io_close(*file);
		return ret;
	}
	fs_base = *b->ops;
	fs_slow = fs_base;
	fs_slow.pwrite = fs_pwrite;
	if (fs_base.submit)
		fs_slow.submit = fs_submit;
	b->ops = &fs_slow;
	ret = img_open_io(b, path, &o, out);
	if (ret < 0)
		img_io_close(*file);
	return ret;
}

int ft_aio_run(const char *path, const char *fmt, uint8_t *ref, uint64_t size,
	       uint64_t block_size, unsigned n_ops, uint64_t seed)
{
	struct img_open_opts o = { .format = fmt };
	struct img_check res = { 0 };
	struct img_io *file;
	struct img *img;
	int ret, bad;

	ret = fa_open_slow(path, fmt, &file, &img);
	if (ret < 0) {
		printf("# open %s: %s\n", path, img_last_error());
		return 1;
	}
	bad = fa_writes(img, ref, size, block_size, n_ops, seed);
	if (bad < 0) {
		printf("# the run could not start: %s\n", strerror(-bad));
		bad = 1;
	}
	bad += !qt_compare(img, ref, 0, size, "after the run");
	if (img_close(img) < 0) {
		printf("# close: %s\n", img_last_error());
		bad++;
	}
	img_io_close(file);
	if (img_open(path, &o, &img) < 0) {
		printf("# reopen %s: %s\n", path, img_last_error());
		return bad + 1;
	}
	bad += !qt_compare(img, ref, 0, size, "after reopening");
	ret = qt_check(img, &res, "# ");
	if (ret < 0 || res.corruptions || res.leaks) {
		printf("# check: %d, %" PRIu64 " corruptions, %" PRIu64
		       " leaks\n",
		       ret, res.corruptions, res.leaks);
		bad++;
	}
	img_close(img);
	return bad;
}

int ft_qemu_compare(const uint8_t *ref, uint64_t size, const char *fmt,
		    const char *path)
{
	char ref_path[4096], cmd[8400];
	FILE *f;
	int st;

	if (!qt_have_qemu_img())
		return 77;
	snprintf(ref_path, sizeof(ref_path), "%s.ref.raw", path);
	f = fopen(ref_path, "wb");
	if (!f)
		return -1;
	st = fwrite(ref, 1, size, f) == size ? 0 : -1;
	if (fclose(f) != 0 || st < 0)
		return -1;
	fflush(stdout);
	snprintf(cmd, sizeof(cmd), "qemu-img compare -q -f raw -F %s '%s' '%s'",
		 fmt, ref_path, path);
	st = system(cmd);
	remove(ref_path);
	return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/* ---- a failing host op at every point of a workload (ft_fault_run) ---- */

/* Writes in blocks of bs: new blocks partly and wholly written, a write
 * across a block boundary, overwrites in place, a partial sector. */
static void ff_workload(uint64_t bs, struct ft_write w[6])
{
	w[0] = (struct ft_write){ bs / 2 + 100, 5000, 0x11 };
	w[1] = (struct ft_write){ 2 * bs - 4096, 8192, 0x22 };
	w[2] = (struct ft_write){ 0, 3000, 0x33 };
	w[3] = (struct ft_write){ 5 * bs, 2 * bs, 0x44 };
	w[4] = (struct ft_write){ 3 * bs + 513, 1000, 0x55 };
	w[5] = (struct ft_write){ bs / 2 + 50, 100, 0x66 };
}

/* One run with host op fail_at failing (0: none); the number of host ops
 * in *n_ops, failures printed and counted. */
struct ff_bufs {
	uint8_t *ref, *known, *buf; /* 8 blocks each */
};

static unsigned ff_one(const uint8_t *init, size_t init_len, const char *fmt,
		       uint64_t bs, uint64_t fail_at, uint64_t *n_ops,
		       const struct ff_bufs *fb)
{
	struct img_open_opts o = { .format = fmt };
	uint64_t size = 8 * bs;
	uint8_t *ref = fb->ref, *known = fb->known, *buf = fb->buf;
	struct img_io *mem = NULL, *b, *f;
	struct img_check res = { 0 };
	struct ft_write w[6];
	struct img *img;
	unsigned bad = 0;
	bool closed_ok;
	int ret;

	ff_workload(bs, w);
	memset(ref, 0, size);
	if (img_io_mem_new(init, init_len, &mem) < 0 ||
	    qt_io_borrow(mem, &b) < 0 || img_io_faulty_new(b, &f) < 0) {
		printf("# out of memory\n");
		bad = 1;
		goto out;
	}
	memset(known, 1, size);
	img_io_faulty_arm(f, fail_at, EIO, false);
	if (img_open_io(f, "ft.img", &o, &img) < 0)
		goto out; /* the failure hit open: nothing was written */
	for (unsigned i = 0; i < 6; i++) {
		uint8_t *p = malloc(w[i].len);

		if (!p) {
			bad++;
			break;
		}
		memset(p, w[i].val, w[i].len);
		ret = img_write(img, p, w[i].off, w[i].len, 0);
		free(p);
		memset(ret < 0 ? known + w[i].off : ref + w[i].off,
		       ret < 0 ? 0 : w[i].val, w[i].len);
	}
	/* A failed flush is retried by close; a failed close may leave the
	 * last writes unnamed. */
	img_flush(img);
	*n_ops = img_io_faulty_ops(f);
	closed_ok = img_close(img) >= 0;
	if (!closed_ok)
		memset(known, 0, size);

	const uint8_t *d;
	size_t n;

	img_io_mem_data(mem, &d, &n);
	if (ft_open(d, n, fmt, 0, &img) < 0) {
		printf("# fault at op %" PRIu64 ": reopen: %s\n", fail_at,
		       img_last_error());
		bad++;
		goto out;
	}
	ret = img_read(img, buf, 0, size);
	for (uint64_t i = 0; ret >= 0 && i < size; i++)
		if (known[i] && buf[i] != ref[i]) {
			printf("# fault at op %" PRIu64 ": byte %#" PRIx64
			       " is %#x, expected %#x\n",
			       fail_at, i, buf[i], ref[i]);
			bad++;
			break;
		}
	if (ret < 0) {
		printf("# fault at op %" PRIu64 ": read: %s\n", fail_at,
		       img_last_error());
		bad++;
	}
	if (img_check(img, 0, &res) < 0 || res.corruptions) {
		printf("# fault at op %" PRIu64 ": check: %" PRIu64
		       " corruptions\n",
		       fail_at, res.corruptions);
		bad++;
	}
	img_close(img);
out:
	img_io_close(mem);
	return bad;
}

unsigned ft_fault_run(const char *fmt, const char *opts, uint64_t bs)
{
	struct ff_bufs fb = { malloc(8 * bs), malloc(8 * bs), malloc(8 * bs) };
	uint64_t n_ops = 0, ignored;
	uint8_t *init = NULL;
	unsigned bad = 1;
	size_t len;

	if (!fb.ref || !fb.known || !fb.buf)
		printf("# out of memory\n");
	else if (ft_build(fmt, 8 * bs, opts, NULL, 0, &init, &len) < 0)
		printf("# %s: create: %s\n", fmt, img_last_error());
	else
		bad = ff_one(init, len, fmt, bs, 0, &n_ops, &fb);
	for (uint64_t k = 1; init && k <= n_ops; k++)
		bad += ff_one(init, len, fmt, bs, k, &ignored, &fb);
	printf("# %s: a failure at each of %" PRIu64 " host ops\n", fmt, n_ops);
	free(init);
	free(fb.ref);
	free(fb.known);
	free(fb.buf);
	return bad;
}

int ft_stale_run(const char *fmt, const char *opts, uint64_t bs,
		 uint64_t keep_tail)
{
	static const struct ft_write w = { 100, 1000, 0x11 };
	uint8_t *img_bytes, *file, *buf = malloc(bs), pat[1000];
	uint64_t stale = 3 * bs;
	size_t len;
	struct img *img;
	int ret, bad = 0;

	if (!buf || ft_build(fmt, 8 * bs, opts, &w, 1, &img_bytes, &len) < 0) {
		printf("# %s: create: %s\n", fmt, img_last_error());
		free(buf);
		return 1;
	}
	/* The file as a crash leaves it: blocks written past the end of the
	 * used area that no table names yet. */
	len -= keep_tail;
	file = malloc(len + stale);
	if (!file) {
		free(buf);
		free(img_bytes);
		return 1;
	}
	memcpy(file, img_bytes, len);
	memset(file + len, 0xee, stale);
	memset(pat, 0x22, sizeof(pat));
	ret = ft_open(file, len + stale, fmt, 0, &img);
	if (ret >= 0) {
		ret = img_write(img, pat, 2 * bs + 5000, sizeof(pat), 0);
		if (ret >= 0)
			ret = img_read(img, buf, 2 * bs, bs);
		img_close(img);
	}
	if (ret < 0) {
		printf("# %s: %s\n", fmt, img_last_error());
		bad++;
	}
	for (uint64_t i = 0; ret >= 0 && i < bs; i++) {
		uint8_t want = i >= 5000 && i < 5000 + sizeof(pat) ? 0x22 : 0;

		if (buf[i] != want) {
			printf("# %s: byte %#" PRIx64
			       " of a new block placed over a lost one is %#x, "
			       "expected %#x\n",
			       fmt, 2 * bs + i, buf[i], want);
			bad++;
			break;
		}
	}
	free(file);
	free(img_bytes);
	free(buf);
	return bad;
}

/* SPDX-License-Identifier: MIT */
/*
 * img convert: copy one or more source images (concatenated) into a new or
 * existing target, with qemu-img 7.2's syntax, semantics and exit codes. The
 * source is walked with img_block_status so holes and zero ranges cost
 * nothing on a target that already reads as zero; data is read in large
 * chunks with several reads in flight on the async pool, scanned for all-zero
 * blocks of the -S size (aligned to the target's cluster size, so skipping a
 * block never splits a cluster write), and written in order (or out of order
 * with -W). With -B only what the source's top layer allocates is copied and
 * the rest is left to the target's backing file, as qemu-img does.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "convert-profile.h"
#include "convert-compress.h"
#include "convert-rbd.h"

/*
 * 2 MiB chunks: large enough that the qcow2 write path allocates whole runs
 * of clusters at once and per-request overhead vanishes, small enough that
 * 8-16 of them in flight stay cache friendly.
 */
#define CV_CHUNK (2ull << 20)
/* Zero requests are cheap but are capped so -p still moves. */
#define CV_ZERO_MAX (1ull << 30)
#define CV_MAX_SLOTS 16
#define CV_DEFAULT_SLOTS 8
#define CV_MAX_SPARSE (16ull << 20)

static inline uint64_t cv_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/*
 * All-zero test: the first 16 bytes by hand, then the buffer against itself
 * shifted by 16, which memcmp vectorises.
 */
static bool cv_is_zero(const uint8_t *buf, size_t len)
{
	static const uint8_t zero16[16];

	if (len <= 16)
		return memcmp(buf, zero16, len) == 0;
	return memcmp(buf, zero16, 16) == 0 &&
	       memcmp(buf, buf + 16, len - 16) == 0;
}

enum cv_kind {
	CV_SKIP, /* target already reads the right thing there */
	CV_ZERO, /* write zeroes */
	CV_DATA, /* read, then write what is not zero */
};

struct cv_src {
	const char *path;
	struct img *img;
	uint64_t size;
	uint64_t base; /* target offset of this source's byte 0 */
};

enum cv_slot_state {
	SLOT_FREE,
	SLOT_READING,
	SLOT_READY, /* data in buf (or a zero range): waiting to write */
};

struct cv;

struct cv_slot {
	struct cv *cv;
	enum cv_slot_state state;
	enum cv_kind kind;
	uint64_t seq; /* production order, for in-order writes */
	uint64_t off; /* target offset */
	uint64_t len;
	uint8_t *buf;
	struct img_aio_req req;
	int ret;
	struct cv_slot *next_done; /* completion list link */
};

struct cv {
	struct cv_src *srcs;
	unsigned n_srcs;
	struct img *dst;
	uint64_t total;
	unsigned bs_flags; /* IMG_BS_NO_CHAIN with -B */
	bool has_backing; /* target has (or is given) a backing file */
	uint64_t backing_size; /* target's backing size, with has_backing */
	bool zero_init; /* unwritten target ranges read as zero */
	uint64_t min_sparse; /* -S; 0: no zero detection */
	uint64_t unit; /* zero detection granularity */
	bool in_order;

	/* producer cursor */
	unsigned cur_src;
	uint64_t cur_soff;
	uint64_t cur_ext_end;
	enum cv_kind cur_kind;
	bool eof;

	struct img_aio *aio;
	struct cv_slot slots[CV_MAX_SLOTS];
	unsigned n_slots;
	unsigned n_busy;
	uint64_t next_seq;
	uint64_t next_write_seq;

	pthread_mutex_t lock;
	struct cv_slot *done_head; /* completions, under lock */

	int err; /* first error, under lock */
	char errmsg[512]; /* under lock */
	bool failed; /* main thread's copy of err != 0 */
	struct cli_progress progress;
	struct cvc *cvc; /* -c: the compression pipeline */
	int compress_level;
};

struct cv_chunk {
	enum cv_kind kind;
	struct cv_src *src;
	uint64_t soff;
	uint64_t toff;
	uint64_t len;
};

static void cv_usage(void)
{
	printf("usage: img convert [--target-is-zero] [-U] [-C] [-p] [-q] [-n]\n"
	       "        [-f fmt] [-t cache] [-T src_cache] [-O output_fmt]\n"
	       "        [-B backing_file [-F backing_fmt]] [-o options]\n"
	       "        [-S sparse_size] [-m num_coroutines] [-W]\n"
	       "        filename [filename2 [...]] output_filename\n"
	       "\n"
	       "Convert one or more images (concatenated) to output_filename in\n"
	       "output_fmt (default raw). Holes and zeroes in the source are not\n"
	       "written; data is copied in large requests, several at a time.\n"
	       "\n"
	       "  -f fmt            source format (default: probe)\n"
	       "  -O output_fmt     target format (default: raw)\n"
	       "  -o options        target creation options ('-o help' lists them)\n"
	       "  -B backing_file   target backing file; ranges the source's top\n"
	       "                    image does not allocate are left to it\n"
	       "                    (on an rbd: target, rbd:POOL/IMAGE@SNAP: the\n"
	       "                    target becomes a clone of that snapshot)\n"
	       "  -F backing_fmt    format of the backing file (required with -B)\n"
	       "  -n                do not create the target: it must exist\n"
	       "  --target-is-zero  with -n: the target already reads as zeroes\n"
	       "  --snapshots       copy the internal snapshots too, oldest first\n"
	       "                    (qcow2 or rbd: source; -O qcow2 or rbd: target)\n"
	       "  --bitmaps         copy the source's persistent bitmaps too\n"
	       "  --skip-broken-bitmaps  with --bitmaps: leave out bitmaps in use\n"
	       "  --profile azure|esxi|hyperv  a cloud's format and options\n"
	       "  -S sparse_size    skip all-zero runs of this size (default 4k;\n"
	       "                    0 fully allocates the target)\n"
	       "  -t cache          target cache mode (default unsafe)\n"
	       "  -T src_cache      source cache mode (default writeback)\n"
	       "  -m num            requests in flight, 1..16 (default 8)\n"
	       "  -W                allow out-of-order writes\n"
	       "  -U                open the sources without locking (shared)\n"
	       "  -p                show progress\n"
	       "  -q                quiet\n");
}

/* Remove every entry whose key is key; return the last value (strdup'd). */
static int cv_kv_take(struct img_kv *kv, size_t *n, const char *key,
		      char **value)
{
	size_t i = 0;

	while (i < *n) {
		if (strcmp(kv[i].key, key) != 0) {
			i++;
			continue;
		}
		if (value) {
			free(*value);
			*value = kv[i].value ? strdup(kv[i].value) : NULL;
			if (kv[i].value && !*value)
				return -ENOMEM;
		}
		free((void *)kv[i].key);
		free((void *)kv[i].value);
		memmove(&kv[i], &kv[i + 1], (*n - i - 1) * sizeof(kv[0]));
		(*n)--;
	}
	return 0;
}

static bool cv_kv_has(const struct img_kv *kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(kv[i].key, key) == 0 || strcmp(kv[i].key, "?") == 0)
			return true;
	return false;
}

static enum cv_kind cv_classify(struct cv *cv, const struct img_extent *ext)
{
	enum cv_kind kind;

	if (ext->flags & IMG_EXT_ZERO)
		kind = CV_ZERO;
	else if (ext->flags & IMG_EXT_DATA)
		kind = CV_DATA;
	else if (cv->bs_flags & IMG_BS_NO_CHAIN)
		kind = (ext->flags & IMG_EXT_ALLOCATED) ? CV_DATA : CV_SKIP;
	else
		kind = CV_DATA; /* unknown: read it, zero detection decides */

	if (kind == CV_ZERO) {
		if (!cv->min_sparse)
			kind = CV_DATA; /* -S 0 fully allocates */
		else if (cv->zero_init)
			kind = CV_SKIP;
	}
	return kind;
}

/*
 * The next range of the walk: 1 to return a chunk, 0 at the end, -errno.
 * Data chunks end at CV_CHUNK-aligned target offsets so that every chunk
 * write covers whole target clusters.
 */
static int cv_next(struct cv *cv, struct cv_chunk *c)
{
	while (cv->cur_src < cv->n_srcs) {
		struct cv_src *s = &cv->srcs[cv->cur_src];
		uint64_t soff = cv->cur_soff, len;

		if (soff >= s->size) {
			cv->cur_src++;
			cv->cur_soff = 0;
			cv->cur_ext_end = 0;
			continue;
		}
		if (soff >= cv->cur_ext_end) {
			struct img_extent ext;
			int ret;

			memset(&ext, 0, sizeof(ext));
			ret = cv_rbd_block_status(s->img, soff, s->size - soff,
						  cv->bs_flags, &ext);
			if (ret < 0)
				return img_error(
					ret,
					"convert: block status of '%s' at byte %" PRIu64
					" failed: %s",
					s->path, soff, img_last_error());
			if (ext.len == 0 || ext.len > s->size - soff)
				return img_error(
					-EIO,
					"convert: block status of '%s' at byte %" PRIu64
					" returned bad length %" PRIu64,
					s->path, soff, ext.len);
			cv->cur_ext_end = soff + ext.len;
			cv->cur_kind = cv_classify(cv, &ext);

			/* Past the end of the target's backing file a zero
			 * range needs no writing: the target reads zeroes. */
			if (cv->has_backing && (ext.flags & IMG_EXT_ZERO) &&
			    cv->min_sparse) {
				uint64_t bs_end = cv->backing_size;
				uint64_t t = s->base + soff;

				if (t >= bs_end)
					cv->cur_kind = CV_SKIP;
				else if (t + ext.len > bs_end)
					cv->cur_ext_end = soff + (bs_end - t);
			}
		}

		len = cv->cur_ext_end - soff;
		c->kind = cv->cur_kind;
		c->src = s;
		c->soff = soff;
		c->toff = s->base + soff;
		if (c->kind == CV_DATA)
			len = cv_min(len, CV_CHUNK - c->toff % CV_CHUNK);
		else if (c->kind == CV_ZERO)
			len = cv_min(len, CV_ZERO_MAX);
		if (cv->cvc) {
			/* As qemu-img: compressed clusters are written whole,
			 * so a range shorter than a cluster counts as data. */
			uint64_t cs = cvc_cluster_size(cv->cvc);

			if (len < cs) {
				len = cv_min(cs - c->toff % cs, s->size - soff);
				c->kind = CV_DATA;
			} else {
				len -= (c->toff + len) % cs;
			}
		}
		c->len = len;
		cv->cur_soff = soff + len;
		return 1;
	}
	return 0;
}

static void cv_done(struct img_aio_req *req, int ret)
{
	struct cv_slot *slot = req->opaque;
	struct cv *cv = slot->cv;

	pthread_mutex_lock(&cv->lock);
	slot->ret = ret;
	if (ret < 0 && !cv->err) {
		const char *what = req->op == IMG_AIO_READ ? "reading" :
							     "writing";
		uint64_t off = req->op == IMG_AIO_READ ? slot->off : req->off;

		cv->err = ret;
		snprintf(cv->errmsg, sizeof(cv->errmsg),
			 "error while %s at byte %" PRIu64 ": %s", what, off,
			 req->error && *req->error ? req->error :
						     strerror(-ret));
	}
	slot->next_done = cv->done_head;
	cv->done_head = slot;
	pthread_mutex_unlock(&cv->lock);
}

/* Main thread only. */
static void cv_set_error(struct cv *cv, int ret, const char *msg)
{
	cv->failed = true;
	pthread_mutex_lock(&cv->lock);
	if (!cv->err) {
		cv->err = ret;
		snprintf(cv->errmsg, sizeof(cv->errmsg), "%s", msg);
	}
	pthread_mutex_unlock(&cv->lock);
}

static int cv_submit(struct cv *cv, struct cv_slot *slot, enum img_aio_op op,
		     struct img *img, void *buf, uint64_t off, uint64_t len,
		     unsigned flags)
{
	int ret;

	memset(&slot->req, 0, sizeof(slot->req));
	slot->req.op = op;
	slot->req.buf = buf;
	slot->req.off = off;
	slot->req.len = len;
	slot->req.flags = flags;
	slot->req.done = cv_done;
	slot->req.opaque = slot;
	ret = img_aio_submit(cv->aio, img, &slot->req);
	if (ret < 0) {
		char msg[512];

		snprintf(msg, sizeof(msg), "could not queue a request: %s",
			 img_last_error()[0] ? img_last_error() :
					       strerror(-ret));
		cv_set_error(cv, ret, msg);
	}
	return ret;
}

static bool cv_unit_is_zero(struct cv *cv, struct cv_slot *slot, uint64_t p,
			    uint64_t *unit_end)
{
	uint64_t end = slot->off + slot->len;
	uint64_t ue = cv_min(end, (p / cv->unit + 1) * cv->unit);

	*unit_end = ue;
	return cv_is_zero(slot->buf + (p - slot->off), ue - p);
}

static void cv_slot_free(struct cv *cv, struct cv_slot *slot)
{
	if (cv->cvc && cv->progress.enabled)
		cvc_ratio(cv->cvc, cv->progress.suffix,
			  sizeof(cv->progress.suffix));
	cli_progress_add(&cv->progress, slot->len);
	slot->state = SLOT_FREE;
	cv->n_busy--;
}

/*
 * Write a ready slot on the calling (main) thread: its data runs with
 * img_write and its zero runs with img_zero, skipping zero runs the target
 * already reads as zero. The writes are synchronous on purpose: the workers
 * keep reading ahead meanwhile, and a round trip through the pool per run
 * cost two thread wake-ups each; with the bench sample's text extents (a
 * zero 4 KiB block every ~64 KiB, so ~9500 runs) that made qcow2->raw 20-40%
 * slower than qemu-img, and 2.5x its futex calls.
 */
static int cv_slot_write(struct cv *cv, struct cv_slot *slot)
{
	uint64_t p = slot->off, end = slot->off + slot->len;

	while (p < end) {
		uint64_t q;
		bool zero;
		int ret;

		if (slot->kind == CV_ZERO) {
			q = end;
			zero = true;
		} else if (!cv->min_sparse) {
			q = end;
			zero = false;
		} else {
			zero = cv_unit_is_zero(cv, slot, p, &q);
			while (q < end) {
				uint64_t ue;

				if (cv_unit_is_zero(cv, slot, q, &ue) != zero)
					break;
				q = ue;
			}
		}

		if (zero && cv->zero_init)
			ret = 0;
		else if (zero)
			ret = img_zero(cv->dst, p, q - p, IMG_ZERO_MAY_UNMAP);
		else if (cv->cvc)
			ret = cvc_write(cv->cvc, slot->buf + (p - slot->off), p,
					q - p);
		else
			ret = img_write(cv->dst, slot->buf + (p - slot->off), p,
					q - p, 0);
		if (ret < 0) {
			char msg[512];

			snprintf(msg, sizeof(msg),
				 "error while writing at byte %" PRIu64 ": %s",
				 p,
				 img_last_error()[0] ? img_last_error() :
						       strerror(-ret));
			cv_set_error(cv, ret, msg);
			return ret;
		}
		p = q;
	}
	return 0;
}

/*
 * Write ready slots: in order of production, or with -W in whatever order
 * their reads finished. Reads are restarted after each slot so the workers
 * never wait for the writer to finish a series.
 */
static void cv_fill(struct cv *cv);

static void cv_write_ready(struct cv *cv)
{
	for (;;) {
		struct cv_slot *slot = NULL;

		if (cv->failed)
			return;
		for (unsigned i = 0; i < cv->n_slots; i++) {
			struct cv_slot *t = &cv->slots[i];

			if (t->state == SLOT_FREE)
				continue;
			if (cv->in_order ? t->seq == cv->next_write_seq :
					   t->state == SLOT_READY) {
				slot = t;
				break;
			}
		}
		if (!slot || slot->state != SLOT_READY)
			return;
		cv_slot_write(cv, slot);
		cv->next_write_seq++;
		cv_slot_free(cv, slot);
		cv_fill(cv);
	}
}

/* Start reads (or queue zero ranges) until every slot is busy. */
static void cv_fill(struct cv *cv)
{
	while (!cv->eof && !cv->failed && cv->n_busy < cv->n_slots) {
		struct cv_chunk c = { 0 };
		struct cv_slot *slot = NULL;
		int ret = cv_next(cv, &c);

		if (ret < 0) {
			cv_set_error(cv, ret, img_last_error());
			return;
		}
		if (ret == 0) {
			cv->eof = true;
			return;
		}
		if (c.kind == CV_SKIP) {
			cli_progress_add(&cv->progress, c.len);
			continue;
		}
		for (unsigned i = 0; i < cv->n_slots; i++) {
			if (cv->slots[i].state == SLOT_FREE) {
				slot = &cv->slots[i];
				break;
			}
		}
		slot->kind = c.kind;
		slot->seq = cv->next_seq++;
		slot->off = c.toff;
		slot->len = c.len;
		slot->ret = 0;
		cv->n_busy++;
		if (c.kind == CV_ZERO) {
			slot->state = SLOT_READY;
			continue;
		}
		slot->state = SLOT_READING;
		if (cv_submit(cv, slot, IMG_AIO_READ, c.src->img, slot->buf,
			      c.soff, c.len, 0) < 0) {
			slot->state = SLOT_FREE;
			cv->n_busy--;
			return;
		}
	}
}

static void cv_handle_done(struct cv *cv, struct cv_slot *slot)
{
	if (slot->ret < 0 || cv->failed) {
		/* Stop: the slot is released without writing. */
		slot->state = SLOT_FREE;
		cv->n_busy--;
		return;
	}
	slot->state = SLOT_READY;
}

static int cv_run(struct cv *cv)
{
	int ret;

	for (;;) {
		struct cv_slot *done;

		cv_fill(cv);
		cv_write_ready(cv);
		if (!cv->n_busy && (cv->eof || cv->failed))
			break;
		/* Slots freed by the writer: start more reads first. */
		if (!cv->eof && !cv->failed && cv->n_busy < cv->n_slots)
			continue;
		/* Slots that are READY but cannot start (error) are dropped. */
		if (cv->failed) {
			for (unsigned i = 0; i < cv->n_slots; i++) {
				if (cv->slots[i].state == SLOT_READY) {
					cv->slots[i].state = SLOT_FREE;
					cv->n_busy--;
				}
			}
			if (!cv->n_busy)
				break;
		}

		/* Completions are delivered here, on this thread. */
		pthread_mutex_lock(&cv->lock);
		while (!cv->done_head && img_aio_inflight(cv->aio)) {
			pthread_mutex_unlock(&cv->lock);
			img_aio_wait(cv->aio);
			pthread_mutex_lock(&cv->lock);
		}
		done = cv->done_head;
		cv->done_head = NULL;
		if (cv->err)
			cv->failed = true;
		pthread_mutex_unlock(&cv->lock);

		/* The list is newest first; handle oldest first. */
		struct cv_slot *rev = NULL;

		while (done) {
			struct cv_slot *n = done->next_done;

			done->next_done = rev;
			rev = done;
			done = n;
		}
		while (rev) {
			struct cv_slot *n = rev->next_done;

			cv_handle_done(cv, rev);
			rev = n;
		}
	}
	pthread_mutex_lock(&cv->lock);
	ret = cv->err;
	pthread_mutex_unlock(&cv->lock);
	return ret;
}

struct cv_args {
	const char *src_fmt;
	const char *out_fmt;
	const char *options;
	const char *backing;
	const char *backing_fmt;
	const char *cache;
	const char *src_cache;
	bool skip_create;
	bool target_is_zero;
	bool progress;
	bool quiet;
	bool shared;
	bool out_of_order;
	bool compress;
	bool slots_given; /* -m: with -c, also the compressor threads */
	bool bitmaps; /* --bitmaps (tools/img/cmd-bitmap.c does the work) */
	bool skip_broken_bitmaps;
	const char *profile; /* --profile (tools/img/convert-profile.c) */
	const char *snapshot; /* -l (tools/img/cmd-snapshot.c) */
	bool snapshots; /* --snapshots */
	uint64_t min_sparse;
	unsigned n_slots;
};

#define CV_OPT_PROFILE 0x1000

static int cv_parse_args(int argc, char **argv, struct cv_args *a)
{
	enum {
		OPT_TARGET_IS_ZERO = 256,
		OPT_SALVAGE,
		OPT_BITMAPS,
		OPT_SKIP_BROKEN,
		OPT_SNAPSHOTS
	};
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
		{ "salvage", no_argument, NULL, OPT_SALVAGE },
		{ "bitmaps", no_argument, NULL, OPT_BITMAPS },
		{ "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN },
		{ "profile", required_argument, NULL, CV_OPT_PROFILE },
		{ "snapshots", no_argument, NULL, OPT_SNAPSHOTS },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(a, 0, sizeof(*a));
	a->min_sparse = 4096;
	a->n_slots = CV_DEFAULT_SLOTS;
	a->cache = "unsafe";
	a->src_cache = "writeback";

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:O:B:F:Cco:l:S:pt:T:qnm:WUr:",
				longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			cv_usage();
			return 1;
		case 'f':
			a->src_fmt = optarg;
			break;
		case 'O':
			a->out_fmt = optarg;
			break;
		case 'B':
			a->backing = optarg;
			break;
		case 'F':
			a->backing_fmt = optarg;
			break;
		case 'C':
			/* copy offloading: plain reads and writes are used */
			break;
		case 'c':
			a->compress = true;
			break;
		case 'o':
			if (a->options)
				return cli_fail(
					-1,
					"convert: give -o once, with comma-separated options");
			a->options = optarg;
			break;
		case 'l':
			if (cli_snapshot_param(optarg, &a->snapshot))
				return -1;
			break;
		case OPT_SNAPSHOTS:
			a->snapshots = true;
			break;
		case 'S': {
			uint64_t v;

			if (img_parse_size(optarg, &v) < 0 || v % 512 ||
			    v > CV_MAX_SPARSE)
				return cli_fail(
					-1,
					"Invalid buffer size for sparse output specified. "
					"Valid sizes are multiples of 512 up to %llu. "
					"Select 0 to disable sparse detection (fully "
					"allocates output).",
					CV_MAX_SPARSE);
			a->min_sparse = v;
			break;
		}
		case 'p':
			a->progress = true;
			break;
		case 't':
			a->cache = optarg;
			break;
		case 'T':
			a->src_cache = optarg;
			break;
		case 'q':
			a->quiet = true;
			break;
		case 'n':
			a->skip_create = true;
			break;
		case 'm': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*optarg == '\0' || *end || v < 1 ||
			    v > CV_MAX_SLOTS)
				return cli_fail(
					-1,
					"Invalid number of coroutines. Allowed number "
					"of coroutines is between 1 and %d",
					CV_MAX_SLOTS);
			a->n_slots = (unsigned)v;
			a->slots_given = true;
			break;
		}
		case 'W':
			a->out_of_order = true;
			break;
		case 'U':
			a->shared = true;
			break;
		case 'r':
			return cli_fail(
				-1,
				"convert: rate limit (-r) is not supported");
		case CV_OPT_PROFILE:
			a->profile = optarg;
			break;
		case OPT_TARGET_IS_ZERO:
			a->target_is_zero = true;
			break;
		case OPT_BITMAPS:
			a->bitmaps = true;
			break;
		case OPT_SKIP_BROKEN:
			a->skip_broken_bitmaps = true;
			break;
		case OPT_SALVAGE:
			return cli_fail(-1,
					"convert: option '%s' is not supported",
					argv[optind - 1]);
		default:
			cli_bad_option(argv, c);
			return -1;
		}
	}
	return 0;
}

/* Create the target (unless -n) and open it. */
static int cv_open_target(struct cv *cv, const struct cv_args *a,
			  const char *dst, uint64_t total)
{
	struct img_kv *kv = NULL;
	size_t n_kv = 0;
	char *bf = NULL, *bfmt = NULL;
	unsigned flags = 0;
	int ret = 0;

	if (a->options) {
		ret = img_kv_parse(a->options, &kv, &n_kv);
		if (ret < 0) {
			ret = cli_fail_img(-1, ret, "invalid option list");
			goto out;
		}
	}
	if (a->skip_create && a->options) {
		ret = cli_fail(-1,
			       "-o has no effect when skipping image creation");
		goto out;
	}
	if (cli_parse_cache(a->cache, &flags) < 0) {
		ret = cli_fail(-1, "Invalid cache option: %s", a->cache);
		goto out;
	}

	if (!a->skip_create) {
		struct img_create_opts co = { 0 };

		if (a->compress &&
		    cvc_take_opts(kv, &n_kv, &cv->compress_level) < 0) {
			ret = -1;
			goto out;
		}
		if (cv_kv_take(kv, &n_kv, "backing_file", &bf) < 0 ||
		    cv_kv_take(kv, &n_kv, "backing_fmt", &bfmt) < 0 ||
		    cv_kv_take(kv, &n_kv, "size", NULL) < 0) {
			ret = cli_fail(-1, "convert: out of memory");
			goto out;
		}
		co.format = a->out_fmt;
		co.size = total;
		co.backing_file = a->backing ? a->backing : bf;
		co.backing_fmt = a->backing_fmt ? a->backing_fmt : bfmt;
		co.opts = kv;
		co.n_opts = n_kv;
		if (co.backing_fmt && !co.backing_file) {
			ret = cli_fail(
				-1,
				"%s: error while converting %s: Backing format "
				"cannot be used without backing file",
				dst, a->out_fmt);
			goto out;
		}
		if (co.backing_file && !co.backing_fmt) {
			ret = cli_fail(
				-1,
				"Use of backing file requires explicit backing format");
			goto out;
		}
		cv->has_backing = co.backing_file != NULL;
		if (co.backing_file && cv_rbd_name(dst))
			ret = cv_rbd_clone(co.backing_file, co.backing_fmt, dst,
					   total);
		else
			ret = img_create(dst, &co);
		if (ret < 0) {
			char prefix[1024];

			snprintf(prefix, sizeof(prefix),
				 "%s: error while converting %s", dst,
				 a->out_fmt);
			ret = cli_fail_img(-1, ret, prefix);
			goto out;
		}
		cli_secret_target(dst, kv, n_kv);
	} else {
		cv->has_backing = a->backing != NULL;
	}

	ret = cli_open(dst, a->out_fmt, flags, IMG_IO_AUTO, &cv->dst);
	if (ret < 0)
		goto out;
	if (a->skip_create && img_size(cv->dst) < total) {
		ret = cli_fail(-1, "output file is smaller than input file");
		goto out;
	}
	if (cv->has_backing) {
		struct img *b = img_backing(cv->dst);

		/* Without an open backing (e.g. -n on a raw target) every
		 * zero range must be written. */
		cv->backing_size = b ? img_size(b) : UINT64_MAX;
	}
	ret = 0;
out:
	free(bf);
	free(bfmt);
	img_kv_free(kv, n_kv);
	return ret;
}

/* -o help: list the target format's options. 1 if printed, 0 if not asked. */
static int cv_print_help(const struct cv_args *a)
{
	struct img_kv *kv = NULL;
	size_t n_kv = 0;
	char buf[8192];
	bool help;
	int ret;

	ret = img_kv_parse(a->options, &kv, &n_kv);
	if (ret < 0)
		return cli_fail_img(-1, ret, "invalid option list");
	help = cv_kv_has(kv, n_kv, "help");
	img_kv_free(kv, n_kv);
	if (!help)
		return 0;
	ret = img_create_help(a->out_fmt, buf, sizeof(buf));
	if (ret < 0)
		return cli_fail_img(-1, ret, a->out_fmt);
	printf("Supported %s options:\n%s", a->out_fmt, buf);
	return 1;
}

int cmd_convert(int argc, char **argv)
{
	struct cv_args a;
	struct cv *cv = NULL;
	unsigned src_flags = IMG_OPEN_RDONLY | cli_untrusted();
	int n_srcs, ret, rc = 1;
	uint64_t total = 0;
	const char *dst;

	ret = cv_parse_args(argc, argv, &a);
	if (ret > 0)
		return 0; /* -h */
	if (ret < 0)
		return 1;
	if (a.profile &&
	    cv_profile_apply(a.profile, &a.out_fmt, &a.options) < 0)
		return 1;
	if (!a.out_fmt)
		a.out_fmt = "raw";
	if (a.options) {
		ret = cv_print_help(&a);
		if (ret != 0)
			return ret > 0 ? 0 : 1;
	}
	n_srcs = argc - optind - 1;
	if (n_srcs < 1)
		return cli_fail(1, "Must specify image file name");
	dst = argv[argc - 1];

	if (a.target_is_zero && !a.skip_create)
		return cli_fail(1, "--target-is-zero requires use of -n flag");
	if (a.target_is_zero && a.backing)
		return cli_fail(1, "Cannot use --target-is-zero when the "
				   "destination image has a backing file");
	if (a.snapshot && n_srcs > 1)
		return cli_fail(1, "No support for concatenating multiple "
				   "snapshot");
	if (a.snapshots && (n_srcs > 1 || a.snapshot || a.compress ||
			    a.backing || a.skip_create ||
			    (strcmp(a.out_fmt, "qcow2") &&
			     (strcmp(a.out_fmt, "raw") || !cv_rbd_name(dst)))))
		return cli_fail(1, "--snapshots needs one source and -O qcow2 "
				   "or an rbd: target (without -l, -c, -B or "
				   "-n)");
	if (a.src_cache && cli_parse_cache(a.src_cache, &src_flags) < 0)
		return cli_fail(1, "Invalid source cache option: %s",
				a.src_cache);
	if (a.shared)
		src_flags |= IMG_OPEN_SHARED;

	cv = calloc(1, sizeof(*cv));
	if (!cv)
		return cli_fail(1, "convert: out of memory");
	pthread_mutex_init(&cv->lock, NULL);
	cv->srcs = calloc((size_t)n_srcs, sizeof(*cv->srcs));
	if (!cv->srcs) {
		cli_fail(1, "convert: out of memory");
		goto out;
	}
	cv->n_srcs = (unsigned)n_srcs;

	for (int i = 0; i < n_srcs; i++) {
		struct cv_src *s = &cv->srcs[i];

		s->path = argv[optind + i];
		if (a.snapshot ?
			    cli_open_snapshot(s->path, a.src_fmt, src_flags,
					      a.snapshot, &s->img) < 0 :
			    cli_open(s->path, a.src_fmt, src_flags, IMG_IO_AUTO,
				     &s->img) < 0)
			goto out;
		s->size = img_size(s->img);
		s->base = total;
		if (total + s->size < total) {
			cli_fail(
				1,
				"convert: total size of the sources overflows");
			goto out;
		}
		total += s->size;
	}

	if (cv_open_target(cv, &a, dst,
			   cv_profile_size(a.profile, total, a.quiet)) < 0)
		goto out;
	if (a.snapshots) {
		if (cli_convert_snapshots(cv->srcs[0].path, a.src_fmt,
					  src_flags, cv->srcs[0].img, cv->dst))
			goto out;
		goto close_dst;
	}
	if (a.bitmaps &&
	    cli_convert_bitmaps_check(cv->srcs[0].img, cv->n_srcs, cv->dst,
				      a.skip_broken_bitmaps) < 0)
		goto out;
	{
		enum img_compress_type ct;
		uint64_t cs;

		/* A target that stores only compressed data (VMDK
		 * streamOptimized) is written through the pipeline too. */
		if (!a.compress && img_compress_params(cv->dst, &ct, &cs) == 1)
			a.compress = true;
	}
	if (a.compress) {
		ret = cvc_new(cv->dst, cv->compress_level,
			      a.slots_given ? a.n_slots : 0, &cv->cvc);
		if (ret < 0) {
			cli_fail(1, "%s", img_last_error());
			goto out;
		}
	}

	cv->total = total;
	cv->min_sparse = a.min_sparse;
	cv->in_order = !a.out_of_order;
	cv->bs_flags = cv->has_backing ? IMG_BS_NO_CHAIN : 0;
	if (cv->has_backing)
		cv->zero_init = false;
	else if (!a.skip_create || a.target_is_zero)
		cv->zero_init = true;
	else
		/* -n: zero the whole target at once if that is cheap. */
		cv->zero_init = img_zero(cv->dst, 0, total,
					 IMG_ZERO_MAY_UNMAP | IMG_ZERO_FAST) ==
				0;

	cv->unit = a.min_sparse ? a.min_sparse : 4096;
	{
		struct img_info info;

		memset(&info, 0, sizeof(info));
		if (img_info(cv->dst, &info) == 0 && a.min_sparse &&
		    info.cluster_size > a.min_sparse &&
		    info.cluster_size <= CV_CHUNK &&
		    info.cluster_size % a.min_sparse == 0)
			cv->unit = info.cluster_size;
	}
	if (cv->cvc)
		cv->unit = cvc_cluster_size(cv->cvc);

	cv->n_slots = a.n_slots;
	for (unsigned i = 0; i < cv->n_slots; i++) {
		cv->slots[i].cv = cv;
		if (posix_memalign((void **)&cv->slots[i].buf, 4096,
				   CV_CHUNK)) {
			cli_fail(1, "convert: out of memory");
			goto out;
		}
	}
	/*
	 * Two workers: with 4 or 8 the same qcow2->raw copy of the bench
	 * sample took 2-3x the system time (contention in the pool and the
	 * ring), and one leaves a core idle while the other writes.
	 */
	ret = img_aio_new(2, &cv->aio);
	if (ret < 0) {
		cli_fail_img(1, ret, "convert: could not start the I/O pool");
		goto out;
	}

	cli_progress_init(&cv->progress, a.progress && !a.quiet, total);
	ret = cv_run(cv);
	img_aio_free(cv->aio);
	cv->aio = NULL;
	if (ret == 0 && cv->cvc && cvc_finish(cv->cvc) < 0) {
		ret = -1;
		snprintf(cv->errmsg, sizeof(cv->errmsg), "%s",
			 img_last_error());
	} else if (ret == 0 && cv->cvc && cv->progress.enabled) {
		/* The final ratio, once everything is written. */
		cvc_ratio(cv->cvc, cv->progress.suffix,
			  sizeof(cv->progress.suffix));
		cv->progress.last_pct = -100;
		cli_progress_add(&cv->progress, 0);
	}
	cvc_free(cv->cvc);
	cv->cvc = NULL;
	if (ret < 0) {
		cli_progress_end(&cv->progress);
		cli_fail(1, "%s", cv->errmsg);
		goto out;
	}
	cli_progress_end(&cv->progress);
	if (a.bitmaps && cli_convert_bitmaps_copy(cv->srcs[0].img, cv->dst,
						  a.skip_broken_bitmaps) < 0)
		goto out;

close_dst:
	ret = img_close(cv->dst);
	cv->dst = NULL;
	if (ret < 0) {
		char prefix[1024];

		snprintf(prefix, sizeof(prefix), "error while closing '%s'",
			 dst);
		cli_fail_img(1, ret, prefix);
		goto out;
	}
	rc = 0;
out:
	img_aio_free(cv->aio);
	cvc_free(cv->cvc);
	if (cv->dst)
		img_close(cv->dst);
	for (unsigned i = 0; i < cv->n_srcs; i++)
		img_close(cv->srcs[i].img);
	for (unsigned i = 0; i < CV_MAX_SLOTS; i++)
		free(cv->slots[i].buf);
	free(cv->srcs);
	pthread_mutex_destroy(&cv->lock);
	free(cv);
	return rc;
}

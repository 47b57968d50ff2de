/* SPDX-License-Identifier: MIT */
/*
 * img convert -c: a pipeline of one producer (the convert loop, calling
 * cvc_write in target order), N compressor threads and one writer thread.
 * Consecutive whole clusters given to cvc_write fill a job of up to 2 MiB
 * (other ranges get a job of their own) in a ring of jobs numbered in order.
 * Compression is shared out a few clusters at a time, oldest job first, so
 * every thread works on the job the writer needs next and a descheduled
 * thread holds back only its few clusters (with whole jobs per thread, one
 * preempted compressor stalled the writer while the ring filled up). Each
 * cluster is compressed independently (the last cluster of the image
 * zero-padded, as QEMU does). The writer stores the oldest job with
 * img_write_compressed, or with img_write when compression did not make a
 * cluster smaller than the cluster size or the range is not whole clusters;
 * while the oldest job is not ready, the writer compresses pending clusters
 * rather than wait. The producer never does: it reads ahead instead. Writing strictly in order keeps the packing of
 * compressed data in the host file deterministic and sequential. The ring
 * bounds the memory in flight.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "convert-compress.h"

/* A job: at most this many bytes (convert's chunk size). */
#define CVC_JOB_MAX (2ull << 20)
#define CVC_MAX_THREADS 64
#define CVC_MAX_JOBS 32

static inline uint64_t cvc_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Clusters handed to a thread at a time: about this many bytes. */
#define CVC_GRAB_BYTES (256u << 10)

struct cvc_job {
	uint64_t off;
	uint64_t len;
	bool raw; /* not whole clusters: written as is */
	uint32_t n_clusters; /* to compress (0 for raw jobs) */
	uint32_t next_cluster; /* next one to hand out */
	uint32_t n_done; /* compressed; the job is ready when n_clusters */
	uint8_t *in; /* CVC_JOB_MAX bytes */
	uint8_t *out; /* cluster i's compressed data at i * cluster size */
	int32_t *clen; /* per cluster: compressed length, or 0 = store raw */
	struct img_compressed *batch; /* for img_write_compressed */
};

struct cvc {
	struct img *dst;
	enum img_compress_type type;
	int level;
	uint64_t cs;
	uint64_t size; /* target size */
	uint32_t grab; /* clusters per hand-out */

	pthread_mutex_t lock;
	pthread_cond_t work; /* compressors wait here for clusters */
	pthread_cond_t ready; /* the writer waits here for the oldest job */
	pthread_cond_t space; /* the producer waits here for a free job */
	struct cvc_job jobs[CVC_MAX_JOBS];
	unsigned n_jobs;
	struct cvc_job *open; /* being filled by the producer, not queued */
	/* Sequence numbers; job seq is at seq % n_jobs. Jobs before
	 * next_work have handed out all their clusters. */
	uint64_t next_fill;
	uint64_t next_work;
	uint64_t next_write;
	bool stop;

	pthread_t threads[CVC_MAX_THREADS + 1];
	unsigned n_threads; /* started, the writer included */

	int err; /* first error, under lock */
	char errmsg[512];
	uint64_t err_off; /* target offset it happened at */
	uint64_t bytes_in; /* data bytes stored, under lock */
	uint64_t bytes_out; /* host bytes they took */
};

static void cvc_set_error(struct cvc *c, int err, uint64_t off, const char *msg)
{
	if (c->err)
		return;
	c->err = err;
	c->err_off = off;
	snprintf(c->errmsg, sizeof(c->errmsg), "%s",
		 msg && *msg ? msg : strerror(-err));
	c->stop = true;
	pthread_cond_broadcast(&c->work);
	pthread_cond_broadcast(&c->ready);
	pthread_cond_broadcast(&c->space);
}

/*
 * Does the cluster look incompressible (its byte histogram as flat as
 * random data's)? Only then is zstd asked to confirm: it gives up on
 * incompressible data at several GB/s, while deflate spends as long on
 * random data as on text (a third of zlib's time on the bench sample).
 * zstd also finds repeats that a flat histogram hides.
 */
static bool cvc_incompressible(const uint8_t *p, uint64_t n, uint8_t *scratch)
{
	uint32_t hist[256] = { 0 };
	double h = 0, bias = 255.0 / (2.0 * (double)n * M_LN2);

	for (uint64_t i = 0; i < n; i++)
		hist[p[i]]++;
	for (unsigned i = 0; i < 256; i++)
		if (hist[i])
			h -= hist[i] * log2((double)hist[i] / (double)n);
	/* Random data: 8 bits per byte less the small-sample bias. */
	if (h / (double)n < 8.0 - 3.0 * bias)
		return false;
	return img_compress(IMG_COMPRESS_ZSTD, 1, p, n, scratch, n - 1) ==
	       -ENOSPC;
}

/* Compress clusters [first, first + count) of j; runs without the lock. */
static int cvc_compress(struct cvc *c, struct cvc_job *j, uint32_t first,
			uint32_t count)
{
	for (uint64_t i = first; i < first + count; i++) {
		uint64_t len = j->len - i * c->cs;
		uint8_t *src = j->in + i * c->cs;
		int r;

		if (len < c->cs) /* the image's last, partial cluster */
			memset(src + len, 0, c->cs - len);
		if (c->type != IMG_COMPRESS_ZSTD &&
		    cvc_incompressible(src, c->cs, j->out + i * c->cs))
			r = -ENOSPC;
		else
			r = img_compress(c->type, c->level, src, c->cs,
					 j->out + i * c->cs, c->cs - 1);
		if (r == -ENOSPC)
			r = 0;
		if (r < 0)
			return r;
		j->clen[i] = r;
	}
	return 0;
}

/*
 * Under the lock: compress the next few clusters of the oldest job that has
 * some left, dropping the lock meanwhile. False when there is none.
 */
static bool cvc_help(struct cvc *c)
{
	struct cvc_job *j = NULL;
	uint32_t first, count;
	int r;

	while (c->next_work < c->next_fill) {
		j = &c->jobs[c->next_work % c->n_jobs];
		if (j->next_cluster < j->n_clusters)
			break;
		c->next_work++;
		j = NULL;
	}
	if (!j || c->stop)
		return false;
	first = j->next_cluster;
	count = j->n_clusters - first;
	if (count > c->grab)
		count = c->grab;
	j->next_cluster += count;
	pthread_mutex_unlock(&c->lock);
	r = cvc_compress(c, j, first, count);
	pthread_mutex_lock(&c->lock);
	if (r < 0)
		cvc_set_error(c, r, j->off + first * c->cs, img_last_error());
	j->n_done += count;
	if (j->n_done == j->n_clusters)
		pthread_cond_signal(&c->ready);
	return true;
}

static void *cvc_compressor(void *arg)
{
	struct cvc *c = arg;

	pthread_mutex_lock(&c->lock);
	while (!c->stop)
		if (!cvc_help(c))
			pthread_cond_wait(&c->work, &c->lock);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Store job j in order; returns the host bytes used, or -errno. */
static int64_t cvc_store_job(struct cvc *c, struct cvc_job *j)
{
	uint64_t n = (j->len + c->cs - 1) / c->cs, used = 0;
	int r;

	if (j->raw) {
		r = img_write(c->dst, j->in, j->off, j->len, 0);
		return r < 0 ? r : (int64_t)j->len;
	}
	/* The compressed clusters in one call (one host write per run the
	 * packing keeps contiguous), runs of the others with img_write. */
	for (uint64_t i = 0, nb = 0; i <= n; i++) {
		uint64_t k = i;

		if (i == n || j->clen[i]) {
			if (i < n) {
				j->batch[nb].off = j->off + i * c->cs;
				j->batch[nb].data = j->out + i * c->cs;
				j->batch[nb].len = (size_t)j->clen[i];
				used += j->batch[nb++].len;
			} else {
				r = img_write_compressed(c->dst, j->batch, nb);
				if (r < 0)
					return r;
			}
			continue;
		}
		while (k < n && !j->clen[k])
			k++;
		r = img_write(c->dst, j->in + i * c->cs, j->off + i * c->cs,
			      cvc_min(k * c->cs, j->len) - i * c->cs, 0);
		if (r < 0)
			return r;
		used += cvc_min(k * c->cs, j->len) - i * c->cs;
		i = k - 1;
	}
	return (int64_t)used;
}

static void *cvc_writer(void *arg)
{
	struct cvc *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct cvc_job *j = &c->jobs[c->next_write % c->n_jobs];
		int64_t r;

		/* Rather than wait, help compress the jobs in flight. */
		while (!c->stop && (c->next_write == c->next_fill ||
				    j->n_done < j->n_clusters))
			pthread_cond_wait(&c->ready, &c->lock);
		if (c->stop)
			break;
		pthread_mutex_unlock(&c->lock);
		r = cvc_store_job(c, j);
		pthread_mutex_lock(&c->lock);
		if (r < 0) {
			cvc_set_error(c, (int)r, j->off, img_last_error());
			break;
		}
		c->bytes_in += j->len;
		c->bytes_out += (uint64_t)r;
		c->next_write++;
		pthread_cond_signal(&c->space);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

uint64_t cvc_cluster_size(const struct cvc *c)
{
	return c->cs;
}

/* Take the next free job as the open one (waits while the ring is full). */
static int cvc_open_job(struct cvc *c, uint64_t off, bool raw)
{
	struct cvc_job *j;
	int err;

	pthread_mutex_lock(&c->lock);
	while (!c->err && c->next_fill - c->next_write >= c->n_jobs)
		pthread_cond_wait(&c->space, &c->lock);
	err = c->err;
	pthread_mutex_unlock(&c->lock);
	if (err)
		return img_error(err, "%s", c->errmsg);
	/* The slot is free: only this thread touches it until queued. */
	j = &c->jobs[c->next_fill % c->n_jobs];
	j->off = off;
	j->len = 0;
	j->raw = raw;
	c->open = j;
	return 0;
}

static void cvc_queue_open(struct cvc *c)
{
	struct cvc_job *j = c->open;

	if (!j)
		return;
	j->n_clusters = j->raw ? 0 : (uint32_t)((j->len + c->cs - 1) / c->cs);
	j->next_cluster = 0;
	j->n_done = 0;
	pthread_mutex_lock(&c->lock);
	c->open = NULL;
	c->next_fill++;
	if (j->n_clusters)
		pthread_cond_broadcast(&c->work);
	else
		pthread_cond_signal(&c->ready);
	pthread_mutex_unlock(&c->lock);
}

int cvc_write(struct cvc *c, const void *buf, uint64_t off, uint64_t len)
{
	const uint8_t *p = buf;

	while (len) {
		/* Whole clusters, or the start of the last one (the source
		 * may end short of the target's size, which is rounded to
		 * sectors); anything else is written as is. */
		bool raw =
			off % c->cs ||
			(len % c->cs && off + len < c->size - c->size % c->cs);
		struct cvc_job *j = c->open;
		uint64_t n;
		int ret;

		/* Consecutive whole clusters share a job: fewer hand-offs. */
		if (j && (raw || j->raw || j->off + j->len != off ||
			  j->len == CVC_JOB_MAX)) {
			cvc_queue_open(c);
			j = NULL;
		}
		if (!j) {
			ret = cvc_open_job(c, off, raw);
			if (ret < 0)
				return ret;
			j = c->open;
		}
		n = cvc_min(len, CVC_JOB_MAX - j->len);
		if (!raw && n < len)
			n -= n % c->cs;
		memcpy(j->in + j->len, p, n);
		j->len += n;
		if (raw || j->len % c->cs)
			cvc_queue_open(c);
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

int cvc_finish(struct cvc *c)
{
	int err;

	cvc_queue_open(c);
	pthread_mutex_lock(&c->lock);
	while (!c->err && c->next_write != c->next_fill)
		pthread_cond_wait(&c->space, &c->lock);
	err = c->err;
	pthread_mutex_unlock(&c->lock);
	if (err)
		return img_error(err,
				 "error while writing at byte %" PRIu64 ": %s",
				 c->err_off, c->errmsg);
	return 0;
}

void cvc_ratio(struct cvc *c, char *buf, size_t buf_size)
{
	uint64_t in, out;

	pthread_mutex_lock(&c->lock);
	in = c->bytes_in;
	out = c->bytes_out;
	pthread_mutex_unlock(&c->lock);
	if (!in) {
		snprintf(buf, buf_size, "%s", "");
		return;
	}
	snprintf(buf, buf_size, " - compressed to %.1f%%",
		 (double)out * 100.0 / (double)in);
}

void cvc_free(struct cvc *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->work);
	pthread_cond_broadcast(&c->ready);
	pthread_cond_broadcast(&c->space);
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < c->n_threads; i++)
		pthread_join(c->threads[i], NULL);
	for (unsigned i = 0; i < CVC_MAX_JOBS; i++) {
		free(c->jobs[i].in);
		free(c->jobs[i].out);
		free(c->jobs[i].clen);
		free(c->jobs[i].batch);
	}
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->work);
	pthread_cond_destroy(&c->ready);
	pthread_cond_destroy(&c->space);
	free(c);
}

int cvc_new(struct img *dst, int level, unsigned nthreads, struct cvc **out)
{
	struct cvc *c;
	int ret;

	if (!nthreads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		nthreads = n > 0 ? (unsigned)n : 1;
	}
	if (nthreads > CVC_MAX_THREADS)
		nthreads = CVC_MAX_THREADS;
	c = calloc(1, sizeof(*c));
	if (!c)
		return img_error(-ENOMEM, "convert: out of memory");
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->work, NULL);
	pthread_cond_init(&c->ready, NULL);
	pthread_cond_init(&c->space, NULL);
	c->dst = dst;
	c->level = level;
	c->size = img_size(dst);
	ret = img_compress_params(dst, &c->type, &c->cs);
	if (ret < 0)
		goto fail;
	if (c->cs > CVC_JOB_MAX) {
		ret = img_error(-ENOTSUP, "convert: cluster size too large");
		goto fail;
	}
	c->grab = (uint32_t)(CVC_GRAB_BYTES / c->cs);
	if (!c->grab)
		c->grab = 1;
	/* While the writer stores one job and the producer fills another,
	 * enough queued that the compressors never run dry and a slow write
	 * does not stop them. */
	c->n_jobs = nthreads * 2 + 4;
	if (c->n_jobs > CVC_MAX_JOBS)
		c->n_jobs = CVC_MAX_JOBS;
	for (unsigned i = 0; i < c->n_jobs; i++) {
		struct cvc_job *j = &c->jobs[i];

		j->in = malloc(CVC_JOB_MAX);
		j->out = malloc(CVC_JOB_MAX);
		j->clen = calloc(CVC_JOB_MAX / c->cs, sizeof(*j->clen));
		j->batch = calloc(CVC_JOB_MAX / c->cs, sizeof(*j->batch));
		if (!j->in || !j->out || !j->clen || !j->batch) {
			ret = img_error(-ENOMEM, "convert: out of memory");
			goto fail;
		}
	}
	/* Check the level once here rather than failing in a thread. */
	memset(c->jobs[0].out, 0, 1);
	ret = img_compress(c->type, level, c->jobs[0].out, 1, c->jobs[0].in,
			   CVC_JOB_MAX);
	if (ret < 0)
		goto fail;
	if (pthread_create(&c->threads[0], NULL, cvc_writer, c)) {
		ret = img_error(-EAGAIN, "convert: cannot start a thread");
		goto fail;
	}
	c->n_threads = 1;
	for (unsigned i = 0; i < nthreads; i++) {
		if (pthread_create(&c->threads[c->n_threads], NULL,
				   cvc_compressor, c)) {
			ret = img_error(-EAGAIN,
					"convert: cannot start a thread");
			goto fail;
		}
		c->n_threads++;
	}
	*out = c;
	return 0;
fail:
	cvc_free(c);
	return ret;
}

int cvc_take_opts(struct img_kv *kv, size_t *n, int *level)
{
	size_t i = 0;

	*level = 0;
	while (i < *n) {
		char *end;
		long v;

		if (!strncmp(kv[i].key, "encrypt.", 8) ||
		    !strcmp(kv[i].key, "encryption"))
			return cli_fail(-1, "Compression and encryption not "
					    "supported at the same time");
		if (strcmp(kv[i].key, "compression_level")) {
			i++;
			continue;
		}
		v = kv[i].value ? strtol(kv[i].value, &end, 10) : -1;
		if (!kv[i].value || !*kv[i].value || *end || v < 0 || v > 22)
			return cli_fail(-1,
					"convert: invalid compression_level "
					"'%s' (0 for the default, zlib 1-12, "
					"zstd 1-22)",
					kv[i].value ? kv[i].value : "");
		*level = (int)v;
		free((void *)kv[i].key);
		free((void *)kv[i].value);
		memmove(&kv[i], &kv[i + 1], (*n - i - 1) * sizeof(kv[0]));
		(*n)--;
	}
	return 0;
}

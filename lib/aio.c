/* SPDX-License-Identifier: MIT */
/*
 * Asynchronous requests on a small pthread pool: img_aio_submit() puts a
 * request on a FIFO queue (mutex + condition variable) and returns; a worker
 * runs the synchronous call (img_aio_run: img_read, img_write, ...), which
 * serialises on the image's own lock as needed (data transfers of allocated
 * clusters overlap, see request.c), and reports through req->done() from the
 * worker thread. Each worker gets its own io_uring ring on first use. drain
 * waits until the queue is empty and no request is running, done() included.
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define AIO_MAX_THREADS 64

struct aio_item {
	struct img *img;
	struct img_aio_req *req;
};

struct img_aio {
	pthread_mutex_t lock;
	pthread_cond_t work; /* queue not empty, or stopping */
	pthread_cond_t idle; /* queue empty and nothing running */
	struct aio_item *q; /* ring buffer */
	size_t q_cap, q_head, q_len;
	unsigned running;
	bool stop;
	unsigned nthreads;
	pthread_t threads[AIO_MAX_THREADS];
};

int img_aio_run(struct img *img, struct img_aio_req *req)
{
	switch (req->op) {
	case IMG_AIO_READ:
		return img_read(img, req->buf, req->off, req->len);
	case IMG_AIO_WRITE:
		return img_write(img, req->buf, req->off, req->len, req->flags);
	case IMG_AIO_ZERO:
		return img_zero(img, req->off, req->len, req->flags);
	case IMG_AIO_DISCARD: {
		int ret = img_discard(img, req->off, req->len);

		return ret == 0 && (req->flags & IMG_FUA) ? img_flush(img) :
							    ret;
	}
	case IMG_AIO_FLUSH:
		return img_flush(img);
	}
	return img_error(-EINVAL, "aio: unknown request type %d", (int)req->op);
}

static void aio_finish_locked(struct img_aio *aio)
{
	aio->running--;
	if (!aio->q_len && !aio->running)
		pthread_cond_broadcast(&aio->idle);
}

static void aio_finish(struct img_aio *aio)
{
	pthread_mutex_lock(&aio->lock);
	aio_finish_locked(aio);
	pthread_mutex_unlock(&aio->lock);
}

static void *aio_worker(void *arg)
{
	struct img_aio *aio = arg;

	pthread_mutex_lock(&aio->lock);
	for (;;) {
		struct aio_item it;
		int ret;

		while (!aio->q_len && !aio->stop)
			pthread_cond_wait(&aio->work, &aio->lock);
		if (!aio->q_len)
			break;
		it = aio->q[aio->q_head];
		aio->q_head = (aio->q_head + 1) % aio->q_cap;
		aio->q_len--;
		aio->running++;
		pthread_mutex_unlock(&aio->lock);

		img_clear_error();
		ret = it.req->start ? it.req->start(it.req) : 0;
		if (ret >= 0)
			ret = img_aio_run(it.img, it.req);
		it.req->error = ret < 0 ? img_last_error() : NULL;
		it.req->done(it.req, ret);

		pthread_mutex_lock(&aio->lock);
		aio_finish_locked(aio);
	}
	pthread_mutex_unlock(&aio->lock);
	return NULL;
}

static void aio_stop(struct img_aio *aio)
{
	pthread_mutex_lock(&aio->lock);
	aio->stop = true;
	pthread_cond_broadcast(&aio->work);
	pthread_mutex_unlock(&aio->lock);
	for (unsigned i = 0; i < aio->nthreads; i++)
		pthread_join(aio->threads[i], NULL);
}

static void aio_destroy(struct img_aio *aio)
{
	pthread_cond_destroy(&aio->idle);
	pthread_cond_destroy(&aio->work);
	pthread_mutex_destroy(&aio->lock);
	free(aio->q);
	free(aio);
}

int img_aio_new(unsigned nthreads, struct img_aio **out)
{
	struct img_aio *aio;
	int ret;

	if (!nthreads) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		nthreads = ncpu > 2 ? (unsigned)ncpu : 2;
	}
	if (nthreads > AIO_MAX_THREADS)
		nthreads = AIO_MAX_THREADS;
	aio = calloc(1, sizeof(*aio));
	if (!aio)
		return img_error(-ENOMEM, "aio: out of memory");
	pthread_mutex_init(&aio->lock, NULL);
	pthread_cond_init(&aio->work, NULL);
	pthread_cond_init(&aio->idle, NULL);
	for (unsigned i = 0; i < nthreads; i++) {
		ret = pthread_create(&aio->threads[i], NULL, aio_worker, aio);
		if (ret) {
			aio_stop(aio);
			aio_destroy(aio);
			return img_error(-ret,
					 "aio: cannot start worker %u: %s", i,
					 strerror(ret));
		}
		aio->nthreads++;
	}
	*out = aio;
	return 0;
}

/* Double the queue, keeping its order. Called with the lock held. */
static int aio_grow(struct img_aio *aio)
{
	size_t cap = aio->q_cap ? aio->q_cap * 2 : 64;
	struct aio_item *q = malloc(sizeof(*q) * cap);

	if (!q)
		return -ENOMEM;
	for (size_t i = 0; i < aio->q_len; i++)
		q[i] = aio->q[(aio->q_head + i) % aio->q_cap];
	free(aio->q);
	aio->q = q;
	aio->q_cap = cap;
	aio->q_head = 0;
	return 0;
}

int img_aio_submit(struct img_aio *aio, struct img *img,
		   struct img_aio_req *req)
{
	if (!img || !req || !req->done)
		return img_error(-EINVAL, "aio: request without an image or "
					  "a completion callback");
	if ((unsigned)req->op > IMG_AIO_FLUSH)
		return img_error(-EINVAL, "aio: unknown request type %d",
				 (int)req->op);
	pthread_mutex_lock(&aio->lock);
	if (aio->stop) {
		pthread_mutex_unlock(&aio->lock);
		return img_error(-EINVAL, "aio: the pool is shutting down");
	}
	if (aio->q_len == aio->q_cap && aio_grow(aio) < 0) {
		pthread_mutex_unlock(&aio->lock);
		return img_error(-ENOMEM,
				 "aio: out of memory queueing %zu "
				 "requests",
				 aio->q_len + 1);
	}
	aio->q[(aio->q_head + aio->q_len) % aio->q_cap] =
		(struct aio_item){ img, req };
	aio->q_len++;
	req->error = NULL;
	pthread_cond_signal(&aio->work);
	pthread_mutex_unlock(&aio->lock);
	return 0;
}

/* Take the first queued request of opaque off the queue (counted as running
 * until aio_finish()); NULL if none. */
static struct img_aio_req *aio_unqueue(struct img_aio *aio, const void *opaque)
{
	struct img_aio_req *req = NULL;

	pthread_mutex_lock(&aio->lock);
	for (size_t i = 0; i < aio->q_len; i++) {
		size_t at = (aio->q_head + i) % aio->q_cap;

		if (aio->q[at].req->opaque != opaque)
			continue;
		req = aio->q[at].req;
		for (; i + 1 < aio->q_len; i++) {
			size_t next = (aio->q_head + i + 1) % aio->q_cap;

			aio->q[at] = aio->q[next];
			at = next;
		}
		aio->q_len--;
		aio->running++; /* until its done() returns, for drain */
		break;
	}
	pthread_mutex_unlock(&aio->lock);
	return req;
}

int img_aio_cancel(struct img_aio *aio, const void *opaque)
{
	struct img_aio_req *req;
	int n = 0;

	/* One at a time: done() runs without the lock, and may submit. */
	while ((req = aio_unqueue(aio, opaque))) {
		req->error = "request cancelled";
		req->done(req, -ECANCELED);
		aio_finish(aio);
		n++;
	}
	return n;
}

void img_aio_drain(struct img_aio *aio)
{
	pthread_mutex_lock(&aio->lock);
	while (aio->q_len || aio->running)
		pthread_cond_wait(&aio->idle, &aio->lock);
	pthread_mutex_unlock(&aio->lock);
}

void img_aio_free(struct img_aio *aio)
{
	if (!aio)
		return;
	img_aio_drain(aio);
	aio_stop(aio);
	aio_destroy(aio);
}

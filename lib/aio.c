/* SPDX-License-Identifier: MIT */
/*
 * The async engine. An engine owns one io_uring ring and an eventfd. A
 * request the driver maps straight to host ranges (img_direct_map: raw,
 * allocated qcow2 clusters) goes on the ring from the submitting thread, as
 * many requests in flight as the ring holds, with no thread hand-off. A
 * request that needs the driver's normal path (allocation, copy-on-write,
 * backing reads, compression, encryption, zero, discard, flush, FUA) or a
 * host file without a plain descriptor (rbd, faulty, mem) runs on a small
 * psync worker pool behind the same API, started on first use; so does
 * everything when no ring can be set up (io_uring refused, as in many
 * containers).
 *
 * Completions are delivered by img_aio_poll() (and img_aio_wait/drain),
 * which call done() on the polling thread; the eventfd becomes readable
 * when there is something to deliver, for a server's poll loop: the kernel
 * signals it for ring completions (io_uring_register_eventfd), pool workers
 * for theirs.
 *
 * Threads: one thread at a time submits (the ring's submission side has one
 * producer); any thread may poll (the completion side is serialised by
 * cq_lock, and done() runs outside it). img_direct_drain() may reap rings
 * from another thread: a thread holding an image's lock waits there for
 * ring transfers to end while the engine's owner may be blocked on that
 * same lock; such reaping only finishes transfers, done() still runs where
 * the engine is polled.
 */
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

#define AIO_MAX_THREADS 64
#define RING_ENTRIES 256
/* Transfers in flight on one ring: its completion queue (twice the
 * submission queue) never overflows. */
#define RING_MAX_INFLIGHT (2 * RING_ENTRIES)
/* user_data holds the op's address and the vec index in its low bits. */
#define VEC_BITS 6
#define OP_ALIGN (1u << VEC_BITS)
#define MSG_MAX 512

_Static_assert(IMG_DIRECT_MAX_VECS <= OP_ALIGN, "vec index must fit");

struct aio_op {
	alignas(OP_ALIGN) struct img_aio_req *req;
	struct img *img;
	struct img_aio *aio;
	struct aio_op *next;
	struct img_io *io;
	unsigned n;
	bool req_started; /* start() ran already */
	atomic_uint pending; /* ring transfers not yet reaped */
	int ret;
	char msg[MSG_MAX];
	struct img_io_vec vecs[IMG_DIRECT_MAX_VECS];
};

struct op_list {
	struct aio_op *head, *tail;
};

struct img_aio {
	int efd;
	bool have_ring;
	struct io_uring ring;
	atomic_uint ring_inflight; /* transfers on the ring */
	pthread_mutex_t cq_lock; /* the ring's completion side */
	atomic_uint inflight; /* submitted, done() not yet called */
	struct img_aio *reg_next; /* registry of engines with a ring */

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t work; /* queue not empty, or stopping */
	struct op_list queue; /* for the pool */
	struct op_list ready; /* completed, to deliver */
	struct aio_op *free_ops;
	unsigned idle_workers;
	bool stop;
	unsigned max_threads, nthreads;
	pthread_t threads[AIO_MAX_THREADS];
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct img_aio *registry;

static void list_push(struct op_list *l, struct aio_op *op)
{
	op->next = NULL;
	if (l->tail)
		l->tail->next = op;
	else
		l->head = op;
	l->tail = op;
}

static struct aio_op *list_pop(struct op_list *l)
{
	struct aio_op *op = l->head;

	if (op) {
		l->head = op->next;
		if (!l->head)
			l->tail = NULL;
	}
	return op;
}

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

static void signal_efd(struct img_aio *aio)
{
	uint64_t one = 1;
	ssize_t r = write(aio->efd, &one, sizeof(one));

	(void)r; /* a full counter is still readable */
}

/* The op is finished: queue it for delivery. */
static void op_ready(struct img_aio *aio, struct aio_op *op)
{
	pthread_mutex_lock(&aio->lock);
	list_push(&aio->ready, op);
	pthread_mutex_unlock(&aio->lock);
	signal_efd(aio);
}

static void op_fail(struct aio_op *op, int ret)
{
	if (op->ret < 0)
		return;
	op->ret = ret;
	snprintf(op->msg, sizeof(op->msg), "%s",
		 img_last_error()[0] ? img_last_error() : strerror(-ret));
}

/* Mapped transfers are over: the image may free their host ranges now. */
static void op_end_vecs(struct aio_op *op)
{
	if (op->ret >= 0)
		for (unsigned i = 0; i < op->n; i++)
			if (op->vecs[i].write)
				img_io_wrote(op->io, op->vecs[i].file_off +
							     op->vecs[i].len);
	img_direct_release(op->img);
}

/* ---- the pool ---- */

static void pool_run(struct aio_op *op)
{
	int ret;

	img_clear_error();
	ret = op->req->start && !op->req_started ? op->req->start(op->req) : 0;
	if (ret >= 0)
		ret = img_aio_run(op->img, op->req);
	if (ret < 0)
		op_fail(op, ret);
}

static void *pool_worker(void *arg)
{
	struct img_aio *aio = arg;

	pthread_mutex_lock(&aio->lock);
	for (;;) {
		struct aio_op *op;

		while (!aio->queue.head && !aio->stop) {
			aio->idle_workers++;
			pthread_cond_wait(&aio->work, &aio->lock);
			aio->idle_workers--;
		}
		op = list_pop(&aio->queue);
		if (!op)
			break;
		pthread_mutex_unlock(&aio->lock);
		pool_run(op);
		pthread_mutex_lock(&aio->lock);
		list_push(&aio->ready, op);
		signal_efd(aio);
	}
	pthread_mutex_unlock(&aio->lock);
	return NULL;
}

/* Queue op for the pool, starting a worker if none is idle. */
static int pool_queue(struct img_aio *aio, struct aio_op *op)
{
	int ret = 0;

	pthread_mutex_lock(&aio->lock);
	list_push(&aio->queue, op);
	if (!aio->idle_workers && aio->nthreads < aio->max_threads) {
		ret = pthread_create(&aio->threads[aio->nthreads], NULL,
				     pool_worker, aio);
		if (ret == 0)
			aio->nthreads++;
		else if (aio->nthreads)
			ret = 0; /* the running ones will get to it */
	}
	if (ret) {
		aio->queue.tail = NULL;
		aio->queue.head = NULL;
	} else {
		pthread_cond_signal(&aio->work);
	}
	pthread_mutex_unlock(&aio->lock);
	if (ret)
		return img_error(-ret, "aio: cannot start a worker: %s",
				 strerror(ret));
	return 0;
}

/* ---- the ring ---- */

static bool ring_prep(struct img_aio *aio, struct aio_op *op, unsigned i,
		      int fd)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&aio->ring);
	struct img_io_vec *v = &op->vecs[i];

	if (!sqe) {
		/* Full of prepared entries: hand them to the kernel. */
		io_uring_submit(&aio->ring);
		sqe = io_uring_get_sqe(&aio->ring);
		if (!sqe)
			return false;
	}
	if (v->write)
		io_uring_prep_write(sqe, fd, v->buf, (unsigned)v->len,
				    v->file_off);
	else
		io_uring_prep_read(sqe, fd, v->buf, (unsigned)v->len,
				   v->file_off);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)op | i);
	return true;
}

/* Whether op's mapped vecs can go on the ring as they are. */
static bool ringable(struct img_aio *aio, struct aio_op *op)
{
	if (!aio->have_ring || img_io_fd(op->io) < 0 ||
	    atomic_load(&aio->ring_inflight) + op->n > RING_MAX_INFLIGHT)
		return false;
	for (unsigned i = 0; i < op->n; i++)
		if (!img_io_transfer_ok(op->io, op->vecs[i].buf,
					op->vecs[i].len, op->vecs[i].file_off))
			return false;
	return true;
}

static void ring_complete(struct aio_op *op, unsigned i, int res);

static void ring_queue(struct img_aio *aio, struct aio_op *op)
{
	int fd = img_io_fd(op->io);
	unsigned queued = 0;

	atomic_store(&op->pending, op->n);
	atomic_fetch_add(&aio->ring_inflight, op->n);
	for (unsigned i = 0; i < op->n; i++) {
		if (ring_prep(aio, op, i, fd)) {
			queued++;
			continue;
		}
		/* No entry to be had: this one on its own, here. */
		ring_complete(op, i, 0);
		atomic_fetch_sub(&aio->ring_inflight, 1);
		if (atomic_fetch_sub(&op->pending, 1) == 1) {
			op_end_vecs(op);
			op_ready(aio, op);
		}
	}
	if (!queued)
		return;
	for (unsigned tries = 0; io_uring_sq_ready(&aio->ring) && tries < 100;
	     tries++) {
		int ret = io_uring_submit(&aio->ring);

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			break;
	}
}

/*
 * A ring transfer ended with res. Short or interrupted ones finish with a
 * plain call here: the submission side belongs to the submitting thread.
 */
static void ring_complete(struct aio_op *op, unsigned i, int res)
{
	struct img_io_vec *v = &op->vecs[i];
	uint64_t got = res > 0 ? (uint64_t)res : 0;
	int ret = 0;

	if (res < 0 && res != -EINTR && res != -EAGAIN) {
		ret = img_error(res,
				"aio: %s of %" PRIu64 " bytes at %#" PRIx64
				" in '%s' failed: %s",
				v->write ? "write" : "read", v->len,
				v->file_off, op->io->path ? op->io->path : "?",
				strerror(-res));
	} else if (got < v->len) {
		uint8_t *p = (uint8_t *)v->buf + got;

		img_clear_error();
		ret = v->write ? img_io_pwrite(op->io, p, v->len - got,
					       v->file_off + got) :
				 img_io_pread(op->io, p, v->len - got,
					      v->file_off + got);
	}
	if (ret < 0)
		op_fail(op, ret);
}

/* Reap what the ring has completed. Called with cq_lock held. */
static void ring_reap(struct img_aio *aio)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;

	io_uring_for_each_cqe(&aio->ring, head, cqe)
	{
		uint64_t data = io_uring_cqe_get_data64(cqe);
		struct aio_op *op =
			(struct aio_op *)(uintptr_t)(data &
						     ~(uint64_t)(OP_ALIGN - 1));
		unsigned i = (unsigned)(data & (OP_ALIGN - 1));

		seen++;
		ring_complete(op, i, cqe->res);
		atomic_fetch_sub(&aio->ring_inflight, 1);
		if (atomic_fetch_sub(&op->pending, 1) == 1) {
			op_end_vecs(op);
			op_ready(aio, op);
		}
	}
	io_uring_cq_advance(&aio->ring, seen);
}

void img_aio_reap_all(void)
{
	pthread_mutex_lock(&registry_lock);
	for (struct img_aio *a = registry; a; a = a->reg_next)
		if (atomic_load(&a->ring_inflight) &&
		    pthread_mutex_trylock(&a->cq_lock) == 0) {
			ring_reap(a);
			pthread_mutex_unlock(&a->cq_lock);
		}
	pthread_mutex_unlock(&registry_lock);
}

/* ---- the API ---- */

int img_aio_new(unsigned nthreads, struct img_aio **out)
{
	struct img_aio *aio;

	if (!nthreads) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		nthreads = ncpu > 2 ? (unsigned)ncpu : 2;
	}
	if (nthreads > AIO_MAX_THREADS)
		nthreads = AIO_MAX_THREADS;
	aio = calloc(1, sizeof(*aio));
	if (!aio)
		return img_error(-ENOMEM, "aio: out of memory");
	aio->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (aio->efd < 0) {
		int err = errno;

		free(aio);
		return img_error(-err, "aio: eventfd: %s", strerror(err));
	}
	aio->max_threads = nthreads;
	pthread_mutex_init(&aio->lock, NULL);
	pthread_mutex_init(&aio->cq_lock, NULL);
	pthread_cond_init(&aio->work, NULL);
	if (io_uring_queue_init(RING_ENTRIES, &aio->ring, 0) == 0) {
		if (io_uring_register_eventfd(&aio->ring, aio->efd) == 0) {
			aio->have_ring = true;
			pthread_mutex_lock(&registry_lock);
			aio->reg_next = registry;
			registry = aio;
			pthread_mutex_unlock(&registry_lock);
		} else {
			io_uring_queue_exit(&aio->ring);
		}
	}
	*out = aio;
	return 0;
}

int img_aio_fd(const struct img_aio *aio)
{
	return aio->efd;
}

bool img_aio_uses_ring(const struct img_aio *aio)
{
	return aio->have_ring;
}

static struct aio_op *op_get(struct img_aio *aio)
{
	struct aio_op *op;

	pthread_mutex_lock(&aio->lock);
	op = aio->free_ops;
	if (op)
		aio->free_ops = op->next;
	pthread_mutex_unlock(&aio->lock);
	if (!op) {
		op = aligned_alloc(OP_ALIGN, sizeof(*op));
		if (!op)
			return NULL;
	}
	op->next = NULL;
	op->ret = 0;
	op->msg[0] = 0;
	op->n = 0;
	op->io = NULL;
	op->req_started = false;
	return op;
}

static void op_put(struct img_aio *aio, struct aio_op *op)
{
	pthread_mutex_lock(&aio->lock);
	op->next = aio->free_ops;
	aio->free_ops = op;
	pthread_mutex_unlock(&aio->lock);
}

/* Map op's read or write to host transfers: 1 (op->vecs set, a transfer
 * counted in flight), 0 (the pool's normal path) or -errno. */
static int op_map(struct aio_op *op)
{
	struct img_aio_req *req = op->req;
	bool write = req->op == IMG_AIO_WRITE;

	/* An image whose own file has no plain descriptor (rbd, mem,
	 * faulty) is not worth mapping here only for the pool to map it
	 * again. */
	if (!op->aio->have_ring || img_io_fd(img_file(op->img)) < 0 ||
	    (req->op != IMG_AIO_READ && !write) || (req->flags & IMG_FUA) ||
	    !req->len || req->len > IMG_MAX_REQUEST ||
	    req->off > img_size(op->img) ||
	    req->len > img_size(op->img) - req->off ||
	    (write && img_read_only(op->img)))
		return 0; /* the normal path checks and reports */
	op->n = IMG_DIRECT_MAX_VECS;
	return img_direct_map(op->img, req->buf, req->off, req->len, write,
			      &op->io, op->vecs, &op->n);
}

int img_aio_submit(struct img_aio *aio, struct img *img,
		   struct img_aio_req *req)
{
	struct aio_op *op;
	int ret;

	if (!img || !req || !req->done)
		return img_error(-EINVAL, "aio: request without an image or "
					  "a completion callback");
	if ((unsigned)req->op > IMG_AIO_FLUSH)
		return img_error(-EINVAL, "aio: unknown request type %d",
				 (int)req->op);
	op = op_get(aio);
	if (!op)
		return img_error(-ENOMEM, "aio: out of memory");
	op->req = req;
	op->img = img;
	op->aio = aio;
	req->error = NULL;
	atomic_fetch_add(&aio->inflight, 1);

	img_clear_error();
	ret = op_map(op);
	if (ret > 0 && req->start) {
		/* The pool calls start() itself, just before it runs one. */
		int r = req->start(req);

		if (r < 0) {
			img_direct_release(img);
			ret = r;
		}
	}
	if (ret < 0) {
		op_fail(op, ret);
		op_ready(aio, op);
		return 0;
	}
	if (ret > 0 && !op->n) {
		op_end_vecs(op); /* a read the mapping filled with zeroes */
		op_ready(aio, op);
		return 0;
	}
	if (ret > 0 && ringable(aio, op)) {
		ring_queue(aio, op);
		return 0;
	}
	if (ret > 0) {
		/* Not for the ring (no plain descriptor, unaligned O_DIRECT):
		 * the pool maps it again. Nothing may stay mapped while it
		 * waits in the queue: a thread draining the image under its
		 * lock would wait for it while the workers wait for the lock. */
		img_direct_release(img);
		if (req->start)
			op->req_started = true;
	}
	ret = pool_queue(aio, op);
	if (ret < 0) {
		op_fail(op, ret);
		op_ready(aio, op);
	}
	return 0;
}

int img_aio_poll(struct img_aio *aio)
{
	struct op_list ready;
	uint64_t v;
	int n = 0;

	if (read(aio->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return img_error(-errno, "aio: eventfd: %s", strerror(errno));
	if (aio->have_ring && atomic_load(&aio->ring_inflight)) {
		pthread_mutex_lock(&aio->cq_lock);
		ring_reap(aio);
		pthread_mutex_unlock(&aio->cq_lock);
	}
	pthread_mutex_lock(&aio->lock);
	ready = aio->ready;
	aio->ready.head = aio->ready.tail = NULL;
	pthread_mutex_unlock(&aio->lock);
	for (struct aio_op *op = ready.head, *next; op; op = next) {
		struct img_aio_req *req = op->req;

		next = op->next;
		req->error = op->ret < 0 ? op->msg : NULL;
		req->done(req, op->ret);
		op_put(aio, op);
		atomic_fetch_sub(&aio->inflight, 1);
		n++;
	}
	return n;
}

int img_aio_wait(struct img_aio *aio)
{
	for (;;) {
		struct pollfd p = { .fd = aio->efd, .events = POLLIN };
		int n = img_aio_poll(aio);

		if (n != 0 || !atomic_load(&aio->inflight))
			return n;
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			return img_error(-errno, "aio: poll: %s",
					 strerror(errno));
	}
}

unsigned img_aio_inflight(const struct img_aio *aio)
{
	return atomic_load(&aio->inflight);
}

int img_aio_cancel(struct img_aio *aio, const void *opaque)
{
	struct op_list keep = { 0 }, gone = { 0 };
	struct aio_op *op;
	int n = 0;

	pthread_mutex_lock(&aio->lock);
	while ((op = list_pop(&aio->queue))) {
		if (op->req->opaque == opaque) {
			list_push(&gone, op);
			n++;
		} else {
			list_push(&keep, op);
		}
	}
	aio->queue = keep;
	while ((op = list_pop(&gone))) {
		op->ret = -ECANCELED;
		snprintf(op->msg, sizeof(op->msg), "request cancelled");
		list_push(&aio->ready, op);
	}
	pthread_mutex_unlock(&aio->lock);
	if (n)
		signal_efd(aio);
	return n;
}

void img_aio_drain(struct img_aio *aio)
{
	while (atomic_load(&aio->inflight))
		if (img_aio_wait(aio) < 0)
			break;
}

void img_aio_free(struct img_aio *aio)
{
	if (!aio)
		return;
	img_aio_drain(aio);
	pthread_mutex_lock(&aio->lock);
	aio->stop = true;
	pthread_cond_broadcast(&aio->work);
	pthread_mutex_unlock(&aio->lock);
	for (unsigned i = 0; i < aio->nthreads; i++)
		pthread_join(aio->threads[i], NULL);
	if (aio->have_ring) {
		pthread_mutex_lock(&registry_lock);
		for (struct img_aio **p = &registry; *p; p = &(*p)->reg_next)
			if (*p == aio) {
				*p = aio->reg_next;
				break;
			}
		pthread_mutex_unlock(&registry_lock);
		io_uring_queue_exit(&aio->ring);
	}
	while (aio->free_ops) {
		struct aio_op *op = aio->free_ops;

		aio->free_ops = op->next;
		free(op);
	}
	close(aio->efd);
	pthread_cond_destroy(&aio->work);
	pthread_mutex_destroy(&aio->cq_lock);
	pthread_mutex_destroy(&aio->lock);
	free(aio);
}

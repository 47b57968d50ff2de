/* SPDX-License-Identifier: MIT */
/*
 * The img-nbd server core. The main thread polls the listening sockets and
 * a self-pipe (stop requests) and starts one detached reader thread per
 * connection. A reader runs the fixed newstyle handshake (bounded by a
 * deadline and by the option size cap), then reads requests, validates them
 * with nbd_check_request() and runs them. READ, CACHE (a read whose data is
 * dropped), WRITE, WRITE_ZEROES, TRIM (FUA: flushed before the reply) and
 * FLUSH go to the connection's own async engine (lib/aio.c): the reader
 * thread submits them, the data of reads and writes the image maps straight
 * to its file goes on the engine's io_uring ring from that thread, and the
 * rest runs on the engine's small pool (--threads workers per connection).
 * A reaper thread per connection waits on the engine's eventfd and delivers
 * the completions, whose done() callback sends the reply under the
 * connection's send lock, so replies go out in completion order. A
 * connection holds at most CONN_MAX_INFLIGHT requests and CONN_MAX_BYTES of
 * buffers (plus one request of any size), all connections together at most
 * SERVER_MAX_BYTES (a reader waits for its share, reading nothing meanwhile:
 * TCP pushes back on the client). With --threads=0 requests run on the
 * reader thread itself, one at a time.
 * A client that is gone (EOF or reset on read without NBD_CMD_DISC, a
 * failed send) gets nothing more read or sent: its reads still queued for
 * the pool are dropped (img_aio_cancel), a large read not yet submitted is
 * checked with poll() first, writes it sent and requests already running
 * finish, and its slot is free for a new client before they do.
 * BLOCK_STATUS and zero-range reads are always answered on the reader
 * thread, and so is every request of a TLS connection, because an OpenSSL
 * session cannot be read and written from two threads at once.
 *
 * Each image is opened once per process and shared by every connection, so
 * a FLUSH on one connection covers writes replied to on all of them: that
 * is what NBD_FLAG_CAN_MULTI_CONN promises.
 *
 * Meta contexts: base:allocation (id 1), qemu:allocation-depth (id 2, -A)
 * and qemu:dirty-bitmap:NAME (id 3, -B NAME).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nbd-server.h"
#include "nbd-tls.h"
#include "nbd-wire.h"

#define MAX_PAYLOAD (32u << 20) /* request size cap */
#define CONN_MAX_INFLIGHT 64
#define CONN_MAX_BYTES (4u << 20) /* beyond one request of any size */
/*
 * Data buffers of all connections together (beyond one request of any
 * size): without it, 100 connections that each queue large reads and never
 * take the replies held 100 x (CONN_MAX_BYTES + a request) of memory. Four
 * maximum-size requests, or 32 connections with a full CONN_MAX_BYTES window
 * each: more than the pool's workers (2 per CPU) or a client like nbdcopy
 * (4 connections of at most CONN_MAX_BYTES + 256 KiB here) can keep busy.
 */
#define SERVER_MAX_BYTES (4ull * MAX_PAYLOAD)
#define MAX_DESCRIPTORS 1024 /* per block status chunk */
#define MAX_STATUS_CALLS 8192 /* img_block_status calls per chunk */
#define MAX_DISCARD_OPT (16u << 20) /* option payload we skip over */
#define PREFERRED_BLOCK 4096
#define SEND_TIMEOUT 10 /* seconds a reply may wait for the client */
#define HANGUP_CHECK_MIN (128u << 10) /* reads this large poll for a hang-up */
#define BUF_CACHE_SLOTS 16 /* data buffers a connection keeps for reuse */
#define BUF_CACHE_BYTES (4u << 20) /* and their total size at most */
#define BUF_CACHE_MAX (1u << 20) /* the largest one kept */

enum {
	CTX_BASE = 1,
	CTX_DEPTH = 2,
	CTX_BITMAP = 3,
};

static const char ctx_base[] = "base:allocation";
static const char ctx_depth[] = "qemu:allocation-depth";
static const char ctx_bitmap_prefix[] = "qemu:dirty-bitmap:";

struct nbd_server {
	struct nbd_server_opts opts;
	struct nbd_export *exports;
	size_t n_exports;
	int stop_pipe[2];
	pthread_mutex_t lock;
	pthread_cond_t gone; /* a connection ended */
	struct conn *conns; /* every connection not yet freed */
	unsigned n_conns; /* slots: connections still reading requests */
	unsigned n_live; /* connections not yet freed (drain waits for 0) */
	/* The SERVER_MAX_BYTES budget, handed out in arrival order (tickets)
	 * so that small requests cannot starve a large one. */
	pthread_mutex_t budget_lock;
	pthread_cond_t budget_cond;
	uint64_t budget_used, budget_next, budget_turn;
	bool served; /* a client reached transmission at some point */
	atomic_int stopping; /* lock-free: set from a signal handler */
};

struct conn {
	struct nbd_server *srv;
	struct conn *next, *prev;
	int fd;
	struct nbd_tls_conn *tls;
	struct timespec deadline; /* handshake end; tv_sec 0 = none */
	uint8_t rbuf[16384];
	size_t rpos, rlen;

	pthread_mutex_t send_lock;
	bool send_failed;
	atomic_bool gone; /* client gone: read nothing, send nothing more */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned inflight;
	uint64_t inflight_bytes;

	/* The connection's async engine (NULL: everything runs on the
	 * reader thread), and the thread that delivers its completions. */
	struct img_aio *aio;
	pthread_t reaper;
	atomic_bool reaper_stop;

	/* Negotiated state. */
	bool no_zeroes, structured, extended, tls_done;
	bool ctx_on[4]; /* selected meta contexts, by id */
	const struct nbd_export *ctx_exp; /* export they were selected for */
	struct nbd_export *exp;
	uint16_t tflags;
	uint8_t *opt_buf; /* option payloads, NBD_MAX_OPT_PAYLOAD bytes */
	void *bufs[BUF_CACHE_SLOTS]; /* free buffers, see buf_get() */
	size_t buf_caps[BUF_CACHE_SLOTS];
	size_t buf_cached; /* bytes in bufs[] */
};

struct job {
	struct img_aio_req req;
	struct conn *c;
	struct nbd_request r;
	void *buf;
	uint64_t bytes; /* accounted against CONN_MAX_BYTES */
};

static void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void log_msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("img-nbd: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- socket I/O ---- */

static bool past_deadline(const struct conn *c)
{
	struct timespec now;

	if (!c->deadline.tv_sec)
		return false;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > c->deadline.tv_sec ||
	       (now.tv_sec == c->deadline.tv_sec &&
		now.tv_nsec >= c->deadline.tv_nsec);
}

static ssize_t raw_read(struct conn *c, void *buf, size_t n)
{
	ssize_t r;

	if (past_deadline(c))
		return -ETIMEDOUT;
	if (c->tls)
		return nbd_tls_read(c->tls, buf, n);
	do
		r = recv(c->fd, buf, n, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EAGAIN ? -ETIMEDOUT : -errno;
	return r;
}

/* Read exactly n bytes: 0, or -errno (-ECONNRESET on a short stream). */
static int conn_read(struct conn *c, void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n) {
		ssize_t r;

		if (c->rpos < c->rlen) {
			size_t k = c->rlen - c->rpos;

			if (k > n)
				k = n;
			memcpy(p, c->rbuf + c->rpos, k);
			c->rpos += k;
			p += k;
			n -= k;
			continue;
		}
		if (n >= sizeof(c->rbuf)) {
			r = raw_read(c, p, n);
			if (r <= 0)
				return r ? (int)r : -ECONNRESET;
			p += r;
			n -= r;
			continue;
		}
		r = raw_read(c, c->rbuf, sizeof(c->rbuf));
		if (r <= 0)
			return r ? (int)r : -ECONNRESET;
		c->rpos = 0;
		c->rlen = r;
	}
	return 0;
}

/* Read and drop n bytes. */
static int conn_skip(struct conn *c, uint64_t n)
{
	uint8_t tmp[4096];

	while (n) {
		size_t k = n > sizeof(tmp) ? sizeof(tmp) : n;
		int ret = conn_read(c, tmp, k);

		if (ret < 0)
			return ret;
		n -= k;
	}
	return 0;
}

/* Write the whole iovec; caller holds send_lock once transmission runs. */
static int conn_writev(struct conn *c, struct iovec *iov, int n)
{
	if (c->send_failed || atomic_load(&c->gone))
		return -EPIPE;
	if (c->tls) {
		for (int i = 0; i < n; i++) {
			int ret = nbd_tls_write(c->tls, iov[i].iov_base,
						iov[i].iov_len);

			if (ret < 0) {
				c->send_failed = true;
				return ret;
			}
		}
		return 0;
	}
	while (n) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = n };
		ssize_t r = sendmsg(c->fd, &mh, MSG_NOSIGNAL);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			c->send_failed = true;
			return -errno;
		}
		while (n && (size_t)r >= iov->iov_len) {
			r -= iov->iov_len;
			iov++;
			n--;
		}
		if (!n)
			break;
		iov->iov_base = (uint8_t *)iov->iov_base + r;
		iov->iov_len -= r;
	}
	return 0;
}

static int conn_write(struct conn *c, const void *buf, size_t n)
{
	struct iovec iov = { (void *)buf, n };

	return conn_writev(c, &iov, 1);
}

/* ---- replies in the transmission phase ---- */

static enum nbd_reply_mode reply_mode(const struct conn *c)
{
	if (c->extended)
		return NBD_MODE_EXTENDED;
	return c->structured ? NBD_MODE_STRUCTURED : NBD_MODE_SIMPLE;
}

static void conn_abandon(struct conn *c);

/* Send iov (whose iov[0] the caller reserved for the header) under lock. */
static int send_locked(struct conn *c, struct iovec *iov, int n)
{
	int ret;

	pthread_mutex_lock(&c->send_lock);
	ret = conn_writev(c, iov, n);
	pthread_mutex_unlock(&c->send_lock);
	if (ret < 0)
		conn_abandon(c);
	return ret;
}

/* A reply without data: success, or error (with a message if structured). */
static int reply_status(struct conn *c, const struct nbd_request *r,
			uint32_t error, const char *msg)
{
	uint8_t hdr[NBD_MAX_REPLY_HDR_SIZE], payload[6 + 256];
	struct iovec iov[2];
	size_t plen;

	if (reply_mode(c) == NBD_MODE_SIMPLE ||
	    (!error && reply_mode(c) == NBD_MODE_STRUCTURED)) {
		iov[0].iov_base = hdr;
		iov[0].iov_len = nbd_build_simple_reply(hdr, error, r->cookie);
		return send_locked(c, iov, 1);
	}
	if (!error) {
		iov[0].iov_base = hdr;
		iov[0].iov_len = nbd_build_chunk(hdr, reply_mode(c),
						 NBD_REPLY_FLAG_DONE,
						 NBD_REPLY_TYPE_NONE, r->cookie,
						 r->off, 0);
		return send_locked(c, iov, 1);
	}
	plen = nbd_build_error_payload(payload, sizeof(payload), error, msg);
	iov[0].iov_base = hdr;
	iov[0].iov_len =
		nbd_build_chunk(hdr, reply_mode(c), NBD_REPLY_FLAG_DONE,
				NBD_REPLY_TYPE_ERROR, r->cookie, r->off, plen);
	iov[1].iov_base = payload;
	iov[1].iov_len = plen;
	return send_locked(c, iov, 2);
}

static int reply_read(struct conn *c, const struct nbd_request *r,
		      const void *data)
{
	uint8_t hdr[NBD_MAX_REPLY_HDR_SIZE + 8];
	struct iovec iov[2];
	size_t n;

	if (reply_mode(c) == NBD_MODE_SIMPLE) {
		n = nbd_build_simple_reply(hdr, 0, r->cookie);
	} else {
		n = nbd_build_chunk(hdr, reply_mode(c), NBD_REPLY_FLAG_DONE,
				    NBD_REPLY_TYPE_OFFSET_DATA, r->cookie,
				    r->off, 8 + r->len);
		nbd_put64(hdr + n, r->off);
		n += 8;
	}
	iov[0].iov_base = hdr;
	iov[0].iov_len = n;
	iov[1].iov_base = (void *)data;
	iov[1].iov_len = r->len;
	return send_locked(c, iov, 2);
}

/* The whole read range reads as zeroes: one hole chunk. */
static int reply_hole(struct conn *c, const struct nbd_request *r)
{
	uint8_t hdr[NBD_MAX_REPLY_HDR_SIZE + 12];
	struct iovec iov;
	size_t n;

	n = nbd_build_chunk(hdr, reply_mode(c), NBD_REPLY_FLAG_DONE,
			    NBD_REPLY_TYPE_OFFSET_HOLE, r->cookie, r->off, 12);
	nbd_put64(hdr + n, r->off);
	nbd_put32(hdr + n + 8, (uint32_t)r->len);
	iov.iov_base = hdr;
	iov.iov_len = n + 12;
	return send_locked(c, &iov, 1);
}

/* ---- request execution ---- */

/* Capacity of the buffer buf_get() hands out for len bytes. */
static size_t buf_cap(uint64_t len)
{
	size_t cap = 65536;

	if (len > BUF_CACHE_MAX)
		return len;
	while (cap < len)
		cap *= 2;
	return cap;
}

/*
 * A page-aligned data buffer for len bytes. Buffers up to BUF_CACHE_MAX come
 * in power-of-two sizes and go back to a small per-connection cache, so a
 * stream of requests does not map and fault in fresh memory each time
 * (measured: a third of the server CPU of 1 MiB reads).
 */
static void *buf_get(struct conn *c, uint64_t len)
{
	size_t cap = buf_cap(len);
	void *p = NULL;

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < BUF_CACHE_SLOTS; i++)
		if (c->bufs[i] && c->buf_caps[i] == cap) {
			p = c->bufs[i];
			c->bufs[i] = NULL;
			c->buf_cached -= cap;
			break;
		}
	pthread_mutex_unlock(&c->lock);
	if (!p && posix_memalign(&p, 4096, cap))
		p = NULL;
	return p;
}

/* Give back a buf_get(c, len) buffer (NULL is a no-op). */
static void buf_put(struct conn *c, void *buf, uint64_t len)
{
	size_t cap = buf_cap(len);

	if (!buf)
		return;
	if (cap <= BUF_CACHE_MAX) {
		pthread_mutex_lock(&c->lock);
		for (int i = 0; i < BUF_CACHE_SLOTS &&
				c->buf_cached + cap <= BUF_CACHE_BYTES;
		     i++)
			if (!c->bufs[i]) {
				c->bufs[i] = buf;
				c->buf_caps[i] = cap;
				c->buf_cached += cap;
				buf = NULL;
				break;
			}
		pthread_mutex_unlock(&c->lock);
	}
	free(buf);
}

/*
 * Take bytes of the server-wide budget, waiting (and so reading nothing more
 * from this client: TCP pushes back) until the requests ahead in line fit.
 */
static void budget_take(struct nbd_server *s, uint64_t bytes)
{
	uint64_t ticket;

	if (!bytes)
		return;
	pthread_mutex_lock(&s->budget_lock);
	ticket = s->budget_next++;
	while (ticket != s->budget_turn ||
	       (s->budget_used && s->budget_used + bytes > SERVER_MAX_BYTES))
		pthread_cond_wait(&s->budget_cond, &s->budget_lock);
	s->budget_turn++;
	s->budget_used += bytes;
	pthread_cond_broadcast(&s->budget_cond);
	pthread_mutex_unlock(&s->budget_lock);
}

static void budget_give(struct nbd_server *s, uint64_t bytes)
{
	if (!bytes)
		return;
	pthread_mutex_lock(&s->budget_lock);
	s->budget_used -= bytes;
	pthread_cond_broadcast(&s->budget_cond);
	pthread_mutex_unlock(&s->budget_lock);
}

static void conn_release(struct conn *c, uint64_t bytes)
{
	budget_give(c->srv, bytes);
	pthread_mutex_lock(&c->lock);
	c->inflight--;
	c->inflight_bytes -= bytes;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static void job_done(struct img_aio_req *req, int ret)
{
	struct job *j = (struct job *)req;
	struct conn *c = j->c;

	uint64_t bytes = j->bytes;

	if (ret < 0)
		reply_status(c, &j->r, nbd_errno(ret), req->error);
	else if (j->r.type == NBD_CMD_READ)
		reply_read(c, &j->r, j->buf);
	else
		reply_status(c, &j->r, 0, NULL);
	buf_put(c, j->buf, j->r.len);
	free(j);
	conn_release(c, bytes);
}

/* Wait until the connection, then the server, may take one more request of
 * bytes. */
static void conn_reserve(struct conn *c, uint64_t bytes)
{
	pthread_mutex_lock(&c->lock);
	while (c->inflight >= CONN_MAX_INFLIGHT ||
	       (c->inflight && c->inflight_bytes + bytes > CONN_MAX_BYTES))
		pthread_cond_wait(&c->cond, &c->lock);
	c->inflight++;
	c->inflight_bytes += bytes;
	pthread_mutex_unlock(&c->lock);
	budget_take(c->srv, bytes);
}

/*
 * The client is gone (EOF or reset on read, a failed send): read nothing
 * more, drop its reads still queued in the pool, and send nothing more, so
 * that running requests finish without waiting on the socket. The shutdown
 * wakes a send blocked on this socket. Not on a server stop: then the
 * requests already read still get their replies.
 */
static void conn_abandon(struct conn *c)
{
	if (atomic_exchange(&c->gone, true))
		return;
	shutdown(c->fd, SHUT_RDWR);
	if (c->aio)
		img_aio_cancel(c->aio, c);
}

/* The client has closed or reset the connection: checked before a large
 * request runs on the reader thread, which reads ahead of what it runs. */
static bool peer_hung_up(struct conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };

	if (atomic_load(&c->srv->stopping)) /* our own SHUT_RD */
		return false;
	return poll(&p, 1, 0) == 1 &&
	       (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* A queued read whose client went while it waited (img_aio_cancel() may
 * not have seen it yet: another worker had just taken it) does not run. */
static int job_start(struct img_aio_req *req)
{
	struct job *j = (struct job *)req;

	if (req->op == IMG_AIO_READ && atomic_load(&j->c->gone))
		return img_error(-ECANCELED, "nbd: the client is gone");
	return 0;
}

/* Requests go to the connection's engine; otherwise they run on the
 * reader thread. */
static bool use_pool(const struct conn *c)
{
	return c->aio;
}

/*
 * Run op for request r with buf (from buf_get(), owned by the request from
 * now on) and send the reply, at once or on completion in the pool. Slots
 * were reserved by the caller.
 */
static void submit(struct conn *c, const struct nbd_request *r,
		   enum img_aio_op op, void *buf, unsigned flags)
{
	struct job *j;
	int ret;

	/* A read (or CACHE) for a client that is gone is dropped, and a large
	 * one is worth a poll() to find out; what a client sent to be written
	 * is written even if it left. */
	if (op == IMG_AIO_READ &&
	    (atomic_load(&c->gone) ||
	     (r->len >= HANGUP_CHECK_MIN && peer_hung_up(c)))) {
		conn_abandon(c);
		buf_put(c, buf, r->len);
		conn_release(c, buf ? r->len : 0);
		return;
	}
	if (!use_pool(c)) {
		struct img_aio_req q = {
			.op = op,
			.buf = buf,
			.off = r->off,
			.len = r->len,
			.flags = flags,
		};

		img_clear_error();
		ret = img_aio_run(c->exp->img, &q);
		if (ret < 0)
			reply_status(c, r, nbd_errno(ret), img_last_error());
		else if (r->type == NBD_CMD_READ)
			reply_read(c, r, buf);
		else
			reply_status(c, r, 0, NULL);
		buf_put(c, buf, r->len);
		conn_release(c, buf ? r->len : 0);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		buf_put(c, buf, r->len);
		reply_status(c, r, NBD_ENOMEM, "out of memory");
		conn_release(c, buf ? r->len : 0);
		return;
	}
	j->c = c;
	j->r = *r;
	j->buf = buf;
	j->bytes = buf ? r->len : 0;
	j->req.op = op;
	j->req.buf = buf;
	j->req.off = r->off;
	j->req.len = r->len;
	j->req.flags = flags;
	j->req.done = job_done;
	j->req.start = job_start;
	/* Only reads are cancelled (see above). */
	j->req.opaque = op == IMG_AIO_READ ? c : NULL;
	ret = img_aio_submit(c->aio, c->exp->img, &j->req);
	if (ret < 0) {
		j->req.error = img_last_error();
		job_done(&j->req, ret);
	}
}

static bool all_zero(const uint8_t *p, uint64_t len)
{
	if (!len)
		return true;
	return p[0] == 0 && !memcmp(p, p + 1, len - 1);
}

/* Status of [off, off+len) in context ctx: *status and *run bytes. */
static int ctx_status(struct conn *c, int ctx, uint64_t off, uint64_t len,
		      uint32_t *status, uint64_t *run)
{
	struct img_extent e;
	int ret;

	switch (ctx) {
	case CTX_BITMAP: {
		bool dirty;

		ret = img_bitmap_dirty(c->exp->img, c->exp->bitmap, off, len,
				       &dirty, run);
		*status = dirty;
		return ret;
	}
	case CTX_DEPTH:
		ret = img_block_status(c->exp->img, off, len, 0, &e);
		if (ret < 0)
			return ret;
		*status = (e.flags & IMG_EXT_ALLOCATED) ? e.depth + 1 : 0;
		*run = e.len;
		return 0;
	default:
		ret = img_block_status(c->exp->img, off, len, 0, &e);
		if (ret < 0)
			return ret;
		*status = ((e.flags & IMG_EXT_DATA) ? 0 : NBD_STATE_HOLE) |
			  ((e.flags & IMG_EXT_ZERO) ? NBD_STATE_ZERO : 0);
		*run = e.len;
		return 0;
	}
}

struct desc {
	uint64_t len;
	uint32_t status;
};

/* Fill descs for ctx over r; returns the count (>= 1) or -errno. */
static int collect(struct conn *c, int ctx, const struct nbd_request *r,
		   struct desc *descs)
{
	uint64_t off = r->off, end = r->off + r->len;
	int n = 0;

	for (unsigned calls = 0; off < end && calls < MAX_STATUS_CALLS;
	     calls++) {
		uint32_t status;
		uint64_t run;
		int ret = ctx_status(c, ctx, off, end - off, &status, &run);

		if (ret < 0)
			return ret;
		if (!run || run > end - off)
			run = end - off;
		/* Compact descriptors hold 32-bit lengths. */
		if (!c->extended && run > UINT32_MAX - 4095)
			run = UINT32_MAX - 4095;
		if (n && descs[n - 1].status == status &&
		    descs[n - 1].len + run >= descs[n - 1].len &&
		    (c->extended ||
		     descs[n - 1].len + run <= UINT32_MAX - 4095)) {
			descs[n - 1].len += run;
		} else {
			if (n == MAX_DESCRIPTORS)
				break;
			descs[n].len = run;
			descs[n].status = status;
			n++;
		}
		off += run;
		if ((r->flags & NBD_CMD_FLAG_REQ_ONE) && n == 1)
			break;
	}
	if (r->flags & NBD_CMD_FLAG_REQ_ONE)
		n = 1;
	return n;
}

static void do_block_status(struct conn *c, const struct nbd_request *r)
{
	static const uint8_t order[] = { CTX_BASE, CTX_DEPTH, CTX_BITMAP };
	struct desc *descs = malloc(sizeof(*descs) * MAX_DESCRIPTORS);
	uint8_t *payload = malloc(8 + MAX_DESCRIPTORS * 16);
	int last = 0;

	if (!descs || !payload) {
		reply_status(c, r, NBD_ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < sizeof(order); i++)
		if (c->ctx_on[order[i]])
			last = order[i];
	for (unsigned i = 0; i < sizeof(order); i++) {
		int ctx = order[i], n;
		uint8_t hdr[NBD_MAX_REPLY_HDR_SIZE];
		struct iovec iov[2];
		size_t plen = 0;

		if (!c->ctx_on[ctx])
			continue;
		n = collect(c, ctx, r, descs);
		if (n < 0) {
			reply_status(c, r, nbd_errno(n), img_last_error());
			goto out;
		}
		nbd_put32(payload, ctx);
		plen = 4;
		if (c->extended) {
			nbd_put32(payload + 4, n);
			plen = 8;
		}
		for (int k = 0; k < n; k++) {
			if (c->extended) {
				nbd_put64(payload + plen, descs[k].len);
				nbd_put64(payload + plen + 8, descs[k].status);
				plen += 16;
			} else {
				nbd_put32(payload + plen, descs[k].len);
				nbd_put32(payload + plen + 4, descs[k].status);
				plen += 8;
			}
		}
		iov[0].iov_base = hdr;
		iov[0].iov_len = nbd_build_chunk(
			hdr, reply_mode(c),
			ctx == last ? NBD_REPLY_FLAG_DONE : 0,
			c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT :
				      NBD_REPLY_TYPE_BLOCK_STATUS,
			r->cookie, r->off, plen);
		iov[1].iov_base = payload;
		iov[1].iov_len = plen;
		if (send_locked(c, iov, 2) < 0)
			goto out;
	}
out:
	free(descs);
	free(payload);
}

/* The read range reads as zeroes in one extent (cheap metadata check). */
static bool read_is_hole(struct conn *c, const struct nbd_request *r)
{
	struct img_extent e;

	if (!c->structured || (r->flags & NBD_CMD_FLAG_DF) || r->len < 65536)
		return false;
	return img_block_status(c->exp->img, r->off, r->len, 0, &e) == 0 &&
	       e.len >= r->len && (e.flags & IMG_EXT_ZERO) &&
	       !(e.flags & IMG_EXT_DATA);
}

/*
 * Handle one validated request. Returns 1 to go on, 0 for a clean
 * disconnect, -errno when the connection is lost.
 */
static int dispatch(struct conn *c, const struct nbd_request *r)
{
	const struct nbd_server_opts *o = &c->srv->opts;
	unsigned fua = (r->flags & NBD_CMD_FLAG_FUA) ? IMG_FUA : 0;
	void *buf;
	int ret;

	switch (r->type) {
	case NBD_CMD_DISC:
		return 0;
	case NBD_CMD_CACHE:
		/* Prefetch: read the range through the image (warming our
		 * metadata cache and the host page cache), reply when done. */
		if (read_is_hole(c, r))
			return reply_status(c, r, 0, NULL) < 0 ? -EPIPE : 1;
		/* fall through */
	case NBD_CMD_READ:
		if (r->type == NBD_CMD_READ && read_is_hole(c, r))
			return reply_hole(c, r) < 0 ? -EPIPE : 1;
		conn_reserve(c, r->len);
		buf = buf_get(c, r->len);
		if (!buf) {
			conn_release(c, r->len);
			return reply_status(c, r, NBD_ENOMEM, "out of memory") <
					       0 ?
				       -EPIPE :
				       1;
		}
		submit(c, r, IMG_AIO_READ, buf, 0);
		return 1;
	case NBD_CMD_WRITE:
		conn_reserve(c, r->len);
		buf = buf_get(c, r->len);
		if (!buf) {
			conn_release(c, r->len);
			ret = conn_skip(c, r->len);
			if (ret < 0)
				return ret;
			return reply_status(c, r, NBD_ENOMEM, "out of memory") <
					       0 ?
				       -EPIPE :
				       1;
		}
		ret = conn_read(c, buf, r->len);
		if (ret < 0) {
			buf_put(c, buf, r->len);
			conn_release(c, r->len);
			return ret;
		}
		if (o->detect_zeroes != NBD_DZ_OFF && all_zero(buf, r->len)) {
			unsigned f = fua;

			if (o->detect_zeroes == NBD_DZ_UNMAP && o->discard)
				f |= IMG_ZERO_MAY_UNMAP;
			buf_put(c, buf, r->len);
			conn_release(c, r->len);
			conn_reserve(c, 0);
			submit(c, r, IMG_AIO_ZERO, NULL, f);
			return 1;
		}
		submit(c, r, IMG_AIO_WRITE, buf, fua);
		return 1;
	case NBD_CMD_WRITE_ZEROES: {
		unsigned f = fua;

		if (!(r->flags & NBD_CMD_FLAG_NO_HOLE) && o->discard)
			f |= IMG_ZERO_MAY_UNMAP;
		if (r->flags & NBD_CMD_FLAG_FAST_ZERO)
			f |= IMG_ZERO_FAST;
		conn_reserve(c, 0);
		submit(c, r, IMG_AIO_ZERO, NULL, f);
		return 1;
	}
	case NBD_CMD_TRIM:
		/* Without --discard nothing changes: FUA has nothing to do. */
		if (!o->discard)
			return reply_status(c, r, 0, NULL) < 0 ? -EPIPE : 1;
		conn_reserve(c, 0);
		submit(c, r, IMG_AIO_DISCARD, NULL, fua);
		return 1;
	case NBD_CMD_FLUSH:
		conn_reserve(c, 0);
		submit(c, r, IMG_AIO_FLUSH, NULL, 0);
		return 1;
	case NBD_CMD_BLOCK_STATUS:
		do_block_status(c, r);
		return c->send_failed ? -EPIPE : 1;
	}
	return reply_status(c, r, NBD_EINVAL, "unknown command") < 0 ? -EPIPE :
								       1;
}

static void transmission(struct conn *c)
{
	struct nbd_limits lim = {
		.size = img_size(c->exp->img),
		.max_payload = MAX_PAYLOAD,
		.tflags = c->tflags,
		.structured = c->structured,
		.extended = c->extended,
	};
	uint8_t hdr[NBD_EXT_REQUEST_SIZE];
	size_t hdr_size = c->extended ? NBD_EXT_REQUEST_SIZE : NBD_REQUEST_SIZE;

	for (int i = 1; i < 4; i++)
		lim.has_contexts |= c->ctx_on[i];
	for (;;) {
		struct nbd_request r;
		uint64_t payload;
		uint32_t err;
		bool fatal;
		int ret;

		if (atomic_load(&c->gone))
			break;
		if (conn_read(c, hdr, hdr_size) < 0) {
			if (!atomic_load(&c->srv->stopping))
				conn_abandon(c);
			break;
		}
		if (nbd_parse_request(hdr, c->extended, &r) < 0) {
			log_msg("bad request magic %#" PRIx32 ": disconnecting",
				nbd_get32(hdr));
			break;
		}
		err = nbd_check_request(&r, &lim, &payload, &fatal);
		if (err) {
			if (fatal) {
				reply_status(c, &r, err, "request too large");
				break;
			}
			if (payload && conn_skip(c, payload) < 0)
				break;
			if (r.type == NBD_CMD_DISC)
				break;
			if (reply_status(c, &r, err, "invalid request") < 0)
				break;
			continue;
		}
		if (atomic_load(&c->srv->stopping)) {
			if (payload && conn_skip(c, payload) < 0)
				break;
			if (r.type == NBD_CMD_DISC ||
			    reply_status(c, &r, NBD_ESHUTDOWN,
					 "server is shutting down") < 0)
				break;
			continue;
		}
		ret = dispatch(c, &r);
		if (ret <= 0)
			break;
	}
}

/* ---- handshake ---- */

static struct nbd_export *find_export(struct nbd_server *s,
				      const struct nbd_str *name)
{
	if (!name->len)
		return s->n_exports ? &s->exports[0] : NULL;
	for (size_t i = 0; i < s->n_exports; i++)
		if (strlen(s->exports[i].name) == name->len &&
		    !memcmp(s->exports[i].name, name->p, name->len))
			return &s->exports[i];
	return NULL;
}

static int opt_reply(struct conn *c, uint32_t opt, uint32_t type,
		     const void *data, size_t len)
{
	uint8_t hdr[NBD_OPT_REPLY_HDR_SIZE];
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)data, len } };

	nbd_build_opt_reply(hdr, opt, type, len);
	return conn_writev(c, iov, len ? 2 : 1);
}

static int opt_error(struct conn *c, uint32_t opt, uint32_t type,
		     const char *msg)
{
	return opt_reply(c, opt, type, msg, strlen(msg));
}

static uint16_t export_tflags(const struct conn *c, const struct nbd_export *e)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
		     NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN |
		     NBD_FLAG_SEND_CACHE;

	if (e->read_only)
		f |= NBD_FLAG_READ_ONLY;
	else
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
		     NBD_FLAG_SEND_FAST_ZERO;
	if (c->structured)
		f |= NBD_FLAG_SEND_DF;
	return f;
}

static int send_info(struct conn *c, uint32_t opt, uint16_t type,
		     const struct nbd_export *e)
{
	uint8_t buf[2 + NBD_MAX_STRING + 16];
	size_t n = 2;
	const char *s = NULL;

	nbd_put16(buf, type);
	switch (type) {
	case NBD_INFO_EXPORT:
		nbd_put64(buf + 2, img_size(e->img));
		nbd_put16(buf + 10, export_tflags(c, e));
		n = 12;
		break;
	case NBD_INFO_NAME:
		s = e->name;
		break;
	case NBD_INFO_DESCRIPTION:
		s = e->description;
		break;
	case NBD_INFO_BLOCK_SIZE:
		nbd_put32(buf + 2, 1);
		nbd_put32(buf + 6, PREFERRED_BLOCK);
		nbd_put32(buf + 10, MAX_PAYLOAD);
		n = 14;
		break;
	default:
		return 0;
	}
	if (s) {
		size_t k = strlen(s);

		if (k > NBD_MAX_STRING)
			k = NBD_MAX_STRING;
		memcpy(buf + 2, s, k);
		n = 2 + k;
	} else if (type == NBD_INFO_NAME || type == NBD_INFO_DESCRIPTION) {
		return 0;
	}
	return opt_reply(c, opt, NBD_REP_INFO, buf, n);
}

/* INFO or GO: 1 to enter transmission, 0 to go on, -errno to drop. */
static int opt_info(struct conn *c, uint32_t opt, const uint8_t *p,
		    uint32_t len)
{
	struct nbd_info_req req;
	struct nbd_export *e;
	bool sent[4] = { false };
	int ret;

	if (nbd_parse_info_req(p, len, &req) < 0)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "malformed INFO/GO request");
	e = find_export(c->srv, &req.name);
	if (!e)
		return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
	for (unsigned i = 0; i < req.n_infos; i++) {
		uint16_t t = req.infos[i];

		if (t < 4 && !sent[t]) {
			sent[t] = true;
			ret = send_info(c, opt, t, e);
			if (ret < 0)
				return ret;
		}
	}
	if (!sent[NBD_INFO_EXPORT] &&
	    (ret = send_info(c, opt, NBD_INFO_EXPORT, e)) < 0)
		return ret;
	if (!sent[NBD_INFO_BLOCK_SIZE] &&
	    (ret = send_info(c, opt, NBD_INFO_BLOCK_SIZE, e)) < 0)
		return ret;
	ret = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (ret < 0)
		return ret;
	if (opt != NBD_OPT_GO)
		return 0;
	c->exp = e;
	return 1;
}

static int opt_list(struct conn *c, uint32_t len)
{
	struct nbd_server *s = c->srv;
	int ret;

	if (len)
		return opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				 "LIST takes no data");
	for (size_t i = 0; i < s->n_exports; i++) {
		const struct nbd_export *e = &s->exports[i];
		size_t nl = strlen(e->name);
		size_t dl = e->description ? strlen(e->description) : 0;
		uint8_t *buf = malloc(4 + nl + dl);

		if (!buf)
			return -ENOMEM;
		nbd_put32(buf, nl);
		memcpy(buf + 4, e->name, nl);
		if (dl)
			memcpy(buf + 4 + nl, e->description, dl);
		ret = opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf,
				4 + nl + dl);
		free(buf);
		if (ret < 0)
			return ret;
	}
	return opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static bool str_is(const struct nbd_str *s, const char *lit)
{
	return s->len == strlen(lit) && !memcmp(s->p, lit, s->len);
}

static bool str_starts(const struct nbd_str *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->len >= n && !memcmp(s->p, lit, n);
}

static int meta_reply(struct conn *c, uint32_t opt, uint32_t id,
		      const char *name, const char *suffix)
{
	uint8_t buf[4 + 2 * NBD_MAX_STRING];
	size_t a = strlen(name), b = suffix ? strlen(suffix) : 0;

	if (a + b > 2 * NBD_MAX_STRING)
		return 0;
	nbd_put32(buf, opt == NBD_OPT_LIST_META_CONTEXT ? 0 : id);
	memcpy(buf + 4, name, a);
	if (b)
		memcpy(buf + 4 + a, suffix, b);
	return opt_reply(c, opt, NBD_REP_META_CONTEXT, buf, 4 + a + b);
}

/* Which contexts query q selects on export e (list: prefixes match). */
static void meta_match(const struct conn *c, const struct nbd_export *e,
		       const struct nbd_str *q, bool list, bool on[4])
{
	const struct nbd_server_opts *o = &c->srv->opts;

	if (str_is(q, ctx_base) || (list && str_is(q, "base:")))
		on[CTX_BASE] = true;
	if (o->allocation_depth &&
	    (str_is(q, ctx_depth) || (list && str_is(q, "qemu:"))))
		on[CTX_DEPTH] = true;
	if (e->bitmap) {
		struct nbd_str rest = { q->p + strlen(ctx_bitmap_prefix), 0 };

		if (str_starts(q, ctx_bitmap_prefix)) {
			rest.len = q->len - strlen(ctx_bitmap_prefix);
			if ((list && !rest.len) ||
			    (rest.len == strlen(e->bitmap) &&
			     !memcmp(rest.p, e->bitmap, rest.len)))
				on[CTX_BITMAP] = true;
		} else if (list && str_is(q, "qemu:")) {
			on[CTX_BITMAP] = true;
		}
	}
}

static int opt_meta(struct conn *c, uint32_t opt, const uint8_t *p,
		    uint32_t len)
{
	bool list = opt == NBD_OPT_LIST_META_CONTEXT;
	struct nbd_meta_req req;
	struct nbd_export *e;
	struct nbd_str q;
	bool on[4] = { false };
	int ret;

	if (!c->structured)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "structured replies not negotiated");
	if (nbd_parse_meta_req(p, len, &req) < 0)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "malformed meta context request");
	e = find_export(c->srv, &req.name);
	if (!e)
		return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
	if (list && !req.n_queries) {
		on[CTX_BASE] = true;
		on[CTX_DEPTH] = c->srv->opts.allocation_depth;
		on[CTX_BITMAP] = e->bitmap != NULL;
	}
	while (nbd_meta_next(&req, &q))
		meta_match(c, e, &q, list, on);
	if (!list) {
		memcpy(c->ctx_on, on, sizeof(on));
		c->ctx_exp = e;
	}
	if (on[CTX_BASE] &&
	    (ret = meta_reply(c, opt, CTX_BASE, ctx_base, NULL)) < 0)
		return ret;
	if (on[CTX_DEPTH] &&
	    (ret = meta_reply(c, opt, CTX_DEPTH, ctx_depth, NULL)) < 0)
		return ret;
	if (on[CTX_BITMAP] &&
	    (ret = meta_reply(c, opt, CTX_BITMAP, ctx_bitmap_prefix,
			      e->bitmap)) < 0)
		return ret;
	return opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

static void forget_options(struct conn *c)
{
	c->structured = c->extended = false;
	memset(c->ctx_on, 0, sizeof(c->ctx_on));
	c->ctx_exp = NULL;
}

/* One option; 1 = transmission, 0 = next option, < 0 = drop. */
static int handle_option(struct conn *c, uint32_t opt, const uint8_t *p,
			 uint32_t len)
{
	struct nbd_tls *tls = c->srv->opts.tls;
	struct nbd_str name;
	int ret;

	if (tls && !c->tls_done && opt != NBD_OPT_STARTTLS &&
	    opt != NBD_OPT_ABORT) {
		if (opt == NBD_OPT_EXPORT_NAME)
			return -EACCES;
		return opt_error(c, opt, NBD_REP_ERR_TLS_REQD,
				 "TLS is required");
	}
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		if (nbd_parse_name(p, len, &name) < 0)
			return -EINVAL;
		c->exp = find_export(c->srv, &name);
		return c->exp ? 2 : -ENOENT;
	case NBD_OPT_ABORT:
		opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		return -ECONNABORTED;
	case NBD_OPT_LIST:
		return opt_list(c, len);
	case NBD_OPT_STARTTLS:
		if (!tls)
			return opt_error(c, opt, NBD_REP_ERR_POLICY,
					 "TLS is not configured");
		if (c->tls_done)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "TLS is already on");
		if (len)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "STARTTLS takes no data");
		ret = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		if (ret < 0)
			return ret;
		if (c->rpos < c->rlen)
			return -EPROTO; /* plaintext sent after STARTTLS */
		ret = nbd_tls_accept(tls, c->fd, &c->tls);
		if (ret < 0) {
			log_msg("%s", img_last_error());
			return ret;
		}
		c->tls_done = true;
		forget_options(c);
		return 0;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info(c, opt, p, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (len)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "STRUCTURED_REPLY takes no data");
		if (c->structured)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "structured replies already on");
		c->structured = true;
		return opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_EXTENDED_HEADERS:
		if (len)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "EXTENDED_HEADERS takes no data");
		if (c->extended)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "extended headers already on");
		c->extended = c->structured = true;
		return opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta(c, opt, p, len);
	default:
		return opt_error(c, opt, NBD_REP_ERR_UNSUP,
				 "unsupported option");
	}
}

/* Returns 0 with c->exp set to enter transmission, < 0 to drop. */
static int handshake(struct conn *c)
{
	uint8_t greet[NBD_GREETING_SIZE], cflags[4];
	int ret;

	nbd_build_greeting(greet, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	ret = conn_write(c, greet, sizeof(greet));
	if (ret < 0)
		return ret;
	ret = conn_read(c, cflags, 4);
	if (ret < 0)
		return ret;
	if (nbd_get32(cflags) &
	    ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return -EINVAL;
	c->no_zeroes = nbd_get32(cflags) & NBD_FLAG_C_NO_ZEROES;
	for (;;) {
		uint8_t oh[NBD_OPT_HDR_SIZE];
		struct nbd_opt_hdr h;

		ret = conn_read(c, oh, sizeof(oh));
		if (ret < 0)
			return ret;
		if (nbd_parse_opt_hdr(oh, &h) < 0)
			return -EINVAL;
		if (h.len > NBD_MAX_OPT_PAYLOAD) {
			if (h.opt == NBD_OPT_EXPORT_NAME ||
			    h.len > MAX_DISCARD_OPT)
				return -E2BIG;
			ret = conn_skip(c, h.len);
			if (ret < 0)
				return ret;
			ret = opt_error(c, h.opt, NBD_REP_ERR_TOO_BIG,
					"option data too large");
			if (ret < 0)
				return ret;
			continue;
		}
		ret = conn_read(c, c->opt_buf, h.len);
		if (ret < 0)
			return ret;
		ret = handle_option(c, h.opt, c->opt_buf, h.len);
		if (ret < 0)
			return ret;
		if (ret == 0)
			continue;
		c->tflags = export_tflags(c, c->exp);
		if (c->ctx_exp != c->exp)
			memset(c->ctx_on, 0, sizeof(c->ctx_on));
		if (ret == 2) {
			/* EXPORT_NAME: size, flags, and maybe 124 zeroes. */
			uint8_t r[NBD_EXPORT_NAME_REPLY_SIZE] = { 0 };

			nbd_put64(r, img_size(c->exp->img));
			nbd_put16(r + 8, c->tflags);
			return conn_write(c, r, c->no_zeroes ? 10 : sizeof(r));
		}
		return 0;
	}
}

/* ---- connections and the accept loop ---- */

static void set_timeout(int fd, int opt, unsigned secs)
{
	struct timeval tv = { .tv_sec = secs };

	setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

/* Deliver the engine's completions (job_done sends the replies) until
 * told to stop. */
static void *reaper_thread(void *arg)
{
	struct conn *c = arg;

	while (!atomic_load(&c->reaper_stop)) {
		struct pollfd p = { .fd = img_aio_fd(c->aio),
				    .events = POLLIN };

		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			break;
		img_aio_poll(c->aio);
	}
	img_aio_poll(c->aio);
	return NULL;
}

/* Give the connection an engine and its reaper; without them (TLS,
 * --threads=0, or a failure here) requests run on the reader thread. */
static void engine_start(struct conn *c)
{
	if (c->tls || !c->srv->opts.threads)
		return;
	if (img_aio_new(c->srv->opts.threads, &c->aio) < 0) {
		log_msg("no async engine (%s): requests run one at a time",
			img_last_error());
		return;
	}
	if (pthread_create(&c->reaper, NULL, reaper_thread, c)) {
		log_msg("cannot start a reaper thread: requests run one at a "
			"time");
		img_aio_free(c->aio);
		c->aio = NULL;
	}
}

/* Called once no request is in flight. */
static void engine_stop(struct conn *c)
{
	uint64_t one = 1;

	if (!c->aio)
		return;
	atomic_store(&c->reaper_stop, true);
	if (write(img_aio_fd(c->aio), &one, sizeof(one)) < 0) {
		/* The counter is not zero: the reaper wakes anyway. */
	}
	pthread_join(c->reaper, NULL);
	img_aio_free(c->aio);
	c->aio = NULL;
}

static void *conn_thread(void *arg)
{
	struct conn *c = arg;
	struct nbd_server *s = c->srv;
	unsigned timeout = s->opts.handshake_timeout;

	if (timeout) {
		clock_gettime(CLOCK_MONOTONIC, &c->deadline);
		c->deadline.tv_sec += timeout;
		set_timeout(c->fd, SO_RCVTIMEO, timeout);
	}
	if (handshake(c) == 0) {
		c->deadline.tv_sec = 0;
		set_timeout(c->fd, SO_RCVTIMEO, 0);
		/* The reaper blocks in send while a client does not read its
		 * replies: a client that takes nothing for SEND_TIMEOUT (twice
		 * that when the stall begins inside one send call) is dropped,
		 * so it cannot hold its share of the server's buffer budget
		 * for longer. */
		set_timeout(c->fd, SO_SNDTIMEO, SEND_TIMEOUT);
		pthread_mutex_lock(&s->lock);
		s->served = true;
		pthread_mutex_unlock(&s->lock);
		engine_start(c);
		transmission(c);
	}
	/* Nothing more is read: the slot is free for a new client now, while
	 * requests still running finish (their replies discarded if the client
	 * is gone). */
	pthread_mutex_lock(&s->lock);
	s->n_conns--;
	if (!s->opts.persistent && s->served && !s->n_conns)
		nbd_server_stop(s);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&c->lock);
	while (c->inflight)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	engine_stop(c);
	if (c->tls)
		nbd_tls_close(c->tls);

	pthread_mutex_lock(&s->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_live--;
	close(c->fd);
	pthread_cond_broadcast(&s->gone);
	/* s may be freed as soon as the lock is released. */
	pthread_mutex_unlock(&s->lock);

	pthread_mutex_destroy(&c->send_lock);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c->opt_buf);
	for (int i = 0; i < BUF_CACHE_SLOTS; i++)
		free(c->bufs[i]);
	free(c);
	return NULL;
}

static void start_conn(struct nbd_server *s, int fd)
{
	pthread_attr_t attr;
	pthread_t tid;
	struct conn *c;
	int one = 1;

	pthread_mutex_lock(&s->lock);
	if (s->n_conns >= s->opts.max_conns) {
		pthread_mutex_unlock(&s->lock);
		log_msg("connection cap (%u) reached: refusing a client",
			s->opts.max_conns);
		close(fd);
		return;
	}
	pthread_mutex_unlock(&s->lock);
	c = calloc(1, sizeof(*c));
	if (!c || !(c->opt_buf = malloc(NBD_MAX_OPT_PAYLOAD))) {
		free(c);
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->srv = s;
	c->fd = fd;
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);

	pthread_mutex_lock(&s->lock);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	s->n_live++;
	pthread_mutex_unlock(&s->lock);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	if (pthread_create(&tid, &attr, conn_thread, c)) {
		log_msg("cannot start a connection thread");
		pthread_mutex_lock(&s->lock);
		s->conns = c->next;
		if (c->next)
			c->next->prev = NULL;
		s->n_conns--;
		s->n_live--;
		pthread_mutex_unlock(&s->lock);
		close(fd);
		free(c->opt_buf);
		free(c);
	}
	pthread_attr_destroy(&attr);
}

int nbd_server_new(const struct nbd_server_opts *opts,
		   struct nbd_export *exports, size_t n,
		   struct nbd_server **out)
{
	struct nbd_server *s = calloc(1, sizeof(*s));
	int ret;

	if (!s) {
		for (size_t i = 0; i < n; i++)
			img_close(exports[i].img);
		return img_error(-ENOMEM, "nbd: out of memory");
	}
	s->opts = *opts;
	if (!s->opts.max_conns)
		s->opts.max_conns = 100;
	s->exports = exports;
	s->n_exports = n;
	s->stop_pipe[0] = s->stop_pipe[1] = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->gone, NULL);
	pthread_mutex_init(&s->budget_lock, NULL);
	pthread_cond_init(&s->budget_cond, NULL);
	if (pipe2(s->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		ret = img_error(-errno, "nbd: pipe: %s", strerror(errno));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	nbd_server_free(s);
	return ret;
}

void nbd_server_stop(struct nbd_server *s)
{
	char b = 1;

	atomic_store(&s->stopping, 1);
	if (write(s->stop_pipe[1], &b, 1) < 0) {
		/* The pipe is full: a stop is already pending. */
	}
}

int nbd_server_run(struct nbd_server *s, const int *listen_fds, size_t n)
{
	struct pollfd *pfd = calloc(n + 1, sizeof(*pfd));

	if (!pfd)
		return img_error(-ENOMEM, "nbd: out of memory");
	for (size_t i = 0; i < n; i++) {
		pfd[i].fd = listen_fds[i];
		pfd[i].events = POLLIN;
	}
	pfd[n].fd = s->stop_pipe[0];
	pfd[n].events = POLLIN;
	while (!atomic_load(&s->stopping)) {
		if (poll(pfd, n + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (size_t i = 0; i < n && !atomic_load(&s->stopping); i++) {
			int fd;

			if (!(pfd[i].revents & POLLIN))
				continue;
			fd = accept4(listen_fds[i], NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				start_conn(s, fd);
		}
	}
	free(pfd);

	/* Drain: no new requests are read; in-flight ones complete. */
	pthread_mutex_lock(&s->lock);
	for (struct conn *c = s->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RD);
	while (s->n_live)
		pthread_cond_wait(&s->gone, &s->lock);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int nbd_server_free(struct nbd_server *s)
{
	int ret = 0;

	if (!s)
		return 0;
	for (size_t i = 0; i < s->n_exports; i++) {
		int r = img_close(s->exports[i].img);

		if (r < 0 && !ret) {
			log_msg("closing %s: %s", s->exports[i].name,
				img_last_error());
			ret = r;
		}
		free(s->exports[i].name);
		free(s->exports[i].description);
	}
	free(s->exports);
	if (s->stop_pipe[0] >= 0) {
		close(s->stop_pipe[0]);
		close(s->stop_pipe[1]);
	}
	pthread_cond_destroy(&s->budget_cond);
	pthread_mutex_destroy(&s->budget_lock);
	pthread_cond_destroy(&s->gone);
	pthread_mutex_destroy(&s->lock);
	free(s);
	return ret;
}

/* SPDX-License-Identifier: MIT */
/*
 * The rbd backend: a struct img_io over a Ceph RBD image through librbd, for
 * names spelled as QEMU spells them, rbd:POOL[/NAMESPACE]/IMAGE[@SNAP] followed
 * by :key=value options (conf=PATH, id=USER, or any Ceph client option such as
 * client_mount_timeout=5; a backslash escapes the next character). The cephx
 * key comes from the keyring named by the conf, never from the name. Transfers
 * go out as librbd asynchronous requests, a batch in flight at once, and the
 * call returns when all have completed, so buffers stay alive until then.
 * Connecting and every cluster operation are bounded by timeouts (30 s unless
 * the conf or the name says otherwise). RBD images have a fixed size: a write
 * past the end first grows the image in large steps, and close trims it back
 * to the highest byte written, so a qcow2 stored inside RBD can grow cheaply.
 * Allocation comes from rbd_diff_iterate2 (the object map when fast-diff is
 * on), always from an object-aligned start because librbd 1.16 reports wrong
 * offsets otherwise (Ceph tracker 53784).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifdef IMG_HAVE_RBD
#include <rados/librados.h>
#include <rbd/librbd.h>

/* Default bound on connecting and on each monitor or OSD operation. */
#define RBD_TIMEOUT_SECS "30"
/* Requests in flight at once per batch. */
#define RBD_WINDOW 64u
/* Growth ahead of writes: at least this much, at most doubling up to this. */
#define RBD_GROW_MIN (64ull << 20)
#define RBD_GROW_MAX (1ull << 30)
/* Returned by the diff callback to stop the iteration early. */
#define RBD_DIFF_STOP (-9000)

static uint64_t rbd_max(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* A parsed rbd: name; every string malloc'd. */
struct rbd_name {
	char *pool, *ns, *image, *snap, *conf, *id;
	char **keys, **vals; /* other Ceph options, in name order */
	unsigned n_opts;
};

struct rbd {
	struct img_io io;
	rados_t cluster;
	rados_ioctx_t ioctx;
	rbd_image_t image;
	uint64_t obj_size;
	pthread_mutex_t lock; /* guards the two sizes */
	uint64_t size; /* what get_size reports: highest byte written */
	uint64_t phys; /* size of the RBD image, >= size */
};

static struct rbd *to_rbd(struct img_io *io)
{
	return (struct rbd *)io;
}

static void rbd_name_free(struct rbd_name *n)
{
	free(n->pool);
	free(n->ns);
	free(n->image);
	free(n->snap);
	free(n->conf);
	free(n->id);
	for (unsigned i = 0; i < n->n_opts; i++) {
		free(n->keys[i]);
		free(n->vals[i]);
	}
	free(n->keys);
	free(n->vals);
	memset(n, 0, sizeof(*n));
}

/* Copy from *p up to the first unescaped character of stops (or the end),
 * removing escapes; *p is left on the stop character. */
static int rbd_take(const char **p, const char *stops, char **out)
{
	const char *s = *p;
	char *d = malloc(strlen(s) + 1);
	size_t k = 0;

	if (!d)
		return -ENOMEM;
	while (*s && !strchr(stops, *s)) {
		if (*s == '\\') {
			if (!s[1]) {
				free(d);
				return -EINVAL;
			}
			s++;
		}
		d[k++] = *s++;
	}
	d[k] = '\0';
	*p = s;
	*out = d;
	return 0;
}

static int rbd_parse_opt(struct rbd_name *n, const char *name, const char *kv,
			 const char *val)
{
	size_t klen = (size_t)(val - kv);
	char **slot = NULL, **keys, **vals;

	if (!klen || !val[1])
		return img_error(-EINVAL,
				 "rbd: bad option in '%s': expected key=value",
				 name);
	if (klen == 4 && !memcmp(kv, "conf", 4))
		slot = &n->conf;
	else if (klen == 2 && !memcmp(kv, "id", 2))
		slot = &n->id;
	else if ((klen == 3 && !memcmp(kv, "key", 3)) ||
		 (klen == 6 && !memcmp(kv, "secret", 6)))
		return img_error(
			-EINVAL,
			"rbd: a cephx key in the image name is refused (names reach argv and logs); put it in the keyring the conf names");
	if (slot) {
		if (*slot)
			return img_error(
				-EINVAL,
				"rbd: option '%.*s' given twice in '%s'",
				(int)klen, kv, name);
		*slot = strdup(val + 1);
		return *slot ? 0 : -ENOMEM;
	}
	keys = realloc(n->keys, sizeof(*keys) * (n->n_opts + 1));
	if (!keys)
		return -ENOMEM;
	n->keys = keys;
	vals = realloc(n->vals, sizeof(*vals) * (n->n_opts + 1));
	if (!vals)
		return -ENOMEM;
	n->vals = vals;
	keys[n->n_opts] = strndup(kv, klen);
	vals[n->n_opts] = strdup(val + 1);
	n->n_opts++;
	if (!keys[n->n_opts - 1] || !vals[n->n_opts - 1])
		return -ENOMEM;
	return 0;
}

/* rbd:POOL[/NS]/IMAGE[@SNAP][:key=value]... */
static int rbd_parse(const char *name, struct rbd_name *n)
{
	const char *p = name + 4;
	char *part[3] = { NULL, NULL, NULL };
	unsigned nparts = 0;
	int ret;

	memset(n, 0, sizeof(*n));
	for (;;) {
		ret = rbd_take(&p, "/@:", &part[nparts]);
		if (ret < 0)
			goto bad;
		nparts++;
		if (*p != '/')
			break;
		if (nparts == 3) {
			ret = img_error(
				-EINVAL,
				"rbd: too many '/' in '%s' (expected rbd:POOL[/NAMESPACE]/IMAGE)",
				name);
			goto fail;
		}
		p++;
	}
	if (nparts < 2) {
		ret = img_error(
			-EINVAL,
			"rbd: '%s' names no image (expected rbd:POOL/IMAGE)",
			name);
		goto fail;
	}
	for (unsigned i = 0; i < nparts; i++)
		if (!*part[i]) {
			ret = img_error(
				-EINVAL,
				"rbd: empty pool, namespace or image name in '%s'",
				name);
			goto fail;
		}
	n->pool = part[0];
	n->ns = nparts == 3 ? part[1] : NULL;
	n->image = part[nparts - 1];
	memset(part, 0, sizeof(part));
	if (*p == '@') {
		p++;
		ret = rbd_take(&p, ":", &n->snap);
		if (ret < 0)
			goto bad;
		if (!*n->snap || strpbrk(n->snap, "@/")) {
			ret = img_error(-EINVAL,
					"rbd: bad snapshot name in '%s'", name);
			goto fail;
		}
	}
	while (*p == ':') {
		char *kv, *eq;

		p++;
		ret = rbd_take(&p, ":", &kv);
		if (ret < 0)
			goto bad;
		eq = strchr(kv, '=');
		ret = eq ? rbd_parse_opt(n, name, kv, eq) :
			   img_error(
				   -EINVAL,
				   "rbd: bad option '%s' in '%s': expected key=value",
				   kv, name);
		free(kv);
		if (ret < 0)
			goto fail;
	}
	if (*p) {
		ret = img_error(-EINVAL, "rbd: unexpected '%c' in '%s'", *p,
				name);
		goto fail;
	}
	return 0;
bad:
	ret = ret == -ENOMEM ?
		      img_error(ret, "rbd: out of memory") :
		      img_error(ret, "rbd: trailing '\\' in '%s'", name);
fail:
	for (unsigned i = 0; i < 3; i++)
		free(part[i]);
	rbd_name_free(n);
	return ret;
}

/* Our bound on a timeout the conf left at Ceph's default (300 s or none). */
static int rbd_bound_timeout(rados_t c, const char *key, const char *before)
{
	char now[64];

	if (rados_conf_get(c, key, now, sizeof(now)) < 0 || strcmp(now, before))
		return 0;
	return rados_conf_set(c, key, RBD_TIMEOUT_SECS);
}

static int rbd_connect(const char *path, const struct rbd_name *n, bool nocache,
		       rados_t *out)
{
	static const char *const timeouts[] = { "client_mount_timeout",
						"rados_mon_op_timeout",
						"rados_osd_op_timeout" };
	char before[IMG_ARRAY_SIZE(timeouts)][64];
	rados_t c;
	int ret;

	ret = rados_create(&c, n->id);
	if (ret < 0)
		return img_error(ret, "rbd: cannot create a cluster handle: %s",
				 strerror(-ret));
	for (size_t i = 0; i < IMG_ARRAY_SIZE(timeouts); i++)
		if (rados_conf_get(c, timeouts[i], before[i],
				   sizeof(before[i])) < 0)
			before[i][0] = '\0';
	ret = rados_conf_read_file(c, n->conf);
	if (ret < 0 && n->conf) {
		img_error(ret, "rbd: cannot read Ceph conf '%s': %s", n->conf,
			  strerror(-ret));
		goto fail;
	}
	for (size_t i = 0; i < IMG_ARRAY_SIZE(timeouts); i++) {
		ret = rbd_bound_timeout(c, timeouts[i], before[i]);
		if (ret < 0)
			goto fail;
	}
	if (nocache) {
		ret = rados_conf_set(c, "rbd_cache", "false");
		if (ret < 0)
			goto fail;
	}
	for (unsigned i = 0; i < n->n_opts; i++) {
		ret = rados_conf_set(c, n->keys[i], n->vals[i]);
		if (ret < 0) {
			img_error(ret, "rbd: Ceph option '%s=%s' refused: %s",
				  n->keys[i], n->vals[i],
				  ret == -ENOENT ? "unknown option" :
						   strerror(-ret));
			goto fail;
		}
	}
	ret = rados_connect(c);
	if (ret < 0) {
		char t[64] = "?";

		rados_conf_get(c, "client_mount_timeout", t, sizeof(t));
		img_error(
			ret,
			"rbd: cannot connect to the Ceph cluster for '%s' (timeout %s s): %s",
			path, t, strerror(-ret));
		goto fail;
	}
	*out = c;
	return 0;
fail:
	rados_shutdown(c);
	return ret;
}

static int rbd_ioctx(const char *path, const struct rbd_name *n, rados_t c,
		     rados_ioctx_t *out)
{
	int ret = rados_ioctx_create(c, n->pool, out);

	if (ret < 0)
		return img_error(
			ret, "rbd: cannot open pool '%s' for '%s': %s", n->pool,
			path, ret == -ENOENT ? "no such pool" : strerror(-ret));
	if (n->ns)
		rados_ioctx_set_namespace(*out, n->ns);
	return 0;
}

/* ---- transfers ---- */

static uint64_t rbd_size_now(struct rbd *r)
{
	uint64_t s;

	pthread_mutex_lock(&r->lock);
	s = r->size;
	pthread_mutex_unlock(&r->lock);
	return s;
}

/* Make the image hold [0, end): grow it in large steps. */
static int rbd_reserve(struct rbd *r, uint64_t end)
{
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	if (end > r->phys) {
		uint64_t step =
			img_min(rbd_max(r->phys, RBD_GROW_MIN), RBD_GROW_MAX);
		uint64_t want = rbd_max(end, r->phys + step);

		want = img_align_up(want, r->obj_size);
		ret = rbd_resize(r->image, want);
		if (ret < 0) {
			/* No room for the step: grow just enough. */
			want = end;
			ret = rbd_resize(r->image, want);
		}
		if (ret >= 0)
			r->phys = want;
	}
	if (ret >= 0 && end > r->size)
		r->size = end;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* Issue v[0..n) and wait for all of them. Reads beyond the size read as
 * zeroes; writes past the end grow the image first. */
static int rbd_run(struct rbd *r, struct img_io_vec *v, unsigned n)
{
	rbd_completion_t c[RBD_WINDOW];
	uint64_t want[RBD_WINDOW];
	int first = 0;

	for (unsigned done = 0; done < n;) {
		unsigned k = img_min(n - done, RBD_WINDOW), issued = 0;
		uint64_t size = rbd_size_now(r);

		for (unsigned i = 0; i < k; i++) {
			struct img_io_vec *e = &v[done + i];
			uint64_t len = e->len;
			int ret;

			want[i] = 0;
			c[i] = NULL;
			if (e->write) {
				ret = rbd_reserve(r, e->file_off + len);
			} else {
				len = e->file_off >= size ?
					      0 :
					      img_min(len, size - e->file_off);
				memset((uint8_t *)e->buf + len, 0,
				       e->len - len);
				ret = 0;
			}
			if (ret >= 0 && len)
				ret = rbd_aio_create_completion(NULL, NULL,
								&c[i]);
			if (ret >= 0 && len) {
				want[i] = e->write ? 0 : len;
				ret = e->write ? rbd_aio_write(r->image,
							       e->file_off, len,
							       e->buf, c[i]) :
						 rbd_aio_read(r->image,
							      e->file_off, len,
							      e->buf, c[i]);
				if (ret < 0) {
					rbd_aio_release(c[i]);
					c[i] = NULL;
				}
			}
			if (ret < 0 && !first)
				first = ret;
			if (c[i])
				issued++;
		}
		for (unsigned i = 0; i < k && issued; i++) {
			ssize_t got;

			if (!c[i])
				continue;
			rbd_aio_wait_for_complete(c[i]);
			got = rbd_aio_get_return_value(c[i]);
			rbd_aio_release(c[i]);
			if (got < 0 && !first)
				first = (int)got;
			else if (got >= 0 && (uint64_t)got < want[i]) {
				/* Short read: the image shrank under us. */
				struct img_io_vec *e = &v[done + i];

				memset((uint8_t *)e->buf + got, 0,
				       want[i] - (uint64_t)got);
			}
		}
		done += k;
	}
	return first;
}

static int rbd_submit(struct img_io *io, struct img_io_vec *v, unsigned n)
{
	return rbd_run(to_rbd(io), v, n);
}

static int rbd_pread_op(struct img_io *io, void *buf, uint64_t len,
			uint64_t file_off)
{
	struct img_io_vec v = { .buf = buf, .len = len, .file_off = file_off };

	return rbd_run(to_rbd(io), &v, 1);
}

static int rbd_pwrite_op(struct img_io *io, const void *buf, uint64_t len,
			 uint64_t file_off)
{
	struct img_io_vec v = { .buf = (void *)buf,
				.len = len,
				.file_off = file_off,
				.write = true };

	return rbd_run(to_rbd(io), &v, 1);
}

/* Wait for one completion issued by start; its result or -errno. */
static int rbd_wait(rbd_completion_t c, int ret)
{
	if (ret >= 0) {
		rbd_aio_wait_for_complete(c);
		ret = (int)rbd_aio_get_return_value(c);
	}
	rbd_aio_release(c);
	return ret < 0 ? ret : 0;
}

static int rbd_flush_op(struct img_io *io)
{
	rbd_completion_t c;
	int ret = rbd_aio_create_completion(NULL, NULL, &c);

	if (ret < 0)
		return ret;
	return rbd_wait(c, rbd_aio_flush(to_rbd(io)->image, c));
}

/* Discard deallocates whole objects and zeroes partial ones (granularity 0:
 * nothing skipped), so it serves both zeroing and punching. */
static int rbd_zero_op(struct img_io *io, uint64_t file_off, uint64_t len,
		       unsigned flags)
{
	struct rbd *r = to_rbd(io);
	rbd_completion_t c;
	int ret;

	if (file_off >= rbd_size_now(r))
		return rbd_reserve(r, file_off + len);
	ret = rbd_reserve(r, file_off + len);
	if (ret < 0)
		return ret;
	ret = rbd_aio_create_completion(NULL, NULL, &c);
	if (ret < 0)
		return ret;
	return rbd_wait(c,
			rbd_aio_write_zeroes(r->image, file_off, len, c, 0, 0));
}

static int rbd_get_size_op(struct img_io *io, uint64_t *size)
{
	*size = rbd_size_now(to_rbd(io));
	return 0;
}

static int rbd_truncate_op(struct img_io *io, uint64_t size)
{
	struct rbd *r = to_rbd(io);
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = rbd_resize(r->image, size);
	if (ret >= 0)
		r->size = r->phys = size;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* State of one extent query, filled by the diff callback. */
struct rbd_diff {
	uint64_t off; /* queried offset */
	uint64_t data_end; /* end of data found at off, 0 if none yet */
	uint64_t next_data; /* start of the first data after off, or 0 */
	uint64_t total; /* allocated bytes (the whole-image walk) */
};

static int rbd_diff_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct rbd_diff *d = arg;
	uint64_t end = off + len;

	if (!exists || end <= d->off)
		return 0;
	if (d->data_end) {
		if (off > d->data_end)
			return RBD_DIFF_STOP;
		d->data_end = rbd_max(d->data_end, end);
		return 0;
	}
	if (off <= d->off) {
		d->data_end = end;
		return 0;
	}
	d->next_data = off;
	return RBD_DIFF_STOP;
}

static int rbd_sum_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct rbd_diff *d = arg;

	if (exists)
		d->total += len;
	return 0;
}

static int rbd_extent_op(struct img_io *io, uint64_t file_off, uint64_t len,
			 bool *data, uint64_t *extent_len)
{
	struct rbd *r = to_rbd(io);
	uint64_t size = rbd_size_now(r), start, end;
	struct rbd_diff d = { .off = file_off };
	int ret;

	if (file_off >= size) {
		*data = false;
		*extent_len = len;
		return 0;
	}
	end = img_min(file_off + len, size);
	start = file_off - file_off % r->obj_size;
	ret = rbd_diff_iterate2(r->image, NULL, start, end - start, 1, 1,
				rbd_diff_cb, &d);
	if (ret < 0 && ret != RBD_DIFF_STOP)
		return ret;
	if (d.data_end) {
		*data = true;
		*extent_len = img_min(d.data_end, end) - file_off;
	} else {
		*data = false;
		*extent_len = d.next_data ?
				      img_min(d.next_data, end) - file_off :
				      len;
	}
	return 0;
}

static int rbd_allocated_op(struct img_io *io, uint64_t *bytes)
{
	struct rbd *r = to_rbd(io);
	struct rbd_diff d = { 0 };
	uint64_t size = rbd_size_now(r);
	int ret = size ? rbd_diff_iterate2(r->image, NULL, 0, size, 1, 1,
					   rbd_sum_cb, &d) :
			 0;

	if (ret < 0)
		return ret;
	*bytes = img_min(d.total, size);
	return 0;
}

static void rbd_free(struct rbd *r)
{
	if (r->image)
		rbd_close(r->image);
	if (r->ioctx)
		rados_ioctx_destroy(r->ioctx);
	if (r->cluster)
		rados_shutdown(r->cluster);
	pthread_mutex_destroy(&r->lock);
	free(r->io.path);
	free(r);
}

static void rbd_close_op(struct img_io *io)
{
	struct rbd *r = to_rbd(io);

	/* Give back the growth reserved ahead of writes. */
	if (!(io->flags & IMG_IO_RDONLY) && r->phys > r->size)
		rbd_resize(r->image, r->size);
	rbd_free(r);
}

static const struct img_io_ops rbd_ops = {
	.name = "rbd",
	.pread = rbd_pread_op,
	.pwrite = rbd_pwrite_op,
	.submit = rbd_submit,
	.flush = rbd_flush_op,
	.zero = rbd_zero_op,
	.get_size = rbd_get_size_op,
	.truncate = rbd_truncate_op,
	.extent = rbd_extent_op,
	.allocated = rbd_allocated_op,
	.close = rbd_close_op,
};

static int rbd_open_image(const char *path, const struct rbd_name *n,
			  unsigned flags, struct rbd *r)
{
	rbd_image_info_t info;
	int order = 0, ret;

	ret = rbd_connect(path, n, flags & IMG_IO_DIRECT, &r->cluster);
	if (ret < 0)
		return ret;
	ret = rbd_ioctx(path, n, r->cluster, &r->ioctx);
	if (ret < 0)
		return ret;
	if (flags & IMG_IO_CREATE) {
		ret = rbd_create(r->ioctx, n->image, 0, &order);
		if (ret < 0)
			return img_error(
				ret,
				"rbd: cannot create image '%s' in pool '%s': %s",
				n->image, n->pool,
				ret == -EEXIST ?
					"it exists (remove it first, or convert with -n)" :
					strerror(-ret));
	}
	if (flags & IMG_IO_RDONLY)
		ret = rbd_open_read_only(r->ioctx, n->image, &r->image,
					 n->snap);
	else
		ret = rbd_open(r->ioctx, n->image, &r->image, NULL);
	if (ret < 0) {
		r->image = NULL;
		return img_error(
			ret, "rbd: cannot open image '%s'%s%s in pool '%s': %s",
			n->image, n->snap ? " at snapshot " : "",
			n->snap ? n->snap : "", n->pool,
			ret == -ENOENT ? "no such image or snapshot" :
					 strerror(-ret));
	}
	ret = rbd_stat(r->image, &info, sizeof(info));
	if (ret < 0)
		return img_error(ret, "rbd: cannot stat '%s': %s", path,
				 strerror(-ret));
	if (!info.obj_size || info.size > INT64_MAX)
		return img_error(-IMG_ECORRUPT,
				 "rbd: '%s' reports object size %" PRIu64
				 " and size %" PRIu64,
				 path, info.obj_size, info.size);
	r->obj_size = info.obj_size;
	r->size = r->phys = info.size;
	return 0;
}

int img_io_rbd_open(const char *path, unsigned flags, struct img_io **out)
{
	struct rbd_name n;
	struct rbd *r;
	int ret;

	ret = rbd_parse(path, &n);
	if (ret < 0)
		return ret;
	if (n.snap && !(flags & IMG_IO_RDONLY)) {
		ret = img_error(
			-EROFS,
			"rbd: '%s' names a snapshot: it can only be opened read-only",
			path);
		rbd_name_free(&n);
		return ret;
	}
	r = calloc(1, sizeof(*r));
	if (!r || !(r->io.path = strdup(path))) {
		free(r);
		rbd_name_free(&n);
		return img_error(-ENOMEM, "rbd: out of memory opening '%s'",
				 path);
	}
	pthread_mutex_init(&r->lock, NULL);
	r->io.ops = &rbd_ops;
	/* rbd_cache=false replaces O_DIRECT: no alignment to bounce for. */
	r->io.flags = flags & ~(IMG_IO_DIRECT | IMG_IO_CREATE);
	ret = rbd_open_image(path, &n, flags, r);
	rbd_name_free(&n);
	if (ret < 0) {
		rbd_free(r);
		return ret;
	}
	*out = &r->io;
	return 0;
}

#else

int img_io_rbd_open(const char *path, unsigned flags, struct img_io **out)
{
	return img_error(
		-ENOTSUP,
		"rbd: '%s': this img was built without RBD support (librbd-dev missing at build time)",
		path);
}

#endif

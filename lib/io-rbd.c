/* SPDX-License-Identifier: MIT */
/*
 * The rbd backend: a struct img_io over a Ceph RBD image through librbd, for
 * names spelled as QEMU spells them, rbd:POOL[/NAMESPACE]/IMAGE[@SNAP] followed
 * by :key=value options (conf=PATH, id=USER, or any Ceph client option such as
 * client_mount_timeout=5; a backslash escapes the next character). The cephx
 * key comes from the keyring named by the conf, or from a registered secret
 * (password-secret=ID, as QEMU's option: --object secret,id=ID,file=PATH),
 * never from the name itself. Transfers
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
/* The allocation map: at most this many objects (a 8 MiB bitmap, 256 TiB of
 * 4 MiB objects), trusted this long when other clients may write. */
#define RBD_MAP_MAX_OBJS (64ull << 20)
#define RBD_MAP_TTL_NS 1000000000ull

static uint64_t rbd_max(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* A parsed rbd: name; every string malloc'd. */
struct rbd_name {
	char *pool, *ns, *image, *snap, *conf, *id;
	char *secret_id; /* password-secret=ID: the cephx key */
	char **keys, **vals; /* other Ceph options, in name order */
	unsigned n_opts;
};

struct rbd {
	struct img_io io;
	struct rbd_name name; /* as opened: clones protect name.snap */
	rados_t cluster;
	rados_ioctx_t ioctx;
	rbd_image_t image;
	uint64_t obj_size;
	bool at_snap; /* reading a snapshot: contents never change */
	bool excl_lock; /* the image has the exclusive-lock feature */
	pthread_mutex_t lock; /* guards the sizes and the allocation map */
	uint64_t size; /* what get_size reports: highest byte written */
	uint64_t phys; /* size of the RBD image, >= size */
	/* Allocation map, one bit per object (1: may hold data), see "the
	 * allocation map" below; NULL when not built. */
	uint8_t *map;
	uint64_t map_objs;
	uint64_t map_time; /* CLOCK_MONOTONIC ns when built */
	bool map_locked; /* built, and kept since, as the lock owner */
	uint64_t writes; /* writes in flight: no map is built meanwhile */
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
	free(n->secret_id);
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
	else if (klen == 15 && !memcmp(kv, "password-secret", 15))
		slot = &n->secret_id;
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

/* The cephx key from registered secret id (a key file's trailing newline
 * dropped); the copy made for librados is wiped. */
static int rbd_set_key(rados_t c, const char *id)
{
	const struct img_secret *s = img_secret_lookup(id);
	const uint8_t *data;
	char key[256];
	size_t len;
	int ret;

	if (!s)
		return img_error(
			-ENOENT,
			"rbd: no secret '%s' (give it with --object secret,id=%s,file=PATH)",
			id, id);
	data = img_secret_data(s, &len);
	while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' ||
		       data[len - 1] == ' '))
		len--;
	if (!len || len >= sizeof(key) || memchr(data, '\0', len))
		return img_error(-EINVAL, "rbd: secret '%s' is not a cephx key",
				 id);
	memcpy(key, data, len);
	key[len] = '\0';
	ret = rados_conf_set(c, "key", key);
	explicit_bzero(key, sizeof(key));
	if (ret < 0)
		return img_error(
			ret, "rbd: the cephx key of secret '%s' is refused: %s",
			id, strerror(-ret));
	return 0;
}

/* librados keeps the cephx key (from a secret or a keyring) and the session
 * keys on its own heap for the life of the handle: the core guard covers
 * them (lib/secret.c). */
static void rbd_disconnect(rados_t c)
{
	rados_shutdown(c);
	img_core_guard_release();
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

	ret = img_core_guard_acquire();
	if (ret < 0)
		return ret;
	ret = rados_create(&c, n->id);
	if (ret < 0) {
		img_core_guard_release();
		return img_error(ret, "rbd: cannot create a cluster handle: %s",
				 strerror(-ret));
	}
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
	if (n->secret_id) {
		ret = rbd_set_key(c, n->secret_id);
		if (ret < 0)
			goto fail;
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
	rbd_disconnect(c);
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

/* ---- the allocation map ----
 *
 * rbd_diff_iterate2 costs a round trip or more per call, and img map,
 * convert and NBD block status ask once per extent, so the first query builds
 * a map of the whole image (one bit per object) and later ones read it. Our
 * own writes set bits as they are issued (zeroing leaves them: "data" is
 * always a safe answer), and no map is built while any of ours is in flight
 * (librbd may not show it yet, and its bit was set before). The map stays valid for good at a snapshot, while we
 * own the image's exclusive lock (no other client can write then; losing the
 * lock once, seen at our next write or query, ends that), and otherwise for
 * RBD_MAP_TTL_NS after it was built, so other clients' writes show up within
 * that time, as with any cache of a shared image.
 */

static uint64_t rbd_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void rbd_map_drop(struct rbd *r)
{
	free(r->map);
	r->map = NULL;
	r->map_objs = 0;
}

/* Lock held. Whether we still own the exclusive lock (false on error). */
static bool rbd_lock_owned(struct rbd *r)
{
	int owner = 0;

	return r->excl_lock &&
	       rbd_is_exclusive_lock_owner(r->image, &owner) >= 0 && owner;
}

static int rbd_map_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct rbd *r = arg;

	if (!exists || !len)
		return 0;
	for (uint64_t o = off / r->obj_size;
	     o <= (off + len - 1) / r->obj_size && o < r->map_objs; o++)
		r->map[o / 8] |= (uint8_t)(1u << (o % 8));
	return 0;
}

/* Lock held. Have a usable map, or none (then the caller asks librbd). */
static void rbd_map_get(struct rbd *r)
{
	uint64_t objs = (r->size + r->obj_size - 1) / r->obj_size;
	bool owned;

	if (r->map && r->at_snap)
		return;
	owned = !r->at_snap && rbd_lock_owned(r);
	if (r->map && r->map_locked && owned)
		return;
	if (r->map && !r->map_locked &&
	    rbd_now_ns() - r->map_time < RBD_MAP_TTL_NS)
		return;
	rbd_map_drop(r);
	if (!objs || objs > RBD_MAP_MAX_OBJS || r->writes)
		return;
	r->map = calloc(1, (size_t)(objs + 7) / 8);
	if (!r->map)
		return;
	r->map_objs = objs;
	r->map_time = rbd_now_ns();
	r->map_locked = owned;
	if (rbd_diff_iterate2(r->image, NULL, 0, r->size, 1, 1, rbd_map_cb, r) <
	    0)
		rbd_map_drop(r);
}

/* Lock held. Objects of [off, off + len) may now hold data. */
static void rbd_map_mark(struct rbd *r, uint64_t off, uint64_t len)
{
	uint64_t last = (off + len - 1) / r->obj_size;

	if (!r->map)
		return;
	if (last >= r->map_objs) {
		/* Grown: the new objects do not exist yet. */
		uint64_t objs = last + 1;
		uint8_t *m = objs > RBD_MAP_MAX_OBJS ?
				     NULL :
				     realloc(r->map, (size_t)(objs + 7) / 8);

		if (!m) {
			rbd_map_drop(r);
			return;
		}
		memset(m + (r->map_objs + 7) / 8, 0,
		       (size_t)((objs + 7) / 8 - (r->map_objs + 7) / 8));
		r->map = m;
		r->map_objs = objs;
	}
	for (uint64_t o = off / r->obj_size; o <= last; o++)
		r->map[o / 8] |= (uint8_t)(1u << (o % 8));
}

static bool rbd_map_bit(const struct rbd *r, uint64_t o)
{
	return o < r->map_objs && (r->map[o / 8] >> (o % 8)) & 1;
}

/*
 * Make the image hold [0, off + len): grow it in large steps. A write (data)
 * marks its objects in the allocation map and counts as in flight until
 * rbd_written(); any change made while someone else owns the exclusive lock
 * means others may have written since the map was built.
 */
static int rbd_reserve(struct rbd *r, uint64_t off, uint64_t len, bool data)
{
	uint64_t end = off + len;
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	if (r->map && r->map_locked && !rbd_lock_owned(r))
		r->map_locked = false;
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
	if (ret >= 0 && data && len)
		rbd_map_mark(r, off, len);
	if (ret >= 0 && data)
		r->writes++;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* n writes reserved with rbd_reserve have completed (or failed). */
static void rbd_written(struct rbd *r, unsigned n)
{
	pthread_mutex_lock(&r->lock);
	r->writes -= n;
	pthread_mutex_unlock(&r->lock);
}

/* Issue v[0..n) and wait for all of them. Reads beyond the size read as
 * zeroes; writes past the end grow the image first. */
static int rbd_run(struct rbd *r, struct img_io_vec *v, unsigned n)
{
	rbd_completion_t c[RBD_WINDOW];
	uint64_t want[RBD_WINDOW];
	int first = 0;

	for (unsigned done = 0; done < n;) {
		unsigned k = img_min(n - done, RBD_WINDOW), issued = 0,
			 writes = 0;
		uint64_t size = rbd_size_now(r);

		for (unsigned i = 0; i < k; i++) {
			struct img_io_vec *e = &v[done + i];
			uint64_t len = e->len;
			int ret;

			want[i] = 0;
			c[i] = NULL;
			if (e->write) {
				ret = rbd_reserve(r, e->file_off, len, true);
				writes += ret >= 0;
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
		if (writes)
			rbd_written(r, writes);
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
		return rbd_reserve(r, file_off, len, false);
	ret = rbd_reserve(r, file_off, len, false);
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
	rbd_map_drop(r);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* State of one extent query, filled by the diff callback. */
struct rbd_diff {
	bool any; /* removed data counts too (a diff from a snapshot) */
	uint64_t off; /* queried offset */
	uint64_t data_end; /* end of data found at off, 0 if none yet */
	uint64_t next_data; /* start of the first data after off, or 0 */
	uint64_t total; /* allocated bytes (the whole-image walk) */
};

static int rbd_diff_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct rbd_diff *d = arg;
	uint64_t end = off + len;

	/* librbd may go on calling after a stop (whole_object off). */
	if (d->next_data)
		return RBD_DIFF_STOP;
	if ((!exists && !d->any) || end <= d->off)
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

/* Lock held, map built: the extent at file_off (< end) as extent_op. */
static void rbd_map_extent(const struct rbd *r, uint64_t file_off, uint64_t len,
			   uint64_t end, bool *data, uint64_t *extent_len)
{
	uint64_t o = file_off / r->obj_size, p = (o + 1) * r->obj_size;
	bool d = rbd_map_bit(r, o);

	while (p < end && rbd_map_bit(r, p / r->obj_size) == d)
		p += r->obj_size;
	*data = d;
	*extent_len = d || p < end ? img_min(p, end) - file_off : len;
}

static int rbd_extent_op(struct img_io *io, uint64_t file_off, uint64_t len,
			 bool *data, uint64_t *extent_len)
{
	struct rbd *r = to_rbd(io);
	uint64_t size, start, end;
	struct rbd_diff d = { .off = file_off };
	int ret;

	pthread_mutex_lock(&r->lock);
	size = r->size;
	end = img_min(file_off + len, size);
	if (file_off < size) {
		rbd_map_get(r);
		if (r->map) {
			rbd_map_extent(r, file_off, len, end, data, extent_len);
			pthread_mutex_unlock(&r->lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&r->lock);
	if (file_off >= size) {
		*data = false;
		*extent_len = len;
		return 0;
	}
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
	uint64_t size;
	bool mapped;
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	size = r->size;
	rbd_map_get(r);
	mapped = r->map != NULL;
	for (uint64_t o = 0; mapped && o < r->map_objs; o++)
		if (rbd_map_bit(r, o))
			d.total += r->obj_size;
	pthread_mutex_unlock(&r->lock);
	if (!mapped && size)
		ret = rbd_diff_iterate2(r->image, NULL, 0, size, 1, 1,
					rbd_sum_cb, &d);
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
		rbd_disconnect(r->cluster);
	pthread_mutex_destroy(&r->lock);
	free(r->map);
	free(r->io.path);
	rbd_name_free(&r->name);
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

/* ---- snapshots, diffs and clones ---- */

static int rbd_snap_cmp(const void *a, const void *b)
{
	const rbd_snap_info_t *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* The image's snapshots, oldest first: *out (free with rbd_snaps_free). */
static int rbd_snaps(struct rbd *r, rbd_snap_info_t **out, int *n)
{
	int max = 16, ret = -ERANGE;
	rbd_snap_info_t *s = NULL;

	for (int tries = 0; ret == -ERANGE && tries < 4; tries++) {
		free(s);
		if (max < 1 || max > (1 << 20))
			return img_error(-IMG_ECORRUPT,
					 "rbd: '%s' reports %d snapshots",
					 r->io.path, max);
		s = calloc((size_t)max, sizeof(*s));
		if (!s)
			return img_error(-ENOMEM, "rbd: out of memory");
		ret = rbd_snap_list(r->image, s, &max);
	}
	if (ret < 0) {
		free(s);
		return img_error(ret,
				 "rbd: cannot list the snapshots of '%s': %s",
				 r->io.path, strerror(-ret));
	}
	qsort(s, (size_t)ret, sizeof(*s), rbd_snap_cmp);
	*out = s;
	*n = ret;
	return 0;
}

static void rbd_snaps_free(rbd_snap_info_t *s)
{
	rbd_snap_list_end(s);
	free(s);
}

static void rbd_list_free(struct img_snapshot_info *list, int n)
{
	for (int i = 0; i < n; i++) {
		free(list[i].id);
		free(list[i].name);
	}
	free(list);
}

static int rbd_snapshot_list_op(struct img_io *io,
				struct img_snapshot_info **out, size_t *n)
{
	struct rbd *r = to_rbd(io);
	struct img_snapshot_info *list;
	rbd_snap_info_t *s;
	int k, ret;

	ret = rbd_snaps(r, &s, &k);
	if (ret < 0)
		return ret;
	list = calloc((size_t)k + 1, sizeof(*list));
	for (int i = 0; list && i < k; i++) {
		struct timespec ts = { 0 };
		char id[32];

		snprintf(id, sizeof(id), "%" PRIu64, s[i].id);
		list[i].id = strdup(id);
		list[i].name = strdup(s[i].name);
		if (!list[i].id || !list[i].name) {
			rbd_list_free(list, i + 1);
			list = NULL;
			break;
		}
		list[i].disk_size = s[i].size;
		list[i].icount = UINT64_MAX;
		if (rbd_snap_get_timestamp(r->image, s[i].id, &ts) >= 0) {
			list[i].date_sec = (uint64_t)ts.tv_sec;
			list[i].date_nsec = (uint32_t)ts.tv_nsec;
		}
	}
	rbd_snaps_free(s);
	if (!list)
		return img_error(-ENOMEM, "rbd: out of memory");
	*out = list;
	*n = (size_t)k;
	return 0;
}

/* The name of the snapshot whose id (first) or name is name_or_id. */
static int rbd_snap_find(struct rbd *r, const char *name_or_id, char **name)
{
	rbd_snap_info_t *s;
	int k, ret, hit = -1;

	ret = rbd_snaps(r, &s, &k);
	if (ret < 0)
		return ret;
	for (int i = 0; i < k && hit < 0; i++) {
		char id[32];

		snprintf(id, sizeof(id), "%" PRIu64, s[i].id);
		if (!strcmp(id, name_or_id))
			hit = i;
	}
	for (int i = 0; i < k && hit < 0; i++)
		if (!strcmp(s[i].name, name_or_id))
			hit = i;
	*name = hit < 0 ? NULL : strdup(s[hit].name);
	rbd_snaps_free(s);
	if (hit < 0)
		return img_error(-ENOENT, "rbd: '%s' has no snapshot '%s'",
				 r->io.path, name_or_id);
	return *name ? 0 : img_error(-ENOMEM, "rbd: out of memory");
}

/* Lock held: the sizes after the image's contents were switched. */
static int rbd_resync(struct rbd *r)
{
	uint64_t size;
	int ret = rbd_get_size(r->image, &size);

	rbd_map_drop(r);
	if (ret < 0)
		return ret;
	r->size = r->phys = size;
	return 0;
}

static int rbd_snap_create_locked(struct rbd *r, const char *name)
{
	int ret;

	/* The snapshot records the disk, not the growth reserved ahead. */
	if (r->phys > r->size) {
		ret = rbd_resize(r->image, r->size);
		if (ret < 0)
			return ret;
		r->phys = r->size;
	}
	ret = rbd_snap_create(r->image, name);
	if (ret == -EEXIST)
		return img_error(ret, "rbd: '%s' already has a snapshot '%s'",
				 r->io.path, name);
	return ret;
}

static int rbd_snap_delete_locked(struct rbd *r, const char *name)
{
	int prot = 0, ret = rbd_snap_is_protected(r->image, name, &prot);

	if (ret >= 0 && prot) {
		ret = rbd_snap_unprotect(r->image, name);
		if (ret == -EBUSY)
			return img_error(
				ret,
				"rbd: snapshot '%s' of '%s' has clones: flatten or remove them first",
				name, r->io.path);
	}
	return ret < 0 ? ret : rbd_snap_remove(r->image, name);
}

static int rbd_snapshot_op(struct img_io *io, enum img_io_snap_op op,
			   const char *name_or_id, uint64_t *size)
{
	static const char *const what[] = {
		[IMG_IO_SNAP_CREATE] = "create",
		[IMG_IO_SNAP_APPLY] = "revert to",
		[IMG_IO_SNAP_DELETE] = "delete",
		[IMG_IO_SNAP_LOAD] = "open",
	};
	struct rbd *r = to_rbd(io);
	char *name = NULL;
	int ret = 0;

	if (op != IMG_IO_SNAP_CREATE) {
		ret = rbd_snap_find(r, name_or_id, &name);
		if (ret < 0)
			return ret;
	} else if (!*name_or_id || strpbrk(name_or_id, "@/:")) {
		return img_error(
			-EINVAL,
			"rbd: snapshot name '%s' is empty or has '@', '/' or ':'",
			name_or_id);
	}
	img_clear_error();
	pthread_mutex_lock(&r->lock);
	switch (op) {
	case IMG_IO_SNAP_CREATE:
		ret = rbd_snap_create_locked(r, name_or_id);
		break;
	case IMG_IO_SNAP_DELETE:
		ret = rbd_snap_delete_locked(r, name);
		break;
	case IMG_IO_SNAP_APPLY:
		ret = rbd_snap_rollback(r->image, name);
		if (ret >= 0)
			ret = rbd_resync(r);
		break;
	case IMG_IO_SNAP_LOAD:
		ret = rbd_snap_set(r->image, name);
		if (ret >= 0) {
			r->at_snap = true;
			ret = rbd_resync(r);
		}
		break;
	}
	*size = r->size;
	pthread_mutex_unlock(&r->lock);
	/* The specific cases above left a message; librbd's errors did not. */
	if (ret < 0 && !img_last_error()[0])
		img_error(ret, "rbd: cannot %s snapshot '%s' of '%s': %s",
			  what[op], name_or_id, io->path, strerror(-ret));
	free(name);
	return ret < 0 ? ret : 0;
}

static int rbd_changed_op(struct img_io *io, const char *from, unsigned flags,
			  uint64_t off, uint64_t len, bool *changed,
			  uint64_t *n)
{
	struct rbd *r = to_rbd(io);
	struct rbd_diff d = { .any = from != NULL, .off = off };
	uint64_t size, start, end;
	int ret;

	size = rbd_size_now(r);
	if (!len || off >= size) {
		*changed = false;
		*n = len;
		return 0;
	}
	end = img_min(off + len, size);
	start = off - off % r->obj_size;
	/* Exact extents (whole_object off) between snapshots, so that data
	 * an object kept is not copied again. */
	ret = rbd_diff_iterate2(r->image, from, start, end - start,
				!(flags & IMG_CHANGED_OWN_LAYER), from == NULL,
				rbd_diff_cb, &d);
	if (ret < 0 && ret != RBD_DIFF_STOP)
		return img_error(ret, "rbd: diff of '%s'%s%s failed: %s",
				 io->path, from ? " from snapshot " : "",
				 from ? from : "", strerror(-ret));
	*changed = d.data_end != 0;
	if (d.data_end)
		*n = img_min(d.data_end, end) - off;
	else
		*n = d.next_data ? img_min(d.next_data, end) - off : len;
	return 0;
}

static int rbd_clone_op(struct img_io *io, const char *child, uint64_t size)
{
	struct rbd *r = to_rbd(io);
	const struct rbd_name *pn = &r->name;
	struct rbd_name cn = { 0 };
	rados_ioctx_t cio = NULL;
	rbd_image_t pimg = NULL, cimg = NULL;
	rbd_image_options_t o = NULL;
	uint64_t now;
	int prot = 0, ret;

	if (strncmp(child, "rbd:", 4))
		return img_error(
			-EINVAL,
			"rbd: a clone needs rbd: names, not '%s' and '%s'",
			io->path, child);
	ret = rbd_parse(child, &cn);
	if (ret < 0)
		return ret;
	if (!pn->snap || cn.snap) {
		ret = img_error(
			-EINVAL,
			"rbd: clone '%s' of '%s': the parent must name a snapshot (rbd:POOL/IMAGE@SNAP), the clone none",
			child, io->path);
		goto out;
	}
	ret = rbd_ioctx(child, &cn, r->cluster, &cio);
	if (ret < 0)
		goto out;
	/* A writable handle on the parent's head: this io is at the
	 * snapshot, read-only, and protecting changes the image. */
	ret = rbd_open(r->ioctx, pn->image, &pimg, NULL);
	if (ret < 0) {
		pimg = NULL;
		img_error(ret, "rbd: cannot open the parent '%s': %s", io->path,
			  strerror(-ret));
		goto out;
	}
	/* Protected, so that clients of clone format 1 can use it too. */
	ret = rbd_snap_is_protected(pimg, pn->snap, &prot);
	if (ret >= 0 && !prot)
		ret = rbd_snap_protect(pimg, pn->snap);
	if (ret < 0) {
		img_error(ret, "rbd: cannot protect snapshot '%s': %s",
			  io->path,
			  ret == -ENOENT ? "no such snapshot" : strerror(-ret));
		goto out;
	}
	rbd_image_options_create(&o);
	ret = rbd_clone3(r->ioctx, pn->image, pn->snap, cio, cn.image, o);
	if (ret < 0) {
		img_error(
			ret, "rbd: cannot clone '%s' as '%s': %s", io->path,
			child,
			ret == -EEXIST ?
				"it exists (remove it first, or convert with -n)" :
				strerror(-ret));
		goto out;
	}
	ret = rbd_open(cio, cn.image, &cimg, NULL);
	if (ret >= 0)
		ret = rbd_get_size(cimg, &now);
	if (ret >= 0 && now != size)
		ret = rbd_resize(cimg, size);
	if (ret < 0)
		img_error(ret, "rbd: cannot resize the clone '%s': %s", child,
			  strerror(-ret));
out:
	if (o)
		rbd_image_options_destroy(o);
	if (cimg)
		rbd_close(cimg);
	if (pimg)
		rbd_close(pimg);
	if (cio)
		rados_ioctx_destroy(cio);
	rbd_name_free(&cn);
	return ret < 0 ? ret : 0;
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
	.snapshot = rbd_snapshot_op,
	.snapshot_list = rbd_snapshot_list_op,
	.changed = rbd_changed_op,
	.clone = rbd_clone_op,
};

static int rbd_open_image(const char *path, const struct rbd_name *n,
			  unsigned flags, struct rbd *r)
{
	rbd_image_info_t info;
	uint64_t features;
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
	r->at_snap = n->snap != NULL;
	r->excl_lock = rbd_get_features(r->image, &features) >= 0 &&
		       (features & RBD_FEATURE_EXCLUSIVE_LOCK);
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
	r->name = n;
	ret = rbd_open_image(path, &r->name, flags, r);
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

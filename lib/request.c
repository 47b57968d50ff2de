/* SPDX-License-Identifier: MIT */
/*
 * The one choke point every request passes before a driver sees it: bounds
 * (off + len within the virtual size, no overflow), read-only images, formats
 * without write support, splitting into chunks of at most IMG_MAX_REQUEST,
 * the image lock for drivers that are not thread-safe (reads and writes the
 * driver maps with .map_direct do their data transfer outside it), the
 * defaults for optional driver ops that are NULL, and the rule that guest
 * data mapped to a host range past the end of its file is an error, not
 * zeroes (img_data_check, which drivers and the .map_direct path share).
 * For a driver with .map the core moves the data of reads itself: plain
 * extents are batched and read without the lock, zeroes, backing data and
 * the transforms of lib/map-read.c are filled in under it; block status of
 * such a layer is its map. Block status walks the backing chain the way
 * qemu-img map does: each layer is asked in turn until one allocates the
 * range, holds zeroes past its backing's end, or has no backing.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

enum req_op { REQ_READ, REQ_WRITE, REQ_ZERO, REQ_DISCARD, REQ_STATUS };

static const char *const op_names[] = {
	[REQ_READ] = "read",	       [REQ_WRITE] = "write",
	[REQ_ZERO] = "zero",	       [REQ_DISCARD] = "discard",
	[REQ_STATUS] = "block status",
};

static int check_request(struct img *img, enum req_op op, uint64_t off,
			 uint64_t len)
{
	if (off > UINT64_MAX - len || off + len > img->size)
		return img_error(-EINVAL,
				 "%s at offset %" PRIu64 " length %" PRIu64
				 " is past the end of the image (size %" PRIu64
				 ")",
				 op_names[op], off, len, img->size);
	if (op != REQ_READ && op != REQ_STATUS && img_read_only(img))
		return img_error(-EROFS, "%s: cannot %s '%s': opened read-only",
				 img->drv->name, op_names[op],
				 img_filename(img));
	return 0;
}

static void lock(struct img *img)
{
	if (!img->drv->thread_safe)
		pthread_mutex_lock(&img->lock);
}

static void unlock(struct img *img)
{
	if (!img->drv->thread_safe)
		pthread_mutex_unlock(&img->lock);
}

void img_direct_drain(struct img *img)
{
	img_zcache_forget(img);
	if (!atomic_load(&img->direct_inflight))
		return;
	pthread_mutex_lock(&img->direct_lock);
	while (atomic_load(&img->direct_inflight)) {
		struct timespec ts;

		/* The transfers may sit completed on an engine's ring whose
		 * owner is blocked on this image's lock, which our caller
		 * holds: reap them from here. */
		pthread_mutex_unlock(&img->direct_lock);
		img_aio_reap_all();
		pthread_mutex_lock(&img->direct_lock);
		if (!atomic_load(&img->direct_inflight))
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&img->direct_idle, &img->direct_lock,
				       &ts);
	}
	pthread_mutex_unlock(&img->direct_lock);
}

int img_data_check(struct img *img, struct img_io *io, uint64_t len,
		   uint64_t file_off, uint64_t off)
{
	uint64_t size = 0;
	int ret;

	if (file_off > UINT64_MAX - len)
		return img_error(-IMG_ECORRUPT,
				 "%s: guest offset 0x%" PRIx64
				 " maps to host offset 0x%" PRIx64
				 " which overflows",
				 img->drv->name, off, file_off);
	ret = img_io_holds(io, file_off + len, &size);
	if (ret < 0)
		return ret;
	if (ret)
		return 0;
	/* Name the first byte that is missing. */
	if (file_off < size) {
		off += size - file_off;
		file_off = size;
	}
	return img_error(-EIO,
			 "%s: guest offset 0x%" PRIx64
			 " maps to host offset 0x%" PRIx64
			 " past the end of '%s' (size %" PRIu64 ")",
			 img->drv->name, off, file_off,
			 io->path ? io->path : io->ops->name, size);
}

int img_data_read(struct img *img, struct img_io *io, void *buf, uint64_t len,
		  uint64_t file_off, uint64_t off)
{
	int ret = img_data_check(img, io, len, file_off, off);

	return ret < 0 ? ret : img_io_pread(io, buf, len, file_off);
}

int img_data_check_vecs(struct img *img, struct img_io *io, const void *buf,
			uint64_t off, const struct img_io_vec *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		int ret;

		if (v[i].write)
			continue;
		ret = img_data_check(
			img, io, v[i].len, v[i].file_off,
			off + (uint64_t)((const uint8_t *)v[i].buf -
					 (const uint8_t *)buf));
		if (ret < 0)
			return ret;
	}
	return 0;
}

void img_direct_release(struct img *img)
{
	if (atomic_fetch_sub(&img->direct_inflight, 1) == 1) {
		pthread_mutex_lock(&img->direct_lock);
		pthread_cond_broadcast(&img->direct_idle);
		pthread_mutex_unlock(&img->direct_lock);
	}
}

/* The driver's map, its answer checked by backend_map. */
static int map_checked(struct img *img, uint64_t off, uint64_t len,
		       bool want_zero, struct img_map *m)
{
	memset(m, 0, sizeof(*m));
	m->want_zero = want_zero;
	return backend_map(img, off, len, m);
}

/* Plain data at a host offset: the core batches these. */
static bool map_is_data(const struct img_map *m)
{
	const unsigned plain = IMG_EXT_ALLOCATED | IMG_EXT_DATA |
			       IMG_EXT_OFFSET_VALID;

	return (m->flags & (plain | IMG_EXT_ZERO | IMG_EXT_COMPRESSED |
			    IMG_EXT_ENCRYPTED)) == plain;
}

/* Read one extent that is not plain data, under the image lock. */
static int map_read_other(struct img *img, const struct img_map *m,
			  uint8_t *buf, uint64_t off)
{
	if (!(m->flags & IMG_EXT_ALLOCATED))
		return img_read_backing(img, buf, off, m->len);
	if (m->flags & IMG_EXT_ZERO) {
		memset(buf, 0, m->len);
		return 0;
	}
	if (m->flags & IMG_EXT_COMPRESSED)
		return img_read_compressed(img, m, buf, off);
	if (m->flags & IMG_EXT_ENCRYPTED)
		return img_read_encrypted(img, m, buf, off);
	return img_error(-EIO,
			 "%s: guest offset 0x%" PRIx64
			 " maps to flags %#x, which say nothing to read",
			 img->drv->name, off, m->flags);
}

/* Add a host read to the batch, merging with the last one when it
 * continues it in memory and in the file. false: the batch is full. */
static bool batch_add(struct img_io_vec *v, unsigned *n, uint8_t *buf,
		      const struct img_map *m)
{
	struct img_io_vec *last = *n ? &v[*n - 1] : NULL;

	if (last && (uint8_t *)last->buf + last->len == buf &&
	    last->file_off + last->len == m->file_off) {
		last->len += m->len;
		return true;
	}
	if (*n == IMG_DIRECT_MAX_VECS)
		return false;
	v[(*n)++] = (struct img_io_vec){ .buf = buf,
					 .len = m->len,
					 .file_off = m->file_off };
	return true;
}

/*
 * Read one chunk through drv->map. Under the lock the extents are mapped,
 * zeroes, backing data and transformed extents filled in, and plain data
 * collected into one batch per host file; the batch then runs without the
 * lock, counted in direct_inflight like a .map_direct transfer. A batch
 * that fills up, or an extent in another file, ends the round and the next
 * round maps the rest.
 */
static int map_read(struct img *img, uint8_t *buf, uint64_t off, uint64_t len)
{
	while (len) {
		struct img_io_vec vecs[IMG_DIRECT_MAX_VECS];
		struct img_io *io = NULL;
		uint64_t done = 0;
		unsigned n = 0;
		int ret = 0;

		lock(img);
		while (done < len) {
			struct img_map m;
			struct img_io *mio;

			ret = map_checked(img, off + done, len - done, false,
					  &m);
			if (ret < 0)
				break;
			if (!map_is_data(&m)) {
				ret = map_read_other(img, &m, buf + done,
						     off + done);
				if (ret < 0)
					break;
				done += m.len;
				continue;
			}
			mio = m.io ? m.io : img->file;
			if ((n && mio != io) ||
			    !batch_add(vecs, &n, buf + done, &m))
				break;
			io = mio;
			done += m.len;
		}
		if (ret >= 0 && n)
			ret = img_data_check_vecs(img, io, buf, off, vecs, n);
		if (ret >= 0 && n)
			atomic_fetch_add(&img->direct_inflight, 1);
		unlock(img);
		if (ret < 0)
			return ret;
		if (n) {
			ret = img_io_submit(io, vecs, n);
			img_direct_release(img);
			if (ret < 0)
				return ret;
		}
		buf += done;
		off += done;
		len -= done;
	}
	return 0;
}

/* ---- writes: the driver maps and plans, the core moves the data ---- */

struct img_write_lock {
	uint64_t off, len;
	struct img_write_lock *next;
};

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* With the lock held: sleep until no planned write holds a lock on a range
 * overlapping [off, off + len). */
static void wait_write_locks(struct img *img, uint64_t off, uint64_t len)
{
	const struct img_write_lock *l;

again:
	for (l = img->write_locks; l; l = l->next) {
		if (ranges_overlap(l->off, l->len, off, len)) {
			pthread_cond_wait(&img->write_done, &img->lock);
			goto again;
		}
	}
}

/* l lives in the caller's frame, which removes it before it returns. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
static void write_lock_add(struct img *img, struct img_write_lock *l,
			   const struct img_map *m)
{
	l->off = m->lock_off;
	l->len = m->lock_len;
	l->next = img->write_locks;
	img->write_locks = l;
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif

static void write_lock_remove(struct img *img, struct img_write_lock *l)
{
	struct img_write_lock **p = &img->write_locks;

	while (*p != l)
		p = &(*p)->next;
	*p = l->next;
	pthread_cond_broadcast(&img->write_done);
}

void img_lock_whole(struct img *img)
{
	pthread_mutex_lock(&img->lock);
	while (img->write_locks)
		pthread_cond_wait(&img->write_done, &img->lock);
}

static int map_write(struct img *img, uint64_t off, uint64_t len,
		     enum img_map_write mode, struct img_map *m)
{
	memset(m, 0, sizeof(*m));
	m->write = mode;
	return backend_map(img, off, len, m);
}

/* A write extent that is only a transfer: no plan, no transform, and no
 * bytes around it to fill. */
static bool write_in_place(const struct img_map *m)
{
	return !m->plan && !(m->flags & IMG_EXT_ENCRYPTED) &&
	       m->region_len == m->len;
}

/* Map a read for the ring: plain data into vecs, zeroes filled in buf;
 * whatever else (backing data, transforms) sends it to the pool. */
static int direct_map_read(struct img *img, uint8_t *buf, uint64_t off,
			   uint64_t len, struct img_io **io,
			   struct img_io_vec *vecs, unsigned *n)
{
	unsigned cap = *n;
	uint64_t done = 0;
	int ret;

	*n = 0;
	while (done < len) {
		struct img_map m;
		struct img_io *mio;

		ret = map_checked(img, off + done, len - done, false, &m);
		if (ret < 0)
			return ret;
		if (!map_is_data(&m)) {
			bool zero = (m.flags & IMG_EXT_ALLOCATED) ?
					    (m.flags & IMG_EXT_ZERO) :
					    !img_has_backing(img);

			if (!zero)
				return 0;
			memset(buf + done, 0, m.len);
			done += m.len;
			continue;
		}
		mio = m.io;
		if ((*n && mio != *io) || *n == cap ||
		    !batch_add(vecs, n, buf + done, &m))
			return 0;
		*io = mio;
		done += m.len;
	}
	ret = img_data_check_vecs(img, *io, buf, off, vecs, *n);
	return ret < 0 ? ret : 1;
}

/* Map a write for the ring: only extents that go in place, outside every
 * planned write's lock. */
static int direct_map_write(struct img *img, uint8_t *buf, uint64_t off,
			    uint64_t len, struct img_io **io,
			    struct img_io_vec *vecs, unsigned *n)
{
	unsigned cap = *n;
	uint64_t done = 0;

	*n = 0;
	for (const struct img_write_lock *l = img->write_locks; l; l = l->next)
		if (ranges_overlap(l->off, l->len, off, len))
			return 0;
	while (done < len) {
		struct img_map m;
		int ret = map_write(img, off + done, len - done,
				    IMG_MAP_WRITE_IN_PLACE, &m);

		if (ret < 0)
			return ret;
		if (!m.flags || !write_in_place(&m))
			return 0;
		if ((*n && m.io != *io) || *n == cap ||
		    !batch_add(vecs, n, buf + done, &m))
			return 0;
		vecs[*n - 1].write = true;
		*io = m.io;
		done += m.len;
	}
	return 1;
}

int img_direct_map(struct img *img, void *buf, uint64_t off, uint64_t len,
		   bool write, struct img_io **io, struct img_io_vec *vecs,
		   unsigned *n)
{
	int ret;

	*io = NULL;
	lock(img);
	ret = write ? direct_map_write(img, buf, off, len, io, vecs, n) :
		      direct_map_read(img, buf, off, len, io, vecs, n);
	if (ret > 0)
		atomic_fetch_add(&img->direct_inflight, 1);
	unlock(img);
	return ret;
}

/* Fill [off, off + len) of the layer's current contents into buf: zeroes
 * past the virtual size (the tail of the last cluster). */
static int read_current(struct img *img, uint8_t *buf, uint64_t off,
			uint64_t len)
{
	uint64_t in = off < img->size ? img_min(len, img->size - off) : 0;

	memset(buf + in, 0, len - in);
	return in ? map_read(img, buf, off, in) : 0;
}

/*
 * Write one extent a write map returned, with its region: the bytes
 * around the request come from the layer's current contents (the tables
 * do not name the new data before the commit, so a read still sees the
 * old), then everything goes out as one host write, encrypted if the
 * extent says so.
 */
static int write_region(struct img *img, const uint8_t *buf, uint64_t off,
			const struct img_map *m)
{
	uint64_t head = off - m->region_off;
	uint64_t tail = m->region_off + m->region_len - (off + m->len);
	uint64_t host = m->file_off - head;
	struct img_io_vec v[3];
	uint8_t *p = NULL;
	unsigned n = 0;
	int ret = 0;

	if (!head && !tail && !(m->flags & IMG_EXT_ENCRYPTED))
		return img_io_pwrite(m->io, buf, m->len, host);
	if (posix_memalign((void **)&p, 4096,
			   (size_t)((m->flags & IMG_EXT_ENCRYPTED) ?
					    m->region_len :
					    head + tail)))
		return img_error(-ENOMEM, "out of memory");
	if (m->flags & IMG_EXT_ENCRYPTED) {
		ret = read_current(img, p, m->region_off, head);
		if (ret >= 0)
			ret = read_current(img, p + head + m->len, off + m->len,
					   tail);
		memcpy(p + head, buf, m->len);
		if (ret >= 0)
			ret = img_cipher_run(m->cipher, true, p, p,
					     m->region_len, host,
					     m->region_off);
		if (ret >= 0)
			ret = img_io_pwrite(m->io, p, m->region_len, host);
		free(p);
		return ret < 0 ? ret : 0;
	}
	if (head)
		ret = read_current(img, p, m->region_off, head);
	if (tail && ret >= 0)
		ret = read_current(img, p + head, off + m->len, tail);
	if (ret < 0)
		goto out;
	/* Edges of zeroes (a new cluster over a hole): the host zeroes the
	 * region without moving them (fallocate), and only the data goes
	 * out, as QEMU does. */
	if (img_is_zero(p, head + tail)) {
		ret = img_io_zero(m->io, host, m->region_len,
				  IMG_IO_ZERO_NO_WRITE);
		if (ret == 0)
			ret = img_io_pwrite(m->io, buf, m->len, host + head);
		if (ret != -ENOTSUP)
			goto out;
		ret = 0;
	}
	if (head)
		v[n++] = (struct img_io_vec){ p, head, host, true };
	v[n++] = (struct img_io_vec){ (void *)buf, m->len, host + head, true };
	if (tail)
		v[n++] = (struct img_io_vec){ p + head, tail,
					      host + head + m->len, true };
	ret = img_io_submit(m->io, v, n);
out:
	free(p);
	return ret < 0 ? ret : 0;
}

/*
 * Write one chunk. Under the lock, after waiting out planned writes whose
 * lock overlaps it, the chunk is mapped: extents that go in place are
 * batched per host file, as reads are; the first extent with a plan, a
 * transform or a wider region ends the round and takes a write lock on its
 * range. Without the lock the batch is written (counted in direct_inflight,
 * so a driver that frees a host range waits for it), then the planned
 * extent (nothing else can reach its new clusters, and its lock keeps
 * other writes out of its old ones), and the plan is committed under the
 * lock, which ends the write lock.
 */
static int write_chunk(struct img *img, const uint8_t *buf, uint64_t off,
		       uint64_t len)
{
	struct img_write_lock wl;

	while (len) {
		struct img_io_vec vecs[IMG_DIRECT_MAX_VECS];
		struct img_io *io = NULL;
		struct img_map last = { .len = 0 };
		bool planned = false;
		uint64_t done = 0;
		unsigned n = 0;
		int ret = 0;

		lock(img);
		if (!img->drv->thread_safe)
			wait_write_locks(img, off, len);
		while (done < len) {
			struct img_map m;

			ret = map_write(img, off + done, len - done,
					IMG_MAP_WRITE, &m);
			if (ret < 0)
				break;
			if (!write_in_place(&m)) {
				/* backend_map: only a driver that is not
				 * thread_safe, so under the lock. */
				write_lock_add(img, &wl, &m);
				last = m;
				planned = true;
				break;
			}
			if ((n && m.io != io) ||
			    !batch_add(vecs, &n, (uint8_t *)buf + done, &m))
				break;
			vecs[n - 1].write = true;
			io = m.io;
			done += m.len;
		}
		if (n)
			atomic_fetch_add(&img->direct_inflight, 1);
		unlock(img);
		if (n) {
			int r = ret < 0 ? 0 : img_io_submit(io, vecs, n);

			img_direct_release(img);
			if (r < 0)
				ret = r;
		}
		if (planned) {
			int r = ret < 0 ? ret :
					  write_region(img, buf + done,
						       off + done, &last);

			if (ret >= 0)
				ret = r;
			pthread_mutex_lock(&img->lock);
			if (last.plan) {
				r = backend_commit(img, last.plan,
						   ret < 0 ? ret : 0);
				if (ret >= 0)
					ret = r;
			}
			write_lock_remove(img, &wl);
			pthread_mutex_unlock(&img->lock);
			done += last.len;
		}
		if (ret < 0)
			return ret;
		buf += done;
		off += done;
		len -= done;
	}
	return 0;
}

int img_read(struct img *img, void *buf, uint64_t off, uint64_t len)
{
	int ret;

	if (!len)
		return 0;
	ret = check_request(img, REQ_READ, off, len);
	if (ret < 0)
		return ret;
	while (len) {
		uint64_t n = img_min(len, IMG_MAX_REQUEST);

		ret = map_read(img, buf, off, n);
		if (ret < 0)
			return ret;
		buf = (uint8_t *)buf + n;
		off += n;
		len -= n;
	}
	return 0;
}

static int flush_locked(struct img *img)
{
	return backend_flush(img);
}

int img_write(struct img *img, const void *buf, uint64_t off, uint64_t len,
	      unsigned flags)
{
	int ret;

	if (!len)
		return 0;
	ret = check_request(img, REQ_WRITE, off, len);
	if (ret < 0)
		return ret;
	while (len) {
		uint64_t n = img_min(len, IMG_MAX_REQUEST);

		ret = write_chunk(img, buf, off, n);
		if (ret < 0)
			return ret;
		buf = (const uint8_t *)buf + n;
		off += n;
		len -= n;
	}
	if (flags & IMG_FUA) {
		lock(img);
		ret = flush_locked(img);
		unlock(img);
	}
	return ret;
}

/* Does a block-status map of this layer say the range reads as zeroes? */
static bool map_reads_zero(const struct img *img, const struct img_map *m)
{
	if (m->flags & IMG_EXT_ALLOCATED)
		return m->flags & IMG_EXT_ZERO;
	return !img_has_backing(img);
}

/* Where .zero cannot: write zero buffers, except over what already reads
 * as zeroes (no allocation for a range that needs none). */
static int zero_by_writing(struct img *img, uint64_t off, uint64_t len)
{
	uint64_t buf_len = img_min(len, 1u << 20);
	void *zeroes = calloc(1, (size_t)buf_len);
	int ret = 0;

	if (!zeroes)
		return img_error(-ENOMEM, "out of memory");
	while (len) {
		struct img_map m;
		uint64_t n;

		lock(img);
		ret = map_checked(img, off, len, true, &m);
		unlock(img);
		if (ret < 0)
			break;
		n = img_min(m.len, buf_len);
		if (!map_reads_zero(img, &m)) {
			ret = write_chunk(img, zeroes, off, n);
			if (ret < 0)
				break;
		}
		off += n;
		len -= n;
	}
	free(zeroes);
	return ret;
}

/* Zero [off, off + len) (within one IMG_MAX_REQUEST) with the driver's
 * .zero, falling back to writing zeroes where it answers -ENOTSUP. */
static int zero_piece(struct img *img, uint64_t off, uint64_t len,
		      unsigned flags)
{
	int ret;

	if (!img->drv->zero) {
		if (flags & IMG_ZERO_FAST)
			return img_error(-ENOTSUP, "%s: zeroing is not fast",
					 img->drv->name);
		return zero_by_writing(img, off, len);
	}
	lock(img);
	if (!img->drv->thread_safe)
		wait_write_locks(img, off, len);
	ret = backend_zero(img, off, len, flags);
	unlock(img);
	if (ret != -ENOTSUP || (flags & IMG_ZERO_FAST))
		return ret;
	img_clear_error();
	return zero_by_writing(img, off, len);
}

int img_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags)
{
	uint64_t g = img->zero_align ? img->zero_align : 1, end, a, b;
	int ret;

	if (!len)
		return 0;
	ret = check_request(img, REQ_ZERO, off, len);
	if (ret < 0)
		return ret;
	/* The unaligned head and tail go alone, so that the aligned middle
	 * (chunked at multiples of g) stays a metadata change. */
	end = off + len;
	a = img_min(img_align_up(off, g), end);
	b = end & ~(g - 1);
	if (end == img->size)
		b = end;
	else if (b < a)
		b = a;
	for (uint64_t pos = off; pos < end;) {
		uint64_t stop = pos < a ? a : pos < b ? b : end;
		uint64_t n = img_min(stop - pos, IMG_MAX_REQUEST);

		ret = zero_piece(img, pos, n, flags & ~IMG_FUA);
		if (ret < 0)
			return ret;
		pos += n;
	}
	if (flags & IMG_FUA) {
		lock(img);
		ret = flush_locked(img);
		unlock(img);
	}
	return ret;
}

int img_discard(struct img *img, uint64_t off, uint64_t len)
{
	int ret;

	if (!len)
		return 0;
	ret = check_request(img, REQ_DISCARD, off, len);
	if (ret < 0)
		return ret;
	if (!img->drv->zero)
		return 0;
	while (len) {
		uint64_t n = img_min(len, IMG_MAX_REQUEST);

		lock(img);
		if (!img->drv->thread_safe)
			wait_write_locks(img, off, n);
		ret = backend_discard(img, off, n);
		unlock(img);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

int img_flush(struct img *img)
{
	int ret;

	/* Nothing to write back on a read-only image. */
	if (img_read_only(img))
		return 0;
	lock(img);
	ret = flush_locked(img);
	unlock(img);
	return ret;
}

/* This layer's status of [off, off + len), len > 0 and within the image. */
static int layer_status(struct img *img, uint64_t off, uint64_t len,
			struct img_extent *ext)
{
	struct img_map m;
	int ret;

	memset(ext, 0, sizeof(*ext));
	ext->off = off;
	ext->depth = img->depth;
	lock(img);
	ret = map_checked(img, off, len, true, &m);
	unlock(img);
	if (ret < 0)
		return ret;
	ext->len = m.len;
	/* As QEMU, an encrypted extent's host offset is not reported: it holds
	 * no guest bytes anyone could read there. */
	ext->flags = m.flags & ~IMG_EXT_ENCRYPTED;
	if (m.flags & IMG_EXT_ENCRYPTED)
		ext->flags &= ~IMG_EXT_OFFSET_VALID;
	if (ext->flags & IMG_EXT_OFFSET_VALID) {
		ext->file_off = m.file_off;
		ext->file = m.io != img->file && m.io->path ? m.io->path :
							      img_filename(img);
	}
	return 0;
}

int img_block_status(struct img *img, uint64_t off, uint64_t len,
		     unsigned flags, struct img_extent *ext)
{
	struct img *layer = img;
	unsigned top_depth = img->depth;
	int ret;

	if (!len)
		return img_error(
			-EINVAL,
			"block status of an empty range at offset %" PRIu64,
			off);
	ret = check_request(img, REQ_STATUS, off, len);
	if (ret < 0)
		return ret;
	for (;;) {
		struct img *b = layer->backing;

		ret = layer_status(layer, off, len, ext);
		if (ret < 0)
			return ret;
		if ((ext->flags & IMG_EXT_ALLOCATED) ||
		    (flags & IMG_BS_NO_CHAIN))
			break;
		if (!b) {
			/* The bottom layer reads as zeroes here; as QEMU, a
			 * host offset it reports (an unallocated subcluster of
			 * a hosted cluster) is kept. */
			ext->flags = IMG_EXT_ZERO |
				     (ext->flags & IMG_EXT_OFFSET_VALID);
			break;
		}
		if (off >= img_size(b)) {
			/* Past the end of a short backing file: zeroes. */
			ext->flags = IMG_EXT_ZERO;
			ext->file = NULL;
			ext->file_off = 0;
			break;
		}
		len = img_min(ext->len, img_size(b) - off);
		layer = b;
	}
	ext->depth -= top_depth;
	return 0;
}

/*
 * After growing: what the layer holds past the old end in the block that
 * straddled it (data copied from a backing file, or left by a shrink) must
 * not show, so that block's tail is zeroed (img_set_zero_align's block).
 */
static int zero_old_tail(struct img *img, uint64_t old)
{
	uint64_t g = img->zero_align ? img->zero_align : 1;
	uint64_t end = img_min(img->size, img_align_up(old, g));
	struct img_map m;
	int ret;

	if (end <= old || !old)
		return 0;
	lock(img);
	ret = map_checked(img, old - 1, 1, true, &m);
	unlock(img);
	if (ret < 0 || !(m.flags & IMG_EXT_ALLOCATED) ||
	    (m.flags & IMG_EXT_ZERO))
		return ret < 0 ? ret : 0;
	return img_zero(img, old, end - old, 0);
}

int img_resize(struct img *img, uint64_t size, unsigned flags,
	       enum img_prealloc prealloc)
{
	uint64_t old;
	int ret;

	if (!img->drv->amend || !img->drv->amend->resize)
		return img_error(-ENOTSUP,
				 "%s: format does not support resizing",
				 img->drv->name);
	if (img_read_only(img))
		return img_error(-EROFS,
				 "%s: cannot resize '%s': opened read-only",
				 img->drv->name, img_filename(img));
	if (size < img->size && !(flags & IMG_RESIZE_SHRINK))
		return img_error(-EINVAL,
				 "resize: shrinking '%s' from %" PRIu64
				 " to %" PRIu64
				 " bytes needs IMG_RESIZE_SHRINK",
				 img_filename(img), img->size, size);
	if (size == img->size)
		return 0;
	img_lock_whole(img);
	old = img->size;
	ret = backend_resize(img, size, flags, prealloc);
	if (ret >= 0)
		img->size = size;
	pthread_mutex_unlock(&img->lock);
	if (ret < 0)
		return ret;
	return size > old ? zero_old_tail(img, old) : 0;
}

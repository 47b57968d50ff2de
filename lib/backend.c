/* SPDX-License-Identifier: MIT */
/*
 * The one place that calls a format driver's ops, as nbdkit's
 * server/backend.c is for plugins: one wrapper per op, which checks what the
 * driver hands back before the rest of lib/ trusts it. A return is 0 or
 * -errno (1 where the op may say "yes"), lengths lie within what was asked,
 * counts within the capacity given, pointers the caller will follow are set,
 * and outputs the core reads (info fields, snapshot and bitmap lists, check
 * counts) are consistent. A violation is a driver bug, or a corrupt image the
 * driver failed to refuse: either way it becomes -EIO with a message naming
 * the driver and the op, never a crash further on. The wrappers take no
 * lock: their callers (request.c, image.c, snapshot.c ...) keep the locking
 * and the argument checks, and a NULL op gets the documented default or
 * -ENOTSUP.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* The largest errno: anything below -4095 is not one (as the kernel's
 * MAX_ERRNO). */
#define MAX_ERRNO 4095

#define EXT_KNOWN_FLAGS                                    \
	(IMG_EXT_DATA | IMG_EXT_ZERO | IMG_EXT_ALLOCATED | \
	 IMG_EXT_OFFSET_VALID | IMG_EXT_COMPRESSED | IMG_EXT_ENCRYPTED)

/* -EIO with "<driver>: <op> <what>", what printf-style. */
__attribute__((format(printf, 3, 4))) static int
bug(const struct img_driver *drv, const char *op, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return img_error(-EIO, "%s: %s %s", drv->name, op, what);
}

/* ret from op, when success is 0..max. */
static int status_max(const struct img_driver *drv, const char *op, int ret,
		      int max)
{
	if ((ret >= 0 && ret <= max) || (ret < 0 && ret >= -MAX_ERRNO))
		return ret;
	return bug(drv, op, "returned %d, not %s or -errno", ret,
		   max ? "0, 1" : "0");
}

static int status(const struct img_driver *drv, const char *op, int ret)
{
	return status_max(drv, op, ret, 0);
}

static int missing(const struct img_driver *drv, const char *op)
{
	return img_error(-ENOTSUP, "%s: format does not support %s", drv->name,
			 op);
}

int backend_probe(const struct img_driver *drv, const uint8_t *buf, size_t len)
{
	int score;

	if (!drv->probe)
		return 0;
	score = drv->probe(buf, len);
	if (score < 0 || score > 100)
		return bug(drv, "probe", "returned score %d, not 0..100",
			   score);
	return score;
}

int backend_open(struct img *img, unsigned flags)
{
	const struct img_driver *drv = img->drv;
	int ret = drv->open(img, flags);

	/* A positive return claims success: the state it holds is released
	 * as on success, since the caller will not call close. */
	if (ret > 0 && drv->close)
		drv->close(img);
	return status(drv, "open", ret);
}

void backend_close(struct img *img)
{
	if (img->drv->close)
		img->drv->close(img);
}

int backend_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags)
{
	if (!img->drv->zero)
		return missing(img->drv, "zeroing");
	return status(img->drv, "zero", img->drv->zero(img, off, len, flags));
}

int backend_discard(struct img *img, uint64_t off, uint64_t len)
{
	int ret;

	if (!img->drv->zero)
		return 0;
	ret = img->drv->zero(img, off, len, IMG_ZERO_DISCARD);
	/* Discard is advisory: what cannot be deallocated keeps its data. */
	if (ret == -ENOTSUP) {
		img_clear_error();
		return 0;
	}
	return status(img->drv, "discard", ret);
}

int backend_flush(struct img *img)
{
	if (!img->drv->flush)
		return img_io_flush(img->file);
	return status(img->drv, "flush", img->drv->flush(img));
}

/* An extent of len_out bytes answering a request at off of len bytes. */
static int check_extent(const struct img_driver *drv, const char *op,
			uint64_t off, uint64_t len, uint64_t len_out,
			unsigned flags)
{
	if (!len_out || len_out > len)
		return bug(drv, op,
			   "at offset %" PRIu64 " returned length %" PRIu64
			   " for a request of %" PRIu64,
			   off, len_out, len);
	if (flags & ~EXT_KNOWN_FLAGS)
		return bug(drv, op,
			   "at offset %" PRIu64 " returned unknown flags %#x",
			   off, flags & ~EXT_KNOWN_FLAGS);
	return 0;
}

static int check_map(struct img *img, uint64_t off, uint64_t len,
		     struct img_map *m)
{
	const struct img_driver *drv = img->drv;
	int ret = check_extent(drv, "map", off, len, m->len, m->flags);

	if (ret < 0)
		return ret;
	if ((m->flags & IMG_EXT_OFFSET_VALID) && !m->io)
		m->io = img_file(img);
	if (m->flags & IMG_EXT_COMPRESSED) {
		if (!m->io)
			m->io = img_file(img);
		if (m->cluster_size < 512 ||
		    m->cluster_size > IMG_MAX_DECOMPRESS_OUT ||
		    m->len > m->cluster_size ||
		    m->in_cluster > m->cluster_size - m->len)
			return bug(drv, "map",
				   "at offset %" PRIu64
				   ": compressed cluster of %" PRIu64
				   " bytes does not hold %" PRIu64
				   " bytes from %" PRIu64,
				   off, m->cluster_size, m->len, m->in_cluster);
		if (!m->clen || m->clen > 2ull * IMG_MAX_DECOMPRESS_OUT ||
		    m->file_off > UINT64_MAX - m->clen)
			return bug(drv, "map",
				   "at offset %" PRIu64
				   ": compressed stream of %" PRIu64
				   " bytes at host offset %#" PRIx64,
				   off, m->clen, m->file_off);
		if (m->codec != IMG_COMPRESS_DEFLATE_RAW &&
		    m->codec != IMG_COMPRESS_DEFLATE_ZLIB &&
		    m->codec != IMG_COMPRESS_ZSTD)
			return bug(drv, "map",
				   "at offset %" PRIu64 ": unknown codec %d",
				   off, (int)m->codec);
	} else if ((m->flags & IMG_EXT_OFFSET_VALID) &&
		   m->file_off > UINT64_MAX - m->len) {
		return bug(drv, "map",
			   "at offset %" PRIu64 ": host offset %#" PRIx64
			   " overflows",
			   off, m->file_off);
	}
	if ((m->flags & IMG_EXT_ENCRYPTED) && !m->cipher)
		return bug(drv, "map",
			   "at offset %" PRIu64 ": encrypted without a cipher",
			   off);
	return 0;
}

/* What a write map returns (struct img_map, writes): an extent to write
 * at a host offset, inside a region that is contiguous on the host, and a
 * plan only where the driver may make one. */
static int check_write_map(struct img *img, uint64_t off, struct img_map *m)
{
	const struct img_driver *drv = img->drv;
	const unsigned data = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			      IMG_EXT_OFFSET_VALID;
	uint64_t end = off + m->len;

	if (!m->flags && m->write == IMG_MAP_WRITE_IN_PLACE && !m->plan)
		return 0;
	if ((m->flags & ~IMG_EXT_ENCRYPTED) != data)
		return bug(drv, "map",
			   "for a write at offset %" PRIu64
			   " returned flags %#x, not data at a host offset",
			   off, m->flags);
	if (!m->region_len) {
		m->region_off = off;
		m->region_len = m->len;
	}
	if (m->region_off > off || m->region_len > UINT64_MAX - m->region_off ||
	    m->region_off + m->region_len < end ||
	    m->file_off < off - m->region_off ||
	    m->file_off - (off - m->region_off) > UINT64_MAX - m->region_len)
		return bug(drv, "map",
			   "for a write at offset %" PRIu64 " length %" PRIu64
			   " returned region %" PRIu64 "+%" PRIu64
			   " at host offset %#" PRIx64,
			   off, m->len, m->region_off, m->region_len,
			   m->file_off);
	if ((m->flags & IMG_EXT_ENCRYPTED) &&
	    (!m->cipher || (m->region_off | m->region_len |
			    (m->file_off - (off - m->region_off))) %
				   IMG_CRYPT_SECTOR))
		return bug(drv, "map",
			   "for a write at offset %" PRIu64
			   " returned an encrypted region of partial sectors",
			   off);
	if (m->plan && (!drv->commit || m->write != IMG_MAP_WRITE))
		return bug(drv, "map",
			   "for a write at offset %" PRIu64
			   " returned a plan it may not make",
			   off);
	/* Plans, transforms and wider regions need the image lock to keep
	 * other writes out while they run. */
	if ((m->write == IMG_MAP_WRITE_IN_PLACE || drv->thread_safe) &&
	    (m->plan || (m->flags & IMG_EXT_ENCRYPTED) ||
	     m->region_off != off || m->region_len != m->len))
		return bug(drv, "map",
			   "for a write at offset %" PRIu64
			   " returned more than a write in place",
			   off);
	if (!m->lock_len) {
		m->lock_off = m->region_off;
		m->lock_len = m->region_len;
	}
	if (m->lock_off > m->region_off ||
	    m->lock_len > UINT64_MAX - m->lock_off ||
	    m->lock_off + m->lock_len < m->region_off + m->region_len)
		return bug(drv, "map",
			   "for a write at offset %" PRIu64 " locked %" PRIu64
			   "+%" PRIu64 ", less than its region",
			   off, m->lock_off, m->lock_len);
	if (!m->io)
		m->io = img_file(img);
	return 0;
}

int backend_map(struct img *img, uint64_t off, uint64_t len, struct img_map *m)
{
	int ret;

	if (!img->drv->map)
		return missing(img->drv, "map");
	ret = status(img->drv, "map", img->drv->map(img, off, len, m));
	if (ret < 0)
		return ret;
	if (m->write == IMG_MAP_NO_WRITE)
		return check_map(img, off, len, m);
	ret = check_extent(img->drv, "map", off, len, m->len, m->flags);
	if (ret >= 0)
		ret = check_write_map(img, off, m);
	if (ret < 0 && m->plan) {
		if (img->drv->commit)
			img->drv->commit(img, m->plan, ret);
		m->plan = NULL;
	}
	return ret;
}

int backend_commit(struct img *img, struct img_plan *plan, int result)
{
	return status(img->drv, "commit", img->drv->commit(img, plan, result));
}

const struct img_opt_desc *backend_create_opts(const struct img_driver *drv)
{
	return drv->create ? drv->create->opts : NULL;
}

int backend_create(const struct img_driver *drv, const char *path,
		   struct img_io *file, const struct img_create_opts *opts)
{
	if (!drv->create || !drv->create->create)
		return missing(drv, "image creation");
	return status(drv, "create", drv->create->create(path, file, opts));
}

int backend_measure(const struct img_driver *drv,
		    const struct img_create_opts *opts, struct img *src,
		    struct img_measure *out)
{
	int ret;

	if (!drv->create || !drv->create->measure)
		return missing(drv, "measure");
	ret = status(drv, "measure", drv->create->measure(opts, src, out));
	if (ret < 0)
		return ret;
	if (out->required > out->fully_allocated)
		return bug(drv, "measure",
			   "returned %" PRIu64
			   " bytes required, more than %" PRIu64
			   " fully allocated",
			   out->required, out->fully_allocated);
	return 0;
}

int backend_info(struct img *img, struct img_info *info)
{
	const struct img_driver *drv = img->drv;
	const char *format = info->format;
	uint64_t size = info->virtual_size;
	int ret;

	if (!drv->info)
		return 0;
	ret = status(drv, "info", drv->info(img, info));
	if (ret < 0)
		return ret;
	if (info->format != format || info->virtual_size != size)
		return bug(drv, "info", "changed the format or virtual size");
	if (info->cluster_size && !img_is_pow2(info->cluster_size))
		return bug(drv, "info",
			   "returned cluster size %" PRIu64
			   ", not a power of two",
			   info->cluster_size);
	if (info->n_fields > IMG_INFO_MAX_FIELDS)
		return bug(drv, "info", "returned %zu fields, more than %d",
			   info->n_fields, IMG_INFO_MAX_FIELDS);
	for (size_t i = 0; i < info->n_fields; i++) {
		const struct img_field *f = &info->fields[i];

		if (!f->key || (f->type == IMG_VAL_STR && !f->str))
			return bug(drv, "info", "field %zu has no %s", i,
				   f->key ? "value" : "name");
	}
	return 0;
}

int backend_check(struct img *img, unsigned flags, struct img_check *res)
{
	const struct img_driver *drv = img->drv;
	int ret;

	if (!drv->check)
		return img_error(
			-ENOTSUP,
			"%s: this image format does not support checks",
			drv->name);
	ret = status(drv, "check", drv->check(img, flags, res));
	if (ret < 0 || !res->has_stats)
		return ret;
	if (res->allocated_clusters > res->total_clusters ||
	    res->fragmented_clusters > res->allocated_clusters ||
	    res->compressed_clusters > res->allocated_clusters)
		return bug(drv, "check",
			   "returned %" PRIu64 " allocated (%" PRIu64
			   " fragmented, %" PRIu64 " compressed) of %" PRIu64
			   " clusters",
			   res->allocated_clusters, res->fragmented_clusters,
			   res->compressed_clusters, res->total_clusters);
	return 0;
}

int backend_resize(struct img *img, uint64_t size, unsigned flags,
		   enum img_prealloc prealloc)
{
	if (!img->drv->amend || !img->drv->amend->resize)
		return missing(img->drv, "resizing");
	return status(img->drv, "resize",
		      img->drv->amend->resize(img, size, flags, prealloc));
}

/* ---- internal snapshots ---- */

static const struct img_snapshot_ops *snap_ops(struct img *img)
{
	static const struct img_snapshot_ops none;

	return img->drv->snapshot ? img->drv->snapshot : &none;
}

int backend_snapshot_list(struct img *img, struct img_snapshot_info **out,
			  size_t *n)
{
	const struct img_driver *drv = img->drv;
	struct img_snapshot_info *list = NULL;
	size_t count = 0;
	int ret;

	if (!snap_ops(img)->list)
		return missing(drv, "internal snapshots");
	ret = status(drv, "snapshot list",
		     snap_ops(img)->list(img, &list, &count));
	if (ret < 0)
		return ret;
	if (count && !list)
		return bug(drv, "snapshot list",
			   "returned %zu snapshots and no list", count);
	for (size_t i = 0; i < count; i++)
		if (!list[i].id || !list[i].name) {
			const char *what = list[i].id ? "a name" : "an id";

			img_snapshot_list_free(list, count);
			return bug(drv, "snapshot list",
				   "returned snapshot %zu without %s", i, what);
		}
	*out = list;
	*n = count;
	return 0;
}

int backend_snapshot_create(struct img *img, const char *name)
{
	if (!snap_ops(img)->create)
		return missing(img->drv, "internal snapshots");
	return status(img->drv, "snapshot create",
		      snap_ops(img)->create(img, name));
}

int backend_snapshot_apply(struct img *img, const char *name_or_id)
{
	if (!snap_ops(img)->apply)
		return missing(img->drv, "internal snapshots");
	return status(img->drv, "snapshot apply",
		      snap_ops(img)->apply(img, name_or_id));
}

int backend_snapshot_delete(struct img *img, const char *name_or_id)
{
	if (!snap_ops(img)->delete)
		return missing(img->drv, "internal snapshots");
	return status(img->drv, "snapshot delete",
		      snap_ops(img)->delete (img, name_or_id));
}

int backend_snapshot_load(struct img *img, const char *name_or_id)
{
	if (!snap_ops(img)->load)
		return missing(img->drv, "internal snapshots");
	return status(img->drv, "snapshot load",
		      snap_ops(img)->load(img, name_or_id));
}

/* ---- header changes ---- */

const struct img_opt_desc *backend_amend_opts(const struct img_driver *drv)
{
	return drv->amend ? drv->amend->opts : NULL;
}

int backend_amend(struct img *img, const struct img_kv *opts, size_t n,
		  const struct img_progress *progress)
{
	if (!img->drv->amend || !img->drv->amend->amend)
		return img_error(
			-ENOTSUP,
			"Format driver '%s' does not support option amendment",
			img->drv->name);
	return status(img->drv, "amend",
		      img->drv->amend->amend(img, opts, n, progress));
}

int backend_set_backing(struct img *img, const char *name, const char *fmt)
{
	if (!img->drv->amend || !img->drv->amend->set_backing)
		return missing(img->drv, "backing files");
	return status(img->drv, "set_backing",
		      img->drv->amend->set_backing(img, name, fmt));
}

int backend_make_empty(struct img *img)
{
	if (!img->drv->amend || !img->drv->amend->make_empty)
		return 0;
	return status(img->drv, "make_empty", img->drv->amend->make_empty(img));
}

/* ---- compressed clusters, encryption ---- */

/* qemu-img's words, which scripts match. */
static int no_compression(void)
{
	return img_error(-ENOTSUP,
			 "Compression not supported for this file format");
}

int backend_compress_params(struct img *img, enum img_compress_type *type,
			    uint64_t *cluster_size)
{
	const struct img_driver *drv = img->drv;
	int ret;

	if (!drv->compress || !drv->compress->params)
		return no_compression();
	ret = status_max(drv, "compress_params",
			 drv->compress->params(img, type, cluster_size), 1);
	if (ret < 0)
		return ret;
	if (*type != IMG_COMPRESS_DEFLATE_RAW &&
	    *type != IMG_COMPRESS_DEFLATE_ZLIB && *type != IMG_COMPRESS_ZSTD)
		return bug(drv, "compress_params", "returned unknown codec %d",
			   (int)*type);
	if (*cluster_size < 512 || !img_is_pow2(*cluster_size))
		return bug(drv, "compress_params",
			   "returned cluster size %" PRIu64, *cluster_size);
	return ret;
}

int backend_write_compressed(struct img *img, const struct img_compressed *v,
			     size_t n)
{
	if (!img->drv->compress || !img->drv->compress->write)
		return no_compression();
	return status(img->drv, "write_compressed",
		      img->drv->compress->write(img, v, n));
}

int backend_crypt_info(struct img *img, struct img_crypt_info *out)
{
	const struct img_driver *drv = img->drv;
	int ret;

	if (!drv->crypt || !drv->crypt->info)
		return -ENOTSUP;
	ret = status(drv, "crypt_info", drv->crypt->info(img, out));
	if (ret < 0)
		return ret;
	if (!out->format || out->n_slots > IMG_CRYPT_MAX_SLOTS)
		return bug(drv, "crypt_info",
			   "returned %u key slots (at most %d) or no format",
			   out->n_slots, IMG_CRYPT_MAX_SLOTS);
	return 0;
}

/* ---- persistent dirty bitmaps ---- */

static const struct img_bitmap_ops *bm_ops(struct img *img)
{
	static const struct img_bitmap_ops none;

	return img->drv->bitmap ? img->drv->bitmap : &none;
}

int backend_bitmap_list(struct img *img, struct img_bitmap_info **out,
			size_t *n)
{
	const struct img_driver *drv = img->drv;
	struct img_bitmap_info *list = NULL;
	size_t count = 0;
	int ret;

	if (!bm_ops(img)->list)
		return missing(img->drv, "persistent bitmaps");
	ret = status(drv, "bitmap list", bm_ops(img)->list(img, &list, &count));
	if (ret < 0)
		return ret;
	if (count && !list)
		return bug(drv, "bitmap list",
			   "returned %zu bitmaps and no list", count);
	for (size_t i = 0; i < count; i++)
		if (!list[i].name || !img_is_pow2(list[i].granularity)) {
			img_bitmap_list_free(list, count);
			return bug(drv, "bitmap list",
				   "returned bitmap %zu without a name or a "
				   "power-of-two granularity",
				   i);
		}
	*out = list;
	*n = count;
	return 0;
}

int backend_bitmap_add(struct img *img, const char *name, uint64_t granularity,
		       bool disabled)
{
	if (!bm_ops(img)->add)
		return missing(img->drv, "persistent bitmaps");
	return status(img->drv, "bitmap add",
		      bm_ops(img)->add(img, name, granularity, disabled));
}

int backend_bitmap_remove(struct img *img, const char *name)
{
	if (!bm_ops(img)->remove)
		return missing(img->drv, "persistent bitmaps");
	return status(img->drv, "bitmap remove",
		      bm_ops(img)->remove(img, name));
}

int backend_bitmap_clear(struct img *img, const char *name)
{
	if (!bm_ops(img)->clear)
		return missing(img->drv, "persistent bitmaps");
	return status(img->drv, "bitmap clear", bm_ops(img)->clear(img, name));
}

int backend_bitmap_enable(struct img *img, const char *name, bool enable)
{
	if (!bm_ops(img)->enable)
		return missing(img->drv, "persistent bitmaps");
	return status(img->drv, "bitmap enable",
		      bm_ops(img)->enable(img, name, enable));
}

int backend_bitmap_set_dirty(struct img *img, const char *name, uint64_t off,
			     uint64_t len)
{
	if (!bm_ops(img)->set_dirty)
		return missing(img->drv, "persistent bitmaps");
	return status(img->drv, "bitmap set_dirty",
		      bm_ops(img)->set_dirty(img, name, off, len));
}

int backend_bitmap_dirty(struct img *img, const char *name, uint64_t off,
			 uint64_t len, bool *dirty, uint64_t *run_len)
{
	const struct img_driver *drv = img->drv;
	int ret;

	if (!bm_ops(img)->dirty)
		return missing(img->drv, "persistent bitmaps");
	*run_len = 0;
	ret = status(drv, "bitmap dirty",
		     bm_ops(img)->dirty(img, name, off, len, dirty, run_len));
	if (ret < 0)
		return ret;
	if (!*run_len || *run_len > len)
		return bug(drv, "bitmap dirty",
			   "at offset %" PRIu64 " returned a run of %" PRIu64
			   " bytes for a request of %" PRIu64,
			   off, *run_len, len);
	return 0;
}

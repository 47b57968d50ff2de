/* SPDX-License-Identifier: MIT */
/*
 * Format-neutral compression of one cluster (or grain): raw deflate as
 * qcow2 stores it, zlib-wrapped deflate (VMDK streamOptimized grains) and
 * zstd frames. Deflate streams are made with libdeflate (3-4x faster than
 * zlib at the same output size); its matches may reach 32 KiB back where
 * QEMU's zlib writer uses a 4 KiB window, which every reader accepts: QEMU
 * inflates a whole cluster in one call (windowBits -12 only limits the
 * history kept across calls). Decompression tries libdeflate and falls back
 * to zlib, the reference, whenever libdeflate does not return exactly the
 * expected bytes (zlib also accepts a stream that goes on past the buffer,
 * as QEMU does). Compression must fit a caller-given
 * output size (qcow2 stores a cluster uncompressed when it does not shrink);
 * decompression fills exactly the caller's buffer, stops there, ignores
 * whatever follows the stream (qcow2 rounds compressed data up to 512-byte
 * sectors, so the next cluster's bytes may follow) and never writes past the
 * buffer. The zlib and zstd contexts are kept per thread and reused, so the
 * convert pipeline's threads do not allocate per cluster. Also the core's
 * entry points for drivers that store compressed clusters (checks, then the
 * driver op under the image lock).
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <libdeflate.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "internal.h"

struct codec_ctx {
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	struct libdeflate_compressor *def; /* at level def_level */
	int def_level;
	struct libdeflate_decompressor *ld;
	z_stream inf; /* inflate state, valid when inf_init */
	bool inf_init;
};

static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static int ctx_key_ret;

static void ctx_free(void *p)
{
	struct codec_ctx *c = p;

	ZSTD_freeCCtx(c->zc);
	ZSTD_freeDCtx(c->zd);
	libdeflate_free_compressor(c->def);
	libdeflate_free_decompressor(c->ld);
	if (c->inf_init)
		inflateEnd(&c->inf);
	free(c);
}

static void ctx_key_init(void)
{
	ctx_key_ret = pthread_key_create(&ctx_key, ctx_free);
}

/* The calling thread's contexts (freed when the thread exits). */
static struct codec_ctx *ctx_get(void)
{
	struct codec_ctx *c;

	pthread_once(&ctx_once, ctx_key_init);
	if (ctx_key_ret)
		return NULL;
	c = pthread_getspecific(ctx_key);
	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (pthread_setspecific(ctx_key, c)) {
		free(c);
		return NULL;
	}
	return c;
}

/*
 * libdeflate level when the caller asks for the default: its output is within
 * about 1% of zlib level 6 with QEMU's 4 KiB window (the bench sample's text
 * clusters), at 3.3x the speed.
 */
#define DEFLATE_DEFAULT_LEVEL 4

static int deflate_one(struct codec_ctx *c, enum img_compress_type type,
		       int level, const void *src, size_t len, void *dst,
		       size_t dst_size)
{
	size_t r;

	if (level == 0)
		level = DEFLATE_DEFAULT_LEVEL;
	if (level < 1 || level > 12)
		return img_error(-EINVAL,
				 "compress: invalid deflate level %d (1 to 12)",
				 level);
	if (c->def && c->def_level != level) {
		libdeflate_free_compressor(c->def);
		c->def = NULL;
	}
	if (!c->def) {
		c->def = libdeflate_alloc_compressor(level);
		if (!c->def)
			return img_error(-ENOMEM, "compress: out of memory");
		c->def_level = level;
	}
	if (type == IMG_COMPRESS_DEFLATE_RAW)
		r = libdeflate_deflate_compress(c->def, src, len, dst,
						dst_size);
	else
		r = libdeflate_zlib_compress(c->def, src, len, dst, dst_size);
	return r ? (int)r : -ENOSPC;
}

static int zstd_one(struct codec_ctx *c, int level, const void *src, size_t len,
		    void *dst, size_t dst_size)
{
	size_t r;

	if (level == 0)
		level = ZSTD_CLEVEL_DEFAULT;
	if (level < 1 || level > ZSTD_maxCLevel())
		return img_error(-EINVAL,
				 "compress: invalid zstd level %d (1 to %d)",
				 level, ZSTD_maxCLevel());
	if (!c->zc) {
		c->zc = ZSTD_createCCtx();
		if (!c->zc)
			return img_error(-ENOMEM, "compress: out of memory");
	}
	r = ZSTD_CCtx_reset(c->zc, ZSTD_reset_session_and_parameters);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(c->zc, ZSTD_c_compressionLevel,
					   level);
	if (ZSTD_isError(r))
		return img_error(-EIO, "compress: zstd: %s",
				 ZSTD_getErrorName(r));
	r = ZSTD_compress2(c->zc, dst, dst_size, src, len);
	if (ZSTD_isError(r)) {
		if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall)
			return -ENOSPC;
		return img_error(-EIO, "compress: zstd: %s",
				 ZSTD_getErrorName(r));
	}
	return (int)r;
}

int img_compress(enum img_compress_type type, int level, const void *src,
		 size_t len, void *dst, size_t dst_size)
{
	struct codec_ctx *c;

	if (!len || len > INT_MAX || !dst_size)
		return img_error(-EINVAL, "compress: bad length %zu", len);
	c = ctx_get();
	if (!c)
		return img_error(-ENOMEM, "compress: out of memory");
	switch (type) {
	case IMG_COMPRESS_DEFLATE_RAW:
	case IMG_COMPRESS_DEFLATE_ZLIB:
		return deflate_one(c, type, level, src, len, dst, dst_size);
	case IMG_COMPRESS_ZSTD:
		return zstd_one(c, level, src, len, dst,
				img_min(dst_size, INT_MAX));
	}
	return img_error(-EINVAL, "compress: unknown type %d", (int)type);
}

/* The fast path: true when libdeflate gave exactly dst_len bytes. */
static bool inflate_fast(struct codec_ctx *c, enum img_compress_type type,
			 const void *src, size_t src_len, void *dst,
			 size_t dst_len)
{
	size_t in_used, out_len;
	enum libdeflate_result r;

	if (!c->ld) {
		c->ld = libdeflate_alloc_decompressor();
		if (!c->ld)
			return false;
	}
	if (type == IMG_COMPRESS_DEFLATE_RAW)
		r = libdeflate_deflate_decompress_ex(
			c->ld, src, src_len, dst, dst_len, &in_used, &out_len);
	else
		r = libdeflate_zlib_decompress_ex(c->ld, src, src_len, dst,
						  dst_len, &in_used, &out_len);
	return r == LIBDEFLATE_SUCCESS && out_len == dst_len;
}

static int inflate_one(struct codec_ctx *c, enum img_compress_type type,
		       const void *src, size_t src_len, void *dst,
		       size_t dst_len)
{
	/* Any window up to 32 KiB: QEMU writes 4 KiB windows, but streams
	 * from other writers with larger ones read too. */
	int wbits = type == IMG_COMPRESS_DEFLATE_RAW ? -15 : 15, ret;

	if (inflate_fast(c, type, src, src_len, dst, dst_len))
		return 0;
	if (c->inf_init && inflateReset2(&c->inf, wbits) != Z_OK) {
		inflateEnd(&c->inf);
		c->inf_init = false;
	}
	if (!c->inf_init) {
		memset(&c->inf, 0, sizeof(c->inf));
		if (inflateInit2(&c->inf, wbits) != Z_OK)
			return img_error(-ENOMEM,
					 "compress: inflateInit2 failed");
		c->inf_init = true;
	}
	c->inf.next_in = (Bytef *)src;
	c->inf.avail_in = (uInt)src_len;
	c->inf.next_out = dst;
	c->inf.avail_out = (uInt)dst_len;
	ret = inflate(&c->inf, Z_FINISH);
	/* The input is known only to sector precision: a full output with
	 * input left over (Z_BUF_ERROR) is a success. */
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) &&
	    c->inf.avail_out == 0)
		return 0;
	return img_error(-IMG_ECORRUPT,
			 "compress: invalid deflate data (%d, %u of %zu bytes "
			 "missing)",
			 ret, c->inf.avail_out, dst_len);
}

static int unzstd_one(struct codec_ctx *c, const void *src, size_t src_len,
		      void *dst, size_t dst_len)
{
	ZSTD_inBuffer in = { src, src_len, 0 };
	ZSTD_outBuffer out = { dst, dst_len, 0 };

	if (!c->zd) {
		c->zd = ZSTD_createDCtx();
		if (!c->zd)
			return img_error(-ENOMEM, "compress: out of memory");
		/* A cluster is at most 2 MiB: refuse frames that ask for
		 * larger windows (bounded memory on untrusted input). */
		ZSTD_DCtx_setParameter(c->zd, ZSTD_d_windowLogMax, 23);
	}
	ZSTD_DCtx_reset(c->zd, ZSTD_reset_session_only);
	while (out.pos < out.size) {
		size_t in_pos = in.pos, out_pos = out.pos;
		size_t r = ZSTD_decompressStream(c->zd, &out, &in);

		if (ZSTD_isError(r))
			return img_error(-IMG_ECORRUPT,
					 "compress: invalid zstd data: %s",
					 ZSTD_getErrorName(r));
		if (in.pos == in_pos && out.pos == out_pos)
			return img_error(-IMG_ECORRUPT,
					 "compress: zstd data ends after %zu "
					 "of %zu bytes",
					 out.pos, dst_len);
	}
	return 0;
}

int img_decompress(enum img_compress_type type, const void *src, size_t src_len,
		   void *dst, size_t dst_len)
{
	struct codec_ctx *c;

	if (!dst_len || dst_len > IMG_MAX_DECOMPRESS_OUT)
		return img_error(-EINVAL, "compress: bad length %zu", dst_len);
	if (src_len > 2 * IMG_MAX_DECOMPRESS_OUT)
		return img_error(-EINVAL,
				 "compress: %zu compressed bytes for one "
				 "cluster is more than %u",
				 src_len, 2 * IMG_MAX_DECOMPRESS_OUT);
	c = ctx_get();
	if (!c)
		return img_error(-ENOMEM, "compress: out of memory");
	switch (type) {
	case IMG_COMPRESS_DEFLATE_RAW:
	case IMG_COMPRESS_DEFLATE_ZLIB:
		return inflate_one(c, type, src, src_len, dst, dst_len);
	case IMG_COMPRESS_ZSTD:
		return unzstd_one(c, src, src_len, dst, dst_len);
	}
	return img_error(-EINVAL, "compress: unknown type %d", (int)type);
}

int img_compress_params(struct img *img, enum img_compress_type *type,
			uint64_t *cluster_size)
{
	int ret;

	if (!img->drv->compress || !img->drv->compress->write)
		return img_error(-ENOTSUP,
				 "Compression not supported for this file "
				 "format");
	if (!img->drv->thread_safe)
		pthread_mutex_lock(&img->lock);
	ret = backend_compress_params(img, type, cluster_size);
	if (!img->drv->thread_safe)
		pthread_mutex_unlock(&img->lock);
	return ret;
}

int img_write_compressed(struct img *img, const struct img_compressed *v,
			 size_t n)
{
	int ret;

	if (!img->drv->compress)
		return img_error(-ENOTSUP,
				 "Compression not supported for this file "
				 "format");
	for (size_t i = 0; i < n; i++)
		if (v[i].off >= img->size || !v[i].len)
			return img_error(
				-EINVAL,
				"compressed write at offset %" PRIu64
				" is past the end of the image (size %" PRIu64
				")",
				v[i].off, img->size);
	if (img_read_only(img))
		return img_error(-EROFS,
				 "%s: cannot write '%s': opened read-only",
				 img->drv->name, img_filename(img));
	if (!n)
		return 0;
	if (!img->drv->thread_safe)
		img_lock_whole(img);
	ret = backend_write_compressed(img, v, n);
	if (!img->drv->thread_safe)
		pthread_mutex_unlock(&img->lock);
	return ret;
}

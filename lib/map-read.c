/* SPDX-License-Identifier: MIT */
/*
 * The transforms the core applies when it reads an extent a driver's .map
 * returned as compressed or encrypted (lib/request.c runs the loop and the
 * plain data): a compressed extent is one cluster's stream, decompressed
 * whole into a small per-image cache so that sequential reads of one
 * cluster decompress it once; an encrypted extent is ciphertext read and
 * decrypted in whole 512-byte sectors, through a bounce buffer when the
 * guest range does not start and end on sector boundaries. Every value of
 * struct img_map comes from untrusted image bytes and is checked here
 * before it sizes a buffer or a read; errors name the guest offset.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The last cluster decompressed for one image, and its input buffer. */
struct img_zcache {
	pthread_mutex_t lock;
	bool valid;
	struct img_io *io;
	uint64_t file_off, clen, cluster_size;
	enum img_compress_type codec;
	uint8_t *data; /* cluster_size bytes when valid */
	size_t data_cap;
	uint8_t *src;
	size_t src_cap;
};

static struct img_zcache *zcache_get(struct img *img)
{
	struct img_zcache *z = __atomic_load_n(&img->zcache, __ATOMIC_ACQUIRE);
	struct img_zcache *expected = NULL;

	if (z)
		return z;
	z = calloc(1, sizeof(*z));
	if (!z)
		return NULL;
	pthread_mutex_init(&z->lock, NULL);
	/* Readers of a thread-safe driver may race to create it. */
	if (!__atomic_compare_exchange_n(&img->zcache, &expected, z, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		pthread_mutex_destroy(&z->lock);
		free(z);
		return expected;
	}
	return z;
}

void img_zcache_forget(struct img *img)
{
	struct img_zcache *z = __atomic_load_n(&img->zcache, __ATOMIC_ACQUIRE);

	if (!z)
		return;
	pthread_mutex_lock(&z->lock);
	z->valid = false;
	pthread_mutex_unlock(&z->lock);
}

void img_zcache_free(struct img *img)
{
	struct img_zcache *z = img->zcache;

	if (!z)
		return;
	pthread_mutex_destroy(&z->lock);
	free(z->data);
	free(z->src);
	free(z);
	img->zcache = NULL;
}

static int grow(uint8_t **buf, size_t *cap, uint64_t len)
{
	uint8_t *p;

	if (*cap >= len)
		return 0;
	p = realloc(*buf, (size_t)len);
	if (!p)
		return img_error(-ENOMEM,
				 "out of memory for a %" PRIu64
				 "-byte compressed cluster",
				 len);
	*buf = p;
	*cap = (size_t)len;
	return 0;
}

/* Decompress m's cluster into z->data unless it is there already. */
static int zcache_fill(struct img *img, struct img_zcache *z,
		       const struct img_map *m, struct img_io *io, uint64_t off)
{
	int ret;

	if (z->valid && z->io == io && z->file_off == m->file_off &&
	    z->clen == m->clen && z->cluster_size == m->cluster_size &&
	    z->codec == m->codec)
		return 0;
	z->valid = false;
	/* The stream counts whole sectors: its last sector may run past the
	 * end of the file (it was the last thing written), but every byte
	 * before that sector must be there. */
	ret = img_data_check(img, io, 1,
			     m->file_off + (m->clen > 512 ? m->clen - 512 : 0),
			     off);
	if (ret < 0)
		return ret;
	ret = grow(&z->src, &z->src_cap, m->clen);
	if (ret >= 0)
		ret = grow(&z->data, &z->data_cap, m->cluster_size);
	if (ret >= 0)
		ret = img_io_pread(io, z->src, m->clen, m->file_off);
	if (ret < 0)
		return ret;
	ret = img_decompress(m->codec, z->src, (size_t)m->clen, z->data,
			     (size_t)m->cluster_size);
	if (ret < 0)
		return img_error(
			ret,
			"%s: compressed cluster of guest offset 0x%" PRIx64
			" at host offset 0x%" PRIx64 " does not %s: %s",
			img->drv->name, off, m->file_off,
			m->codec == IMG_COMPRESS_ZSTD ? "decompress" :
							"inflate",
			img_last_error());
	z->io = io;
	z->file_off = m->file_off;
	z->clen = m->clen;
	z->cluster_size = m->cluster_size;
	z->codec = m->codec;
	z->valid = true;
	return 0;
}

int img_read_compressed(struct img *img, const struct img_map *m, void *buf,
			uint64_t off)
{
	struct img_io *io = m->io ? m->io : img_file(img);
	struct img_zcache *z;
	int ret;

	if (!m->cluster_size || m->cluster_size > IMG_MAX_DECOMPRESS_OUT ||
	    m->in_cluster > m->cluster_size ||
	    m->len > m->cluster_size - m->in_cluster || !m->clen ||
	    m->clen > 2ull * IMG_MAX_DECOMPRESS_OUT)
		return img_error(-IMG_ECORRUPT,
				 "%s: guest offset 0x%" PRIx64
				 " maps to a compressed cluster of %" PRIu64
				 " bytes (%" PRIu64
				 " compressed, reading %" PRIu64 " at %" PRIu64
				 ") out of bounds",
				 img->drv->name, off, m->cluster_size, m->clen,
				 m->len, m->in_cluster);
	z = zcache_get(img);
	if (!z)
		return img_error(-ENOMEM, "out of memory");
	pthread_mutex_lock(&z->lock);
	ret = zcache_fill(img, z, m, io, off);
	if (ret >= 0)
		memcpy(buf, z->data + m->in_cluster, (size_t)m->len);
	pthread_mutex_unlock(&z->lock);
	return ret;
}

int img_read_encrypted(struct img *img, const struct img_map *m, void *buf,
		       uint64_t off)
{
	struct img_io *io = m->io ? m->io : img_file(img);
	uint64_t head = off % IMG_CRYPT_SECTOR;
	uint64_t a_off = off - head, a_file, a_len;
	uint8_t *p = buf;
	int ret;

	if (!m->cipher)
		return img_error(-EIO,
				 "%s: guest offset 0x%" PRIx64
				 " is encrypted but the map gave no cipher",
				 img->drv->name, off);
	if (m->file_off % IMG_CRYPT_SECTOR != head)
		return img_error(-IMG_ECORRUPT,
				 "%s: guest offset 0x%" PRIx64
				 " maps to host offset 0x%" PRIx64
				 " in another place of its sector",
				 img->drv->name, off, m->file_off);
	a_file = m->file_off - head;
	a_len = img_align_up(head + m->len, IMG_CRYPT_SECTOR);
	/* Whole sectors: decrypt in place; else through a bounce buffer. */
	if (a_len != m->len) {
		p = malloc((size_t)a_len);
		if (!p)
			return img_error(-ENOMEM, "out of memory");
	}
	ret = img_data_read(img, io, p, a_len, a_file, a_off);
	if (ret >= 0)
		ret = img_cipher_run(m->cipher, false, p, p, a_len, a_file,
				     a_off);
	if (ret >= 0 && p != buf)
		memcpy(buf, p + head, (size_t)m->len);
	if (p != buf)
		free(p);
	return ret < 0 ? ret : 0;
}

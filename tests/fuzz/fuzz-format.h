/* SPDX-License-Identifier: MIT */
/*
 * The body the image fuzz targets share (VHD, VHDX, VDI, VMDK, qcow2): the
 * input bytes become a mem backend opened as the given format without a
 * backing chain. Read-only, the target reads the image (at most 64 MiB of
 * it), maps it and runs check; then it opens a copy read-write, writes,
 * zeroes (and for qcow2 discards), flushes, and checks what it can promise.
 * Every byte is untrusted, so nothing is asserted about what is refused;
 * what a driver accepts must keep these invariants, and a broken one aborts
 * (so libFuzzer and the `make check` replay both fail):
 *  - map: block status over [0, min(size, cap)) is a run of contiguous
 *    extents, each 1..rest bytes, that ends exactly at the cap unless block
 *    status fails; an extent said to read as zeroes does read as zeroes;
 *  - check agrees with open: when check says the image has no corruption
 *    and no check error, no read within the cap fails with -IMG_ECORRUPT or
 *    -EIO. Data that check cannot see is exempt: qcow2 compressed clusters
 *    (check counts them but never decompresses, as qemu-img does) and
 *    stream-optimized VMDK grains (likewise); formats with no check
 *    (-ENOTSUP) promise nothing here;
 *  - writes: after writes, zeroes and a flush that all succeed, the written
 *    ranges read back as written, on the open image and on the flushed
 *    bytes opened again (read-only: what a crash right after the flush
 *    would leave), which must open and have the same size. Promised unless
 *    check found the image corrupt before the writes: that is what check
 *    warns of ("further writes to the image may corrupt it"), and an image
 *    whose tables point two grains at one place cannot keep both;
 *  - writes keep a clean image clean: if check found no corruption before,
 *    it finds none after our successful writes.
 * Everything a driver allocates from header fields must be capped by the
 * input's size.
 */
#ifndef FUZZ_FORMAT_H
#define FUZZ_FORMAT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"

#define FUZZ_READ_CAP (64ull << 20)
#define FUZZ_CHUNK (1ull << 20)
/* Enough calls to map the cap in 512-byte extents. */
#define FUZZ_MAX_EXTENTS (FUZZ_READ_CAP / 512 + 1)
/* Bytes of zero extents read back (reads are slow under ASan). */
#define FUZZ_ZERO_READ_CAP (8ull << 20)

/* fuzz_format() options. */
#define FUZZ_DISCARD (1u << 0) /* also discard (contents then undefined) */
/* Only a data block's start must be in the file: its tail may lie past the
 * end and read as zeroes (VHDX, as QEMU). */
#define FUZZ_SHORT_TAIL (1u << 1)

static inline int fuzz_open_bytes(const uint8_t *data, size_t size,
				  const char *fmt, unsigned flags,
				  struct img **out, struct img_io **io)
{
	struct img_open_opts o = {
		.format = fmt,
		.flags = flags | IMG_OPEN_NO_BACKING,
	};
	struct img_io *mem;

	if (img_io_mem_new(data, size, &mem) < 0)
		return -1;
	if (io)
		*io = mem;
	return img_open_io(mem, "fuzz.img", &o, out);
}

static inline void fuzz_fail(const char *what, uint64_t a, uint64_t b)
{
	fprintf(stderr, "fuzz invariant broken: %s (%#llx, %#llx)\n", what,
		(unsigned long long)a, (unsigned long long)b);
	abort();
}

static inline bool fuzz_all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/*
 * Data the image says is at a host offset past the end of its file is lost:
 * reading it must fail (-EIO, lib's img_data_check) instead of returning
 * zeroes (the truncated images of the corpus, e.g.
 * vhd/qemu-dynamic-trunc.vhd, exercise it). With FUZZ_SHORT_TAIL only an
 * extent that starts past the end is lost.
 */
static inline void fuzz_past_eof(struct img *img, const struct img_extent *ext,
				 uint64_t file_size, unsigned opts)
{
	uint64_t lost;
	uint8_t b;

	if ((ext->flags &
	     (IMG_EXT_DATA | IMG_EXT_OFFSET_VALID | IMG_EXT_COMPRESSED)) !=
		    (IMG_EXT_DATA | IMG_EXT_OFFSET_VALID) ||
	    (ext->file && strcmp(ext->file, "fuzz.img")) ||
	    ext->file_off + ext->len <= file_size ||
	    ((opts & FUZZ_SHORT_TAIL) && ext->file_off < file_size))
		return;
	lost = ext->off +
	       (ext->file_off < file_size ? file_size - ext->file_off : 0);
	if (img_read(img, &b, lost, 1) == 0)
		fuzz_fail("data past the end of the file reads", lost,
			  ext->file_off);
}

/*
 * The map invariant over [0, min(size, cap)) with block status flags bs;
 * returns whether the map ran to the end. Zero extents are read back (up to
 * FUZZ_ZERO_READ_CAP bytes): a read error there is allowed, data is not.
 */
static inline bool fuzz_map(struct img *img, unsigned bs, uint64_t cap,
			    uint64_t file_size, unsigned opts, uint8_t *buf)
{
	uint64_t end = img_min(img_size(img), cap), off = 0, zread = 0;
	unsigned long n = 0;

	while (off < end) {
		struct img_extent ext;

		if (n++ > FUZZ_MAX_EXTENTS)
			fuzz_fail("map: more extents than sectors", off, end);
		memset(&ext, 0, sizeof(ext));
		if (img_block_status(img, off, end - off, bs, &ext) < 0)
			return false;
		if (ext.off != off)
			fuzz_fail("map: extent does not start where asked",
				  ext.off, off);
		if (ext.len == 0 || ext.len > end - off)
			fuzz_fail("map: extent length not in 1..rest", ext.len,
				  end - off);
		for (uint64_t p = off; (ext.flags & IMG_EXT_ZERO) &&
				       p < off + ext.len &&
				       zread < FUZZ_ZERO_READ_CAP;) {
			uint64_t len = img_min(FUZZ_CHUNK, off + ext.len - p);

			zread += len;
			if (img_read(img, buf, p, len) == 0 &&
			    !fuzz_all_zero(buf, len))
				fuzz_fail("map: a zero extent reads as data", p,
					  len);
			p += len;
		}
		fuzz_past_eof(img, &ext, file_size, opts);
		off += ext.len;
	}
	return true;
}

/* The first read error of the read errors check should have seen. */
static inline int fuzz_read_all(struct img *img, uint8_t *buf, uint64_t *where)
{
	uint64_t end = img_min(img_size(img), FUZZ_READ_CAP);

	for (uint64_t pos = 0; pos < end; pos += FUZZ_CHUNK) {
		int ret =
			img_read(img, buf, pos, img_min(FUZZ_CHUNK, end - pos));

		if (ret == -IMG_ECORRUPT || ret == -EIO) {
			*where = pos;
			return ret;
		}
	}
	return 0;
}

static inline int fuzz_check(struct img *img, struct img_check *res)
{
	memset(res, 0, sizeof(*res));
	return img_check(img, 0, res);
}

/* Whether check calls the image clean. */
static inline bool fuzz_check_clean(struct img *img, struct img_check *res)
{
	return fuzz_check(img, res) == 0 && res->corruptions == 0 &&
	       res->check_errors == 0;
}

/* Data whose integrity check does not look at (see the comment on top). */
static inline bool fuzz_check_blind(struct img *img,
				    const struct img_check *res)
{
	return res->compressed_clusters || strcmp(img_format(img), "vmdk") == 0;
}

/*
 * What the writes should have left: up to FUZZ_RANGES windows of the guest
 * disk, each with its expected bytes and a mask of the bytes known (a
 * discard makes them unknown).
 */
#define FUZZ_RANGES 3
struct fuzz_model {
	uint64_t off[FUZZ_RANGES], len[FUZZ_RANGES];
	uint8_t *want[FUZZ_RANGES], *known[FUZZ_RANGES];
};

/* Apply [off, off + len) := pattern (known) or unknown to every window. */
static inline void fuzz_model_set(struct fuzz_model *m, uint64_t off,
				  uint64_t len, int pattern)
{
	for (unsigned i = 0; i < FUZZ_RANGES; i++) {
		uint64_t a = off > m->off[i] ? off : m->off[i];
		uint64_t b = img_min(off + len, m->off[i] + m->len[i]);

		if (a >= b)
			continue;
		memset(m->want[i] + (a - m->off[i]), pattern < 0 ? 0 : pattern,
		       b - a);
		memset(m->known[i] + (a - m->off[i]), pattern >= 0, b - a);
	}
}

/* Every known byte of every window reads back as expected. */
static inline void fuzz_model_verify(const struct fuzz_model *m,
				     struct img *img, uint8_t *buf,
				     const char *when)
{
	for (unsigned i = 0; i < FUZZ_RANGES; i++) {
		if (!m->len[i])
			continue;
		if (img_read(img, buf, m->off[i], m->len[i]) < 0)
			fuzz_fail(when, m->off[i], m->len[i]);
		for (uint64_t j = 0; j < m->len[i]; j++)
			if (m->known[i][j] && buf[j] != m->want[i][j])
				fuzz_fail(when, m->off[i] + j, buf[j]);
	}
}

/* The written bytes as a crash right after the flush leaves them. */
static inline void fuzz_reopen_verify(const struct fuzz_model *m,
				      struct img_io *io, const char *fmt,
				      uint64_t vsize, uint8_t *buf)
{
	const uint8_t *data;
	struct img *img;
	size_t len;

	/* The new mem backend takes a copy: io stays untouched. */
	img_io_mem_data(io, &data, &len);
	if (fuzz_open_bytes(data, len, fmt, IMG_OPEN_RDONLY, &img, NULL) < 0)
		fuzz_fail("the flushed image does not open again", len, 0);
	if (img_size(img) != vsize)
		fuzz_fail("the flushed image has another size", img_size(img),
			  vsize);
	fuzz_model_verify(m, img, buf,
			  "written data does not read back after reopening");
	img_close(img);
}

static inline void fuzz_write_and_verify(struct img *img, struct img_io *io,
					 const char *fmt, unsigned opts,
					 bool was_clean, bool trusted,
					 uint8_t *buf)
{
	uint64_t vsize = img_size(img), cs = img_granularity(img);
	struct fuzz_model m;
	struct img_check res;
	uint64_t len, mid;
	bool ok = true;
	uint8_t *pat;

	if (!vsize)
		return;
	if (cs == 0 || cs > FUZZ_CHUNK / 4)
		cs = 65536;
	len = img_min(vsize, cs + 1000);
	mid = vsize / 2;
	memset(&m, 0, sizeof(m));
	m.off[0] = 0;
	m.len[0] = len;
	m.off[1] = mid;
	m.len[1] = img_min(len, vsize - mid);
	m.off[2] = vsize - 1;
	m.len[2] = 1;
	pat = malloc(len);
	for (unsigned i = 0; i < FUZZ_RANGES; i++) {
		m.want[i] = calloc(1, m.len[i]);
		m.known[i] = calloc(1, m.len[i]);
		ok = ok && m.want[i] && m.known[i];
	}
	if (!ok || !pat)
		goto out;

	memset(pat, 0xa5, len);
	ok = img_write(img, pat, m.off[0], m.len[0], 0) >= 0;
	fuzz_model_set(&m, m.off[0], m.len[0], 0xa5);
	memset(pat, 0x5a, len);
	ok = ok && img_write(img, pat, m.off[1], m.len[1], 0) >= 0;
	fuzz_model_set(&m, m.off[1], m.len[1], 0x5a);
	memset(pat, 0x3c, 1);
	ok = ok && img_write(img, pat, m.off[2], 1, 0) >= 0;
	fuzz_model_set(&m, m.off[2], 1, 0x3c);
	ok = ok &&
	     img_zero(img, 0, img_min(vsize, 3000), IMG_ZERO_MAY_UNMAP) >= 0;
	fuzz_model_set(&m, 0, img_min(vsize, 3000), 0);
	if (opts & FUZZ_DISCARD) {
		uint64_t dlen = img_min(vsize - mid, 2 * cs);

		ok = ok && img_discard(img, mid, dlen) >= 0;
		fuzz_model_set(&m, mid, dlen, -1);
	}
	ok = ok && img_flush(img) >= 0;
	if (ok && trusted) {
		fuzz_model_verify(&m, img, buf,
				  "written data does not read back");
		fuzz_reopen_verify(&m, io, fmt, vsize, buf);
	}
	if (!fuzz_check_clean(img, &res) && was_clean && ok)
		fuzz_fail("check finds corruption after successful writes",
			  res.corruptions, res.check_errors);
out:
	for (unsigned i = 0; i < FUZZ_RANGES; i++) {
		free(m.want[i]);
		free(m.known[i]);
	}
	free(pat);
}

static inline int fuzz_format_opts(const uint8_t *data, size_t size,
				   const char *fmt, unsigned opts)
{
	uint8_t *buf = malloc(FUZZ_CHUNK);
	bool was_clean = false, trusted = false;
	struct img_check res;
	struct img_io *io;
	struct img *img;

	if (!buf)
		return 0;
	if (fuzz_open_bytes(data, size, fmt, IMG_OPEN_RDONLY, &img, NULL) >=
	    0) {
		uint64_t where = 0;
		int err, ret;

		fuzz_map(img, 0, FUZZ_READ_CAP, size, opts, buf);
		ret = fuzz_check(img, &res);

		was_clean = ret == 0 && !res.corruptions && !res.check_errors;
		trusted = was_clean || ret == -ENOTSUP;
		err = fuzz_read_all(img, buf, &where);
		if (was_clean && err && !fuzz_check_blind(img, &res))
			fuzz_fail("check calls the image clean, a read fails",
				  where, (uint64_t)-err);
		img_close(img);
	}
	if (fuzz_open_bytes(data, size, fmt, 0, &img, &io) >= 0) {
		fuzz_write_and_verify(img, io, fmt, opts, was_clean, trusted,
				      buf);
		img_close(img);
	}
	free(buf);
	return 0;
}

static inline int fuzz_format(const uint8_t *data, size_t size, const char *fmt)
{
	return fuzz_format_opts(data, size, fmt, 0);
}

#endif

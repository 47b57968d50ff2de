/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the qcow2 compressed cluster decoder: byte 0 picks
 * the cluster size (512 B to 2 MiB) and byte 1 the codec (raw deflate, zlib
 * deflate, zstd), bytes 2..9 are an L2 entry (big endian), the rest is the
 * host file. The descriptor is decoded as the driver does; when valid, its
 * byte range is read from the "file" (zeroes past its end) and decompressed
 * into one cluster followed by guard bytes. A crash, a write past the
 * cluster, a range outside what the descriptor allows or unbounded time is a
 * bug. Each input also goes through a round trip: its payload compressed and
 * decompressed must come back unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "../../formats/qcow2/qcow2.h"
#include "fuzz.h"

#define GUARD 256

static void decode_one(const uint8_t *data, size_t size)
{
	unsigned cb = 9 + data[0] % 13;
	enum img_compress_type type = (enum img_compress_type)(data[1] % 3);
	uint64_t cs = 1ull << cb, off, len;
	uint64_t l2e = img_be64(data + 2) | QCOW2_OFLAG_COMPRESSED;
	const uint8_t *file = data + 10;
	size_t file_len = size - 10;
	uint8_t *in, *out;

	if (qcow2_compressed_decode(cb, l2e, &off, &len) < 0)
		return;
	/* The descriptor's range: whole sectors, at most two clusters. */
	if (len == 0 || len > 2 * cs || (off + len) % 512 || off < cs)
		abort();
	in = calloc(1, len);
	out = malloc(cs + GUARD);
	if (!in || !out)
		goto out;
	if (off < file_len)
		memcpy(in, file + off, img_min(len, file_len - off));
	memset(out + cs, 0xa5, GUARD);
	img_decompress(type, in, len, out, cs);
	for (unsigned i = 0; i < GUARD; i++)
		if (out[cs + i] != 0xa5)
			abort();
out:
	free(in);
	free(out);
}

static void round_trip(const uint8_t *data, size_t size)
{
	enum img_compress_type type = (enum img_compress_type)(data[1] % 3);
	size_t n = size - 10, cap = n + n / 2 + 1024;
	uint8_t *c = malloc(cap), *d = malloc(n + 1);
	int clen;

	if (!c || !d || !n)
		goto out;
	clen = img_compress(type, 0, data + 10, n, c, cap);
	if (clen < 0)
		abort(); /* cap is above every codec's worst case */
	if (img_decompress(type, c, (size_t)clen, d, n) < 0 ||
	    memcmp(d, data + 10, n))
		abort();
out:
	free(c);
	free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 10)
		return 0;
	decode_one(data, size);
	round_trip(data, size);
	return 0;
}

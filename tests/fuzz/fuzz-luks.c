/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the LUKS1 header code (lib/crypto-luks.c): the input
 * is a LUKS area (header, then key material at the offsets the header
 * names). The target parses it, reads every description back, and tries to
 * unlock it with the passphrase "fuzz" (the seeds are made with it, so the
 * whole unlock path runs), then decrypts a sector. The KDF cap is lowered so
 * that no input can make an iteration burn more than a few milliseconds.
 */
#include <string.h>

#include "fuzz.h"
#include "img-driver.h"

/* The LUKS area the header may describe (reads past the input fail). */
#define AREA_MAX (64u << 20)

struct input {
	const uint8_t *data;
	size_t size;
};

static int input_read(void *opaque, uint64_t off, void *buf, size_t len)
{
	const struct input *in = opaque;

	if (off > in->size || len > in->size - off)
		return -EIO;
	memcpy(buf, in->data + off, len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct img_secret *secret = NULL;
	struct img_crypt_info ci;
	struct img_luks *l = NULL;
	uint8_t sector[512] = { 0 };

	img_luks_set_max_iter(1u << 14);
	if (img_luks_parse(data, size, AREA_MAX, &l) < 0)
		return 0;
	img_luks_describe(l, &ci);
	if (img_secret_new("fuzz", 4, &secret) == 0 &&
	    img_luks_unlock(l, secret, input_read, &in) == 0) {
		(void)img_luks_crypt(l, false, 7, sector, sizeof(sector));
		(void)img_luks_crypt(l, true, 7, sector, sizeof(sector));
	}
	img_secret_free(secret);
	img_luks_free(l);
	return 0;
}

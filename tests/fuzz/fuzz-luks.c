/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the LUKS1 header code (lib/crypto-luks.c): the input
 * is a LUKS area (header, then key material at the offsets the header
 * names). The target parses it, reads every description back, and tries to
 * unlock it with the passphrase "fuzz" (the seeds are made with it, so the
 * whole unlock path runs), then decrypts a sector. The KDF cap is lowered so
 * that no input can make an iteration burn more than a few milliseconds.
 * Invariants (abort when broken): a header that parses describes itself
 * consistently (cipher, mode, IV generator and hash named; a master key
 * digest with iterations; every slot with 4000 stripes, every active one
 * with iterations; key material of active and inactive slots alike after
 * the header, before the payload, inside the area, never overlapping); an
 * unlocked volume decrypts what it encrypted.
 */
#include <stdlib.h>
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

/* Key bytes the described cipher takes ("aes-256" + "xts": 64). */
static uint64_t key_bytes(const struct img_crypt_info *ci)
{
	const char *bits = strrchr(ci->cipher_alg, '-');
	uint64_t n = bits ? strtoull(bits + 1, NULL, 10) / 8 : 0;

	return strcmp(ci->cipher_mode, "xts") == 0 ? 2 * n : n;
}

static bool named(const char *s)
{
	return s && *s;
}

static void check_described(const struct img_luks *l)
{
	struct img_crypt_info ci;
	uint64_t mat;

	img_luks_describe(l, &ci);
	if (!named(ci.cipher_alg) || !named(ci.cipher_mode) ||
	    !named(ci.ivgen_alg) || !named(ci.hash_alg) || !ci.uuid ||
	    !ci.master_key_iters || ci.n_slots != IMG_LUKS_SLOTS ||
	    ci.payload_offset > AREA_MAX)
		abort();
	mat = key_bytes(&ci) * 4000;
	if (mat == 0)
		abort(); /* a cipher whose key size the name does not say */
	for (unsigned i = 0; i < ci.n_slots; i++) {
		const struct img_crypt_slot *s = &ci.slots[i];

		if (s->stripes != 4000 || (s->active && !s->iters) ||
		    s->key_offset < IMG_LUKS_HEADER_SIZE ||
		    s->key_offset + mat > ci.payload_offset)
			abort();
		for (unsigned j = 0; j < i; j++)
			if (s->key_offset < ci.slots[j].key_offset + mat &&
			    ci.slots[j].key_offset < s->key_offset + mat)
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct img_secret *secret = NULL;
	struct img_luks *l = NULL;
	uint8_t sector[512] = { 0 };

	img_luks_set_max_iter(1u << 14);
	if (img_luks_parse(data, size, AREA_MAX, &l) < 0)
		return 0;
	check_described(l);
	if (img_secret_new("fuzz", 4, &secret) == 0 &&
	    img_luks_unlock(l, secret, input_read, &in) == 0) {
		if (img_luks_crypt(l, false, 7, sector, sizeof(sector)) < 0 ||
		    img_luks_crypt(l, true, 7, sector, sizeof(sector)) < 0)
			abort(); /* unlocked: the sector cipher must work */
		for (size_t i = 0; i < sizeof(sector); i++)
			if (sector[i])
				abort(); /* encrypt did not undo decrypt */
	}
	img_secret_free(secret);
	img_luks_free(l);
	return 0;
}

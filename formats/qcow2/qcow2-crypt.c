/* SPDX-License-Identifier: MIT */
/*
 * qcow2 encryption (QEMU docs/interop/qcow2.txt, crypt_method 1 and 2).
 *
 * crypt_method 2 (LUKS): the full disk encryption header extension names
 * the LUKS1 area (offset, cluster aligned and refcounted like metadata, and
 * length in bytes, the LUKS payload offset); lib/crypto-luks.c parses and
 * unlocks it. Guest data clusters are encrypted in 512-byte sectors whose IV
 * number is the host offset / 512, as QEMU does since 4.x for qcow2 LUKS; the
 * LUKS payload offset plays no part. Metadata is not encrypted.
 * crypt_method 1 (legacy AES): AES-128-CBC, plain64 IVs from the guest
 * offset, the key being the passphrase's first 16 bytes zero padded; read
 * only here (writable opens are refused) so that old images can be
 * converted out.
 *
 * The state owns a struct img_cipher (LUKS or the legacy cipher) that .map
 * hands to the core with IMG_EXT_ENCRYPTED extents, for reads and writes:
 * the core decrypts after reading, encrypts whole sectors into a bounce
 * buffer before writing (read-modify-write for a request that is not
 * sector aligned, copy-on-write data re-encrypted for its new host offset).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define SECTOR IMG_CRYPT_SECTOR
/* The largest LUKS area accepted (QEMU's are about 2 MiB). */
#define QCOW2_MAX_LUKS_AREA (64ull << 20)

struct qcow2_crypt {
	/* luks: crypt_method 2; legacy: crypt_method 1, once keyed. */
	struct img_cipher cipher;
	uint64_t area_off, area_len;
};

struct area_io {
	struct qcow2 *s;
	uint64_t off, len;
};

static int area_read(void *opaque, uint64_t off, void *buf, size_t len)
{
	struct area_io *a = opaque;

	if (off > a->len || len > a->len - off)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: LUKS read at %#" PRIx64
				 " is outside the encryption header",
				 off);
	return img_io_pread(a->s->file, buf, len, a->off + off);
}

static int area_write(void *opaque, uint64_t off, const void *buf, size_t len)
{
	struct area_io *a = opaque;

	if (off > a->len || len > a->len - off)
		return img_error(-EINVAL,
				 "qcow2: LUKS write at %#" PRIx64
				 " is outside the encryption header",
				 off);
	return img_io_pwrite(a->s->file, buf, len, a->off + off);
}

static int locked_error(void)
{
	return img_error(-EACCES,
			 "qcow2: the image is encrypted: give its passphrase "
			 "(--object secret,id=ID,file=PATH with "
			 "encrypt.key-secret=ID, --key-file or --key-fd)");
}

static int open_luks(struct qcow2 *s, struct qcow2_crypt *c, unsigned flags)
{
	uint8_t hdr[IMG_LUKS_HEADER_SIZE];
	struct area_io a;
	const struct img_secret *secret;
	int ret;

	if (!s->crypto_ext || s->crypto_ext_len < 16)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: LUKS encryption without a valid full "
				 "disk encryption header extension");
	c->area_off = img_be64(s->crypto_ext);
	c->area_len = img_be64(s->crypto_ext + 8);
	if (!c->area_off || c->area_off & (s->cluster_size - 1) ||
	    c->area_off > QCOW2_L2E_OFFSET_MASK)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: encryption header offset %#" PRIx64
				 " is invalid",
				 c->area_off);
	if (c->area_len < IMG_LUKS_HEADER_SIZE ||
	    c->area_len > QCOW2_MAX_LUKS_AREA)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: encryption header length %#" PRIx64
				 " is invalid",
				 c->area_len);
	a = (struct area_io){ s, c->area_off, c->area_len };
	ret = area_read(&a, 0, hdr, sizeof(hdr));
	if (ret < 0)
		return ret;
	ret = img_luks_parse(hdr, sizeof(hdr), c->area_len, &c->cipher.luks);
	if (ret < 0)
		return ret;
	if (img_untrusted(s->img))
		img_luks_cap_iter(c->cipher.luks, IMG_UNTRUSTED_KDF_MAX_ITER);
	if (flags & IMG_OPEN_NO_IO)
		return 0;
	secret = img_open_secret(s->img);
	if (!secret)
		return locked_error();
	return img_luks_unlock(c->cipher.luks, secret, area_read, &a);
}

static int legacy_write_error(void)
{
	return img_error(-ENOTSUP,
			 "qcow2: writing to legacy AES-encrypted images is not "
			 "supported; open them read-only and convert them to "
			 "LUKS or to an unencrypted image");
}

static int open_aes(struct qcow2 *s, struct qcow2_crypt *c, unsigned flags)
{
	const struct img_secret *secret = img_open_secret(s->img);
	uint8_t key[16] = { 0 };
	const uint8_t *pass;
	size_t len;
	int ret;

	/* Zero and discard change an image without the cipher: refuse any
	 * writable open. */
	if (!(flags & IMG_OPEN_RDONLY))
		return legacy_write_error();
	if (flags & IMG_OPEN_NO_IO)
		return 0;
	if (!secret)
		return locked_error();
	pass = img_secret_data(secret, &len);
	memcpy(key, pass, img_min(len, sizeof(key)));
	ret = img_sector_cipher_new("aes", "cbc-plain64", key, sizeof(key),
				    &c->cipher.legacy);
	explicit_bzero(key, sizeof(key));
	return ret;
}

int qcow2_crypt_open(struct qcow2 *s, unsigned flags)
{
	struct qcow2_crypt *c;
	int ret;

	if (!s->h.crypt_method)
		return 0;
	if (s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
		return img_error(-ENOTSUP,
				 "qcow2: encryption with an external data file "
				 "is not supported");
	c = calloc(1, sizeof(*c));
	if (!c)
		return img_error(-ENOMEM, "qcow2: out of memory");
	ret = s->h.crypt_method == QCOW2_CRYPT_LUKS ? open_luks(s, c, flags) :
						      open_aes(s, c, flags);
	s->crypt = c;
	if (ret < 0)
		qcow2_crypt_close(s);
	return ret;
}

void qcow2_crypt_close(struct qcow2 *s)
{
	struct qcow2_crypt *c = s->crypt;

	if (!c)
		return;
	img_luks_free(c->cipher.luks);
	img_sector_cipher_free(c->cipher.legacy);
	free(c);
	s->crypt = NULL;
}

struct img_cipher *qcow2_crypt_cipher(struct qcow2 *s)
{
	return s->crypt ? &s->crypt->cipher : NULL;
}

int qcow2_crypt_check_opts(const struct img_create_opts *o, bool enc,
			   const char *fmt, enum img_prealloc prealloc)
{
	if (enc && !fmt)
		fmt = "aes";
	if (!strcmp(fmt, "aes"))
		return img_error(
			-ENOTSUP,
			"qcow2: creating legacy AES-encrypted images is "
			"not supported (it is insecure); use "
			"encrypt.format=luks");
	if (strcmp(fmt, "luks"))
		return img_error(-EINVAL,
				 "qcow2: invalid encrypt.format '%s' (luks)",
				 fmt);
	const char *data_file = NULL;

	if (prealloc != IMG_PREALLOC_OFF)
		return img_error(-ENOTSUP,
				 "qcow2: preallocation is not supported with "
				 "encryption");
	if (img_opt_str(o, "data_file", &data_file) > 0)
		return img_error(-ENOTSUP,
				 "qcow2: encryption with an external data file "
				 "is not supported");
	return 0;
}

int qcow2_crypt_create(struct qcow2 *s, const struct img_create_opts *o)
{
	struct img_luks_params p;
	const struct img_secret *secret;
	struct img_luks *l = NULL;
	uint64_t area_len, off, n;
	struct area_io a;
	int ret;

	ret = img_create_secret(o, &secret);
	if (ret < 0)
		return ret;
	if (!secret)
		return img_error(-EINVAL,
				 "qcow2: Parameter 'encrypt.key-secret' is "
				 "required for cipher");
	ret = img_luks_params_from_opts(o, "encrypt.", &p);
	if (ret < 0)
		return ret;
	ret = img_luks_create(&p, secret, &l, &area_len);
	if (ret < 0)
		return ret;
	n = img_align_up(area_len, s->cluster_size) >> s->cluster_bits;
	ret = qcow2_alloc_clusters(s, n, &off);
	if (ret < 0)
		goto out;
	/* The whole area reads back as written: zero what LUKS leaves. */
	ret = img_io_zero(s->file, off, n << s->cluster_bits, 0);
	if (ret < 0)
		goto out;
	a = (struct area_io){ s, off, area_len };
	ret = img_luks_write_area(l, area_write, &a);
	if (ret < 0)
		goto out;
	free(s->crypto_ext);
	s->crypto_ext = malloc(16);
	if (!s->crypto_ext) {
		ret = img_error(-ENOMEM, "qcow2: out of memory");
		goto out;
	}
	img_put_be64(s->crypto_ext, off);
	img_put_be64(s->crypto_ext + 8, area_len);
	s->crypto_ext_len = 16;
	s->h.crypt_method = QCOW2_CRYPT_LUKS;
out:
	img_luks_free(l);
	return ret;
}

bool qcow2_crypt_hides_offsets(const struct qcow2 *s)
{
	return s->crypt != NULL;
}

static int amend_secret(const struct img_create_opts *o, const char *key,
			const struct img_secret **out)
{
	const char *id = NULL;
	int ret = img_opt_str(o, key, &id);

	*out = NULL;
	if (ret <= 0)
		return ret;
	*out = img_secret_lookup(id);
	if (!*out)
		return img_error(-EINVAL, "No secret with id '%s' found", id);
	return 1;
}

int qcow2_crypt_amend(struct qcow2 *s, const struct img_kv *kv, size_t n)
{
	const struct img_create_opts o = { .opts = kv, .n_opts = n };
	const struct img_secret *new_secret, *old_secret;
	struct qcow2_crypt *c = s->crypt;
	const char *state = NULL;
	uint64_t slot = UINT64_MAX, iter_time = 2000;
	struct area_io a;
	int ret;

	if (!c || !c->cipher.luks)
		return img_error(-EINVAL, "Can't amend encryption options - "
					  "encryption not present");
	if ((ret = img_opt_str(&o, "encrypt.state", &state)) < 0 ||
	    (ret = img_opt_u64(&o, "encrypt.keyslot", &slot)) < 0 ||
	    (ret = img_opt_u64(&o, "encrypt.iter-time", &iter_time)) < 0 ||
	    (ret = amend_secret(&o, "encrypt.new-secret", &new_secret)) < 0 ||
	    (ret = amend_secret(&o, "encrypt.old-secret", &old_secret)) < 0)
		return ret;
	if (!state)
		return img_error(-EINVAL,
				 "Parameter 'encrypt.state' is missing "
				 "(active or inactive)");
	if (slot != UINT64_MAX && slot >= IMG_LUKS_SLOTS)
		return img_error(-EINVAL,
				 "Invalid keyslot %" PRIu64 " specified", slot);
	if (!strcmp(state, "active")) {
		if (!new_secret)
			return img_error(-EINVAL, "'new-secret' is required to "
						  "activate a keyslot");
		if (old_secret)
			return img_error(-EINVAL,
					 "'old-secret' must not be given "
					 "when activating keyslots");
		ret = img_luks_add_key(c->cipher.luks,
				       slot == UINT64_MAX ? -1 : (int)slot,
				       new_secret, iter_time);
	} else if (!strcmp(state, "inactive")) {
		if (new_secret)
			return img_error(-EINVAL,
					 "'new-secret' must not be given "
					 "when erasing keyslots");
		if (slot == UINT64_MAX && !old_secret)
			return img_error(-EINVAL,
					 "A keyslot or the old password must "
					 "be given to erase keyslots");
		a = (struct area_io){ s, c->area_off, c->area_len };
		ret = img_luks_erase_key(c->cipher.luks,
					 slot == UINT64_MAX ? -1 : (int)slot,
					 old_secret, area_read, &a);
	} else {
		return img_error(
			-EINVAL,
			"Invalid encrypt.state '%s' (active, inactive)", state);
	}
	if (ret < 0)
		return ret;
	a = (struct area_io){ s, c->area_off, c->area_len };
	ret = img_luks_write_area(c->cipher.luks, area_write, &a);
	if (ret == 0)
		ret = img_io_flush(s->file);
	return ret;
}

int qcow2_crypt_info(struct img *img, struct img_crypt_info *out)
{
	struct qcow2 *s = img_priv(img);

	if (s->h.crypt_method == QCOW2_CRYPT_AES) {
		memset(out, 0, sizeof(*out));
		out->format = "aes";
		return 0;
	}
	if (!s->crypt || !s->crypt->cipher.luks)
		return -ENOTSUP;
	img_luks_describe(s->crypt->cipher.luks, out);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * LUKS1 (the on-disk format of cryptsetup's LUKS1 spec, as QEMU 7.2 writes
 * and reads it) and the sector ciphers it uses, format neutral: qcow2 keeps
 * the LUKS area in clusters its crypto header extension names.
 *
 * Layout (big endian, 592 bytes): magic "LUKS\xba\xbe", version 1, cipher
 * name ("aes"), cipher mode ("xts-plain64", "cbc-essiv:sha256"), hash spec,
 * payload offset and key material offsets in 512-byte sectors, key bytes,
 * the master key digest (PBKDF2 of the master key, 20 bytes) with its salt
 * and iterations, a UUID, and 8 key slots (state, PBKDF2 iterations and
 * salt, key material offset, AF stripes). A slot's key material is the
 * master key AF-split into 4000 stripes and encrypted, sector IVs from 0,
 * with the slot key PBKDF2(passphrase). Layout of new headers as QEMU: key
 * material of slot i at sector 8 + i * round_up(key_bytes * 4000 / 512, 8);
 * the payload offset follows the eighth slot.
 *
 * Untrusted input: every header field is validated before use, and the key
 * derivation cost an image can demand is capped (IMG_LUKS_DEFAULT_MAX_ITER,
 * img_luks_set_max_iter). Key material is held in img_secure_alloc memory
 * and wiped; OpenSSL's cipher contexts keep their own key schedules on its
 * heap, so each keyed sector cipher holds the core guard (img-crypto.h).
 *
 * Bulk sector work (img_sector_cipher_copy over 256 KiB or more) is spread
 * over the online cores: a process-wide pool of one helper thread per extra
 * core takes 64 KiB pieces while the calling thread does its share. Each
 * thread runs its own copy of the keyed contexts (made by the caller before
 * the helpers see the job), so only the IV changes per sector. One job at a
 * time: a caller that finds the pool busy does its work alone.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "img-driver.h"
#include "internal.h"

#define LUKS_MAGIC "LUKS\xba\xbe"
#define LUKS_MAGIC_LEN 6
#define LUKS_VERSION 1
#define LUKS_NAME_LEN 32
#define LUKS_DIGEST_LEN 20
#define LUKS_SALT_LEN 32
#define LUKS_UUID_LEN 40
#define LUKS_STRIPES 4000
#define LUKS_SLOT_ACTIVE 0x00ac71f3u
#define LUKS_SLOT_INACTIVE 0x0000deadu
#define LUKS_MAX_KEY_BYTES 64
/* Where QEMU puts the first key material, in sectors (4 KiB alignment). */
#define LUKS_ALIGN_SECTORS 8
#define LUKS_MIN_ITER 1000

/* Byte offsets of the on-disk header fields. */
enum {
	H_MAGIC = 0,
	H_VERSION = 6,
	H_CIPHER_NAME = 8,
	H_CIPHER_MODE = 40,
	H_HASH_SPEC = 72,
	H_PAYLOAD_OFFSET = 104,
	H_KEY_BYTES = 108,
	H_MK_DIGEST = 112,
	H_MK_DIGEST_SALT = 132,
	H_MK_DIGEST_ITER = 164,
	H_UUID = 168,
	H_SLOTS = 208,
	SLOT_SIZE = 48,
	S_ACTIVE = 0,
	S_ITERATIONS = 4,
	S_SALT = 8,
	S_KEY_OFFSET = 40,
	S_STRIPES = 44,
};

_Static_assert(H_SLOTS + IMG_LUKS_SLOTS * SLOT_SIZE == IMG_LUKS_HEADER_SIZE,
	       "LUKS1 phdr is 592 bytes");

enum luks_mode { MODE_XTS, MODE_CBC, MODE_CTR };
enum luks_ivgen { IV_PLAIN, IV_PLAIN64, IV_ESSIV };

/* Pool threads besides the caller; worker 0 is the calling thread. */
#define CRYPT_MAX_HELPERS 15
#define CRYPT_PIECE (64u << 10)
#define CRYPT_PARALLEL_MIN (256u << 10)

struct img_sector_cipher {
	/* Per worker, keyed once per direction (the key schedules differ);
	 * each sector only sets its IV. Worker 0's are made at creation,
	 * the others copied from them on first use. */
	EVP_CIPHER_CTX *ctx[CRYPT_MAX_HELPERS + 1][2]; /* [w][encrypt] */
	EVP_CIPHER_CTX *essiv[CRYPT_MAX_HELPERS + 1]; /* AES-ECB, hash(key) */
	enum luks_ivgen ivgen;
};

struct luks_slot {
	uint32_t active;
	uint32_t iterations;
	uint8_t salt[LUKS_SALT_LEN];
	uint32_t key_offset; /* sectors */
	uint32_t stripes;
	bool dirty; /* header or material to (re)write */
	uint8_t *material; /* encrypted AF material to write, or NULL */
};

struct img_luks {
	uint64_t iter_cap; /* img_luks_cap_iter; 0: the process-wide cap */
	char cipher_name[LUKS_NAME_LEN + 1];
	char cipher_mode[LUKS_NAME_LEN + 1];
	char hash_spec[LUKS_NAME_LEN + 1];
	uint32_t payload_offset; /* sectors */
	uint32_t key_bytes;
	uint8_t mk_digest[LUKS_DIGEST_LEN];
	uint8_t mk_digest_salt[LUKS_SALT_LEN];
	uint32_t mk_digest_iter;
	char uuid[LUKS_UUID_LEN + 1];
	struct luks_slot slots[IMG_LUKS_SLOTS];

	/* Decoded names. */
	char alg_name[16]; /* "aes-256" */
	char mode_name[8]; /* "xts" */
	const char *ivgen_name; /* "plain64" */
	char ivhash_name[LUKS_NAME_LEN + 1]; /* "" if none */
	const EVP_MD *md;

	uint8_t *master_key; /* img_secure_alloc, key_bytes; NULL if locked */
	struct img_sector_cipher *payload;
	bool header_dirty;
};

static uint64_t max_iter = IMG_LUKS_DEFAULT_MAX_ITER;

void img_luks_set_max_iter(uint64_t n)
{
	max_iter = n ? n : IMG_LUKS_DEFAULT_MAX_ITER;
}

void img_luks_cap_iter(struct img_luks *l, uint64_t cap)
{
	l->iter_cap = cap;
}

/* ---- sector ciphers ---- */

static const EVP_CIPHER *aes_cipher(enum luks_mode mode, size_t key_len)
{
	switch (mode) {
	case MODE_XTS:
		return key_len == 32 ? EVP_aes_128_xts() :
		       key_len == 64 ? EVP_aes_256_xts() :
				       NULL;
	case MODE_CBC:
		return key_len == 16 ? EVP_aes_128_cbc() :
		       key_len == 24 ? EVP_aes_192_cbc() :
		       key_len == 32 ? EVP_aes_256_cbc() :
				       NULL;
	case MODE_CTR:
		return key_len == 16 ? EVP_aes_128_ctr() :
		       key_len == 24 ? EVP_aes_192_ctr() :
		       key_len == 32 ? EVP_aes_256_ctr() :
				       NULL;
	}
	return NULL;
}

/* Split "xts-plain64" / "cbc-essiv:sha256" into its parts. */
static int parse_mode_spec(const char *spec, enum luks_mode *mode,
			   enum luks_ivgen *ivgen, char *ivhash,
			   size_t ivhash_size)
{
	const char *dash = strchr(spec, '-'), *colon;
	size_t mlen, ilen;

	if (!dash)
		return img_error(-IMG_ECORRUPT,
				 "luks: unexpected cipher mode string '%s'",
				 spec);
	mlen = (size_t)(dash - spec);
	if (mlen == 3 && !strncmp(spec, "xts", 3))
		*mode = MODE_XTS;
	else if (mlen == 3 && !strncmp(spec, "cbc", 3))
		*mode = MODE_CBC;
	else if (mlen == 3 && !strncmp(spec, "ctr", 3))
		*mode = MODE_CTR;
	else
		return img_error(-ENOTSUP,
				 "luks: cipher mode '%s' is not supported",
				 spec);
	colon = strchr(dash + 1, ':');
	ilen = colon ? (size_t)(colon - dash - 1) : strlen(dash + 1);
	if (ilen == 5 && !strncmp(dash + 1, "plain", 5))
		*ivgen = IV_PLAIN;
	else if (ilen == 7 && !strncmp(dash + 1, "plain64", 7))
		*ivgen = IV_PLAIN64;
	else if (ilen == 5 && !strncmp(dash + 1, "essiv", 5))
		*ivgen = IV_ESSIV;
	else
		return img_error(-ENOTSUP,
				 "luks: IV generator in '%s' is not supported",
				 spec);
	ivhash[0] = 0;
	if (colon) {
		if (strlen(colon + 1) >= ivhash_size)
			return img_error(-IMG_ECORRUPT,
					 "luks: bad IV hash in '%s'", spec);
		strcpy(ivhash, colon + 1);
	}
	if (*ivgen == IV_ESSIV && !ivhash[0])
		return img_error(-IMG_ECORRUPT,
				 "luks: missing IV generator hash in '%s'",
				 spec);
	return 0;
}

static const EVP_MD *hash_by_name(const char *name)
{
	static const char *const known[] = { "md5",	 "sha1",   "sha224",
					     "sha256",	 "sha384", "sha512",
					     "ripemd160" };

	for (size_t i = 0; i < IMG_ARRAY_SIZE(known); i++)
		if (!strcmp(name, known[i]))
			return EVP_get_digestbyname(name);
	return NULL;
}

static int openssl_error(const char *what)
{
	return img_error(-EIO, "luks: OpenSSL %s failed", what);
}

int img_sector_cipher_new(const char *alg, const char *mode_spec,
			  const uint8_t *key, size_t key_len,
			  struct img_sector_cipher **out)
{
	struct img_sector_cipher *c;
	enum luks_mode mode;
	enum luks_ivgen ivgen;
	char ivhash[LUKS_NAME_LEN + 1];
	const EVP_CIPHER *cipher;
	int ret;

	if (strcmp(alg, "aes"))
		return img_error(-ENOTSUP, "luks: cipher '%s' is not supported",
				 alg);
	ret = parse_mode_spec(mode_spec, &mode, &ivgen, ivhash, sizeof(ivhash));
	if (ret < 0)
		return ret;
	cipher = aes_cipher(mode, key_len);
	if (!cipher)
		return img_error(-ENOTSUP,
				 "luks: %zu-byte keys are not supported with "
				 "aes in mode '%s'",
				 key_len, mode_spec);
	ret = img_core_guard_acquire();
	if (ret < 0)
		return ret;
	c = calloc(1, sizeof(*c));
	if (!c) {
		img_core_guard_release();
		return img_error(-ENOMEM, "luks: out of memory");
	}
	c->ivgen = ivgen;
	for (int enc = 0; enc < 2; enc++) {
		c->ctx[0][enc] = EVP_CIPHER_CTX_new();
		if (!c->ctx[0][enc] ||
		    !EVP_CipherInit_ex(c->ctx[0][enc], cipher, NULL, key, NULL,
				       enc)) {
			ret = openssl_error("cipher setup");
			goto fail;
		}
		EVP_CIPHER_CTX_set_padding(c->ctx[0][enc], 0);
	}
	if (ivgen == IV_ESSIV) {
		const EVP_MD *md = hash_by_name(ivhash);
		uint8_t salt[EVP_MAX_MD_SIZE];
		unsigned salt_len = 0;
		const EVP_CIPHER *ecb;

		if (!md) {
			ret = img_error(
				-ENOTSUP,
				"luks: ESSIV hash '%s' is not supported",
				ivhash);
			goto fail;
		}
		if (!EVP_Digest(key, key_len, salt, &salt_len, md, NULL)) {
			ret = openssl_error("ESSIV hash");
			goto fail;
		}
		/* QEMU: the ESSIV cipher is AES sized to the hash output. */
		ecb = salt_len == 16 ? EVP_aes_128_ecb() :
		      salt_len == 24 ? EVP_aes_192_ecb() :
		      salt_len >= 32 ? EVP_aes_256_ecb() :
				       NULL;
		c->essiv[0] = EVP_CIPHER_CTX_new();
		if (!ecb || !c->essiv[0] ||
		    !EVP_EncryptInit_ex(c->essiv[0], ecb, NULL, salt, NULL)) {
			OPENSSL_cleanse(salt, sizeof(salt));
			ret = ecb ? openssl_error("ESSIV setup") :
				    img_error(-ENOTSUP,
					      "luks: ESSIV hash '%s' is too "
					      "short",
					      ivhash);
			goto fail;
		}
		OPENSSL_cleanse(salt, sizeof(salt));
		EVP_CIPHER_CTX_set_padding(c->essiv[0], 0);
	}
	*out = c;
	return 0;
fail:
	img_sector_cipher_free(c);
	return ret;
}

void img_sector_cipher_free(struct img_sector_cipher *c)
{
	if (!c)
		return;
	for (unsigned w = 0; w <= CRYPT_MAX_HELPERS; w++) {
		EVP_CIPHER_CTX_free(c->ctx[w][0]);
		EVP_CIPHER_CTX_free(c->ctx[w][1]);
		EVP_CIPHER_CTX_free(c->essiv[w]);
	}
	free(c);
	img_core_guard_release();
}

/* Worker w's contexts for direction enc, copied from worker 0's. */
static int worker_ctx(struct img_sector_cipher *c, unsigned w, int enc)
{
	if (c->ctx[w][enc])
		return 0;
	c->ctx[w][enc] = EVP_CIPHER_CTX_new();
	if (!c->ctx[w][enc] ||
	    !EVP_CIPHER_CTX_copy(c->ctx[w][enc], c->ctx[0][enc]))
		return openssl_error("cipher setup");
	if (c->essiv[0] && !c->essiv[w]) {
		c->essiv[w] = EVP_CIPHER_CTX_new();
		if (!c->essiv[w] ||
		    !EVP_CIPHER_CTX_copy(c->essiv[w], c->essiv[0]))
			return openssl_error("ESSIV setup");
	}
	return 0;
}

/* len bytes (whole sectors) from src to dst (may be equal) on worker w's
 * contexts; the first sector has IV number sector. */
static int run_sectors(struct img_sector_cipher *c, unsigned w, bool encrypt,
		       uint64_t sector, const uint8_t *src, uint8_t *dst,
		       size_t len)
{
	EVP_CIPHER_CTX *ctx = c->ctx[w][encrypt ? 1 : 0];
	uint8_t iv[16];
	int n;

	for (size_t done = 0; done < len; done += IMG_CRYPT_SECTOR) {
		memset(iv, 0, 16);
		if (c->ivgen == IV_PLAIN)
			img_put_le32(iv, (uint32_t)sector);
		else
			img_put_le64(iv, sector);
		sector++;
		if (c->ivgen == IV_ESSIV &&
		    (!EVP_EncryptUpdate(c->essiv[w], iv, &n, iv, 16) ||
		     n != 16))
			return openssl_error("ESSIV");
		if (!EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1) ||
		    !EVP_CipherUpdate(ctx, dst + done, &n, src + done,
				      IMG_CRYPT_SECTOR) ||
		    n != IMG_CRYPT_SECTOR)
			return openssl_error(encrypt ? "encryption" :
						       "decryption");
	}
	return 0;
}

struct crypt_job {
	struct img_sector_cipher *c;
	bool encrypt;
	uint64_t sector;
	const uint8_t *src;
	uint8_t *dst;
	size_t len;
	size_t next; /* first byte not handed out */
	size_t done; /* bytes finished */
	int err;
	char errmsg[256];
};

static struct {
	pthread_once_t once;
	pthread_mutex_t owner; /* held by the thread whose job runs */
	pthread_mutex_t lock;
	pthread_cond_t work; /* helpers wait for a job */
	pthread_cond_t done; /* the owner waits for the last piece */
	struct crypt_job *job;
	unsigned n_helpers;
} pool = { .once = PTHREAD_ONCE_INIT,
	   .owner = PTHREAD_MUTEX_INITIALIZER,
	   .lock = PTHREAD_MUTEX_INITIALIZER,
	   .work = PTHREAD_COND_INITIALIZER,
	   .done = PTHREAD_COND_INITIALIZER };

/* Under pool.lock: run the job's next piece on worker w; false if none. */
static bool pool_piece(struct crypt_job *j, unsigned w)
{
	size_t off = j->next, n;
	bool failed = j->err != 0;
	int ret = 0;

	if (off >= j->len)
		return false;
	n = j->len - off < CRYPT_PIECE ? j->len - off : CRYPT_PIECE;
	j->next += n;
	pthread_mutex_unlock(&pool.lock);
	if (!failed)
		ret = run_sectors(j->c, w, j->encrypt,
				  j->sector + off / IMG_CRYPT_SECTOR,
				  j->src + off, j->dst + off, n);
	pthread_mutex_lock(&pool.lock);
	if (ret < 0 && !j->err) {
		j->err = ret;
		snprintf(j->errmsg, sizeof(j->errmsg), "%s", img_last_error());
	}
	j->done += n;
	if (j->done == j->len)
		pthread_cond_signal(&pool.done);
	return true;
}

static void *pool_helper(void *arg)
{
	unsigned w = (unsigned)(uintptr_t)arg;

	pthread_mutex_lock(&pool.lock);
	for (;;) {
		if (!pool.job || !pool_piece(pool.job, w))
			pthread_cond_wait(&pool.work, &pool.lock);
	}
	return NULL;
}

static void pool_start(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN) - 1;

	if (n > CRYPT_MAX_HELPERS)
		n = CRYPT_MAX_HELPERS;
	for (long i = 0; i < n; i++) {
		pthread_attr_t a;
		pthread_t t;
		bool ok;

		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		ok = !pthread_create(&t, &a, pool_helper,
				     (void *)(uintptr_t)(i + 1));
		pthread_attr_destroy(&a);
		if (!ok)
			break;
		pool.n_helpers++;
	}
}

int img_sector_cipher_copy(struct img_sector_cipher *c, bool encrypt,
			   uint64_t sector, const uint8_t *src, uint8_t *dst,
			   size_t len)
{
	struct crypt_job j = {
		.c = c,
		.encrypt = encrypt,
		.sector = sector,
		.src = src,
		.dst = dst,
		.len = len,
	};
	unsigned helpers;
	int ret = 0;

	if (len % IMG_CRYPT_SECTOR)
		return img_error(-EINVAL,
				 "luks: %zu bytes is not a whole number of "
				 "sectors",
				 len);
	if (len < CRYPT_PARALLEL_MIN)
		return run_sectors(c, 0, encrypt, sector, src, dst, len);
	pthread_once(&pool.once, pool_start);
	if (!pool.n_helpers || pthread_mutex_trylock(&pool.owner))
		return run_sectors(c, 0, encrypt, sector, src, dst, len);
	/* Each helper's contexts exist before it can see the job. */
	helpers = (unsigned)((len - 1) / CRYPT_PIECE);
	if (helpers > pool.n_helpers)
		helpers = pool.n_helpers;
	for (unsigned w = 1; w <= helpers && ret == 0; w++)
		ret = worker_ctx(c, w, encrypt);
	if (ret < 0) {
		pthread_mutex_unlock(&pool.owner);
		return ret;
	}
	pthread_mutex_lock(&pool.lock);
	pool.job = &j;
	pthread_cond_broadcast(&pool.work);
	while (pool_piece(&j, 0))
		;
	while (j.done < j.len)
		pthread_cond_wait(&pool.done, &pool.lock);
	pool.job = NULL;
	pthread_mutex_unlock(&pool.lock);
	pthread_mutex_unlock(&pool.owner);
	if (j.err)
		return img_error(j.err, "%s", j.errmsg);
	return 0;
}

int img_sector_cipher_run(struct img_sector_cipher *c, bool encrypt,
			  uint64_t sector, uint8_t *buf, size_t len)
{
	return img_sector_cipher_copy(c, encrypt, sector, buf, buf, len);
}

/* ---- header ---- */

static int copy_name(char *dst, const uint8_t *src, const char *field)
{
	if (!memchr(src, 0, LUKS_NAME_LEN))
		return img_error(-IMG_ECORRUPT,
				 "luks: %s is not NUL-terminated", field);
	memcpy(dst, src, LUKS_NAME_LEN);
	dst[LUKS_NAME_LEN] = 0;
	return 0;
}

static uint64_t slot_material_len(const struct img_luks *l)
{
	return (uint64_t)l->key_bytes * LUKS_STRIPES;
}

/* Check the cipher names and key size; fill the decoded names. */
static int check_cipher(struct img_luks *l)
{
	enum luks_mode mode;
	enum luks_ivgen ivgen;
	unsigned bits;
	int ret;

	if (strcmp(l->cipher_name, "aes"))
		return img_error(-ENOTSUP, "luks: cipher '%s' is not supported",
				 l->cipher_name);
	ret = parse_mode_spec(l->cipher_mode, &mode, &ivgen, l->ivhash_name,
			      sizeof(l->ivhash_name));
	if (ret < 0)
		return ret;
	if (ivgen == IV_ESSIV && !hash_by_name(l->ivhash_name))
		return img_error(-ENOTSUP,
				 "luks: ESSIV hash '%s' is not supported",
				 l->ivhash_name);
	if (!aes_cipher(mode, l->key_bytes))
		return img_error(mode == MODE_XTS && l->key_bytes == 48 ?
					 -ENOTSUP :
					 -IMG_ECORRUPT,
				 "luks: key size %" PRIu32
				 " bytes is not valid for aes in mode '%s'",
				 l->key_bytes, l->cipher_mode);
	l->md = hash_by_name(l->hash_spec);
	if (!l->md)
		return img_error(-ENOTSUP, "luks: hash '%s' is not supported",
				 l->hash_spec);
	bits = l->key_bytes * 8 / (mode == MODE_XTS ? 2 : 1);
	snprintf(l->alg_name, sizeof(l->alg_name), "aes-%u", bits);
	snprintf(l->mode_name, sizeof(l->mode_name), "%s",
		 mode == MODE_XTS ? "xts" :
		 mode == MODE_CBC ? "cbc" :
				    "ctr");
	l->ivgen_name = ivgen == IV_PLAIN   ? "plain" :
			ivgen == IV_PLAIN64 ? "plain64" :
					      "essiv";
	return 0;
}

static int check_slots(const struct img_luks *l, uint64_t area_len)
{
	uint64_t mat = slot_material_len(l);
	uint64_t payload = (uint64_t)l->payload_offset * IMG_CRYPT_SECTOR;

	if (payload > area_len)
		return img_error(-IMG_ECORRUPT,
				 "luks: payload offset %#" PRIx64
				 " is past the end of the LUKS area (%#" PRIx64
				 " bytes)",
				 payload, area_len);
	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++) {
		const struct luks_slot *s = &l->slots[i];
		uint64_t start = (uint64_t)s->key_offset * IMG_CRYPT_SECTOR;

		if (s->active != LUKS_SLOT_ACTIVE &&
		    s->active != LUKS_SLOT_INACTIVE)
			return img_error(-IMG_ECORRUPT,
					 "luks: key slot %u has invalid state "
					 "%#" PRIx32,
					 i, s->active);
		if (s->stripes != LUKS_STRIPES)
			return img_error(-IMG_ECORRUPT,
					 "luks: key slot %u has %" PRIu32
					 " stripes, not %u",
					 i, s->stripes, LUKS_STRIPES);
		if (s->active == LUKS_SLOT_ACTIVE && !s->iterations)
			return img_error(-IMG_ECORRUPT,
					 "luks: key slot %u has 0 iterations",
					 i);
		if (start < IMG_LUKS_HEADER_SIZE)
			return img_error(
				-IMG_ECORRUPT,
				"luks: key slot %u material at %#" PRIx64
				" overlaps the header",
				i, start);
		if (start + mat > payload)
			return img_error(
				-IMG_ECORRUPT,
				"luks: key slot %u material at %#" PRIx64
				" runs past the payload offset %#" PRIx64,
				i, start, payload);
		for (unsigned j = 0; j < i; j++) {
			uint64_t other = (uint64_t)l->slots[j].key_offset *
					 IMG_CRYPT_SECTOR;

			if (start < other + mat && other < start + mat)
				return img_error(-IMG_ECORRUPT,
						 "luks: key slots %u and %u "
						 "overlap",
						 j, i);
		}
	}
	return 0;
}

int img_luks_parse(const uint8_t *hdr, size_t len, uint64_t area_len,
		   struct img_luks **out)
{
	struct img_luks *l;
	int ret;

	if (len < IMG_LUKS_HEADER_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "luks: header is %zu bytes, not %d", len,
				 IMG_LUKS_HEADER_SIZE);
	if (memcmp(hdr + H_MAGIC, LUKS_MAGIC, LUKS_MAGIC_LEN))
		return img_error(-IMG_ECORRUPT,
				 "luks: volume is not in LUKS format");
	if (img_be16(hdr + H_VERSION) != LUKS_VERSION)
		return img_error(-ENOTSUP,
				 "luks: LUKS version %u is not supported",
				 img_be16(hdr + H_VERSION));
	l = calloc(1, sizeof(*l));
	if (!l)
		return img_error(-ENOMEM, "luks: out of memory");
	if ((ret = copy_name(l->cipher_name, hdr + H_CIPHER_NAME,
			     "cipher name")) < 0 ||
	    (ret = copy_name(l->cipher_mode, hdr + H_CIPHER_MODE,
			     "cipher mode")) < 0 ||
	    (ret = copy_name(l->hash_spec, hdr + H_HASH_SPEC, "hash spec")) < 0)
		goto fail;
	l->payload_offset = img_be32(hdr + H_PAYLOAD_OFFSET);
	l->key_bytes = img_be32(hdr + H_KEY_BYTES);
	memcpy(l->mk_digest, hdr + H_MK_DIGEST, LUKS_DIGEST_LEN);
	memcpy(l->mk_digest_salt, hdr + H_MK_DIGEST_SALT, LUKS_SALT_LEN);
	l->mk_digest_iter = img_be32(hdr + H_MK_DIGEST_ITER);
	memcpy(l->uuid, hdr + H_UUID, LUKS_UUID_LEN);
	l->uuid[LUKS_UUID_LEN] = 0;
	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++) {
		const uint8_t *p = hdr + H_SLOTS + i * SLOT_SIZE;
		struct luks_slot *s = &l->slots[i];

		s->active = img_be32(p + S_ACTIVE);
		s->iterations = img_be32(p + S_ITERATIONS);
		memcpy(s->salt, p + S_SALT, LUKS_SALT_LEN);
		s->key_offset = img_be32(p + S_KEY_OFFSET);
		s->stripes = img_be32(p + S_STRIPES);
	}
	if (l->key_bytes == 0 || l->key_bytes > LUKS_MAX_KEY_BYTES) {
		ret = img_error(-IMG_ECORRUPT,
				"luks: invalid key size %" PRIu32 " bytes",
				l->key_bytes);
		goto fail;
	}
	if (!l->mk_digest_iter) {
		ret = img_error(-IMG_ECORRUPT,
				"luks: master key digest has 0 iterations");
		goto fail;
	}
	ret = check_cipher(l);
	if (ret < 0)
		goto fail;
	ret = check_slots(l, area_len);
	if (ret < 0)
		goto fail;
	*out = l;
	return 0;
fail:
	free(l);
	return ret;
}

static void slot_release(struct img_luks *l, struct luks_slot *s)
{
	if (s->material)
		img_secure_free(s->material, slot_material_len(l));
	s->material = NULL;
}

void img_luks_free(struct img_luks *l)
{
	if (!l)
		return;
	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++)
		slot_release(l, &l->slots[i]);
	img_sector_cipher_free(l->payload);
	img_secure_free(l->master_key, l->key_bytes);
	OPENSSL_cleanse(l, sizeof(*l));
	free(l);
}

/* ---- anti-forensic split (LUKS1 spec: AF-split with the header hash) ---- */

/* Replace buf with H(0 || block 0) H(1 || block 1) ..., the last digest
 * truncated to the length of the last block. */
static int af_diffuse(const EVP_MD *md, uint8_t *buf, size_t len)
{
	size_t ds = (size_t)EVP_MD_get_size(md);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t digest[EVP_MAX_MD_SIZE], idx[4];
	int ret = 0;

	if (!ctx)
		return img_error(-ENOMEM, "luks: out of memory");
	for (size_t i = 0, off = 0; off < len; i++, off += ds) {
		size_t n = img_min(ds, len - off);

		img_put_be32(idx, (uint32_t)i);
		if (!EVP_DigestInit_ex(ctx, md, NULL) ||
		    !EVP_DigestUpdate(ctx, idx, 4) ||
		    !EVP_DigestUpdate(ctx, buf + off, n) ||
		    !EVP_DigestFinal_ex(ctx, digest, NULL)) {
			ret = openssl_error("hash");
			break;
		}
		memcpy(buf + off, digest, n);
	}
	OPENSSL_cleanse(digest, sizeof(digest));
	EVP_MD_CTX_free(ctx);
	return ret;
}

static void xor_into(uint8_t *dst, const uint8_t *src, size_t len)
{
	for (size_t i = 0; i < len; i++)
		dst[i] ^= src[i];
}

/* Merge stripes * key_len bytes of material into key. */
static int af_merge(const EVP_MD *md, const uint8_t *material, size_t key_len,
		    unsigned stripes, uint8_t *key)
{
	int ret;

	memset(key, 0, key_len);
	for (unsigned i = 0; i + 1 < stripes; i++) {
		xor_into(key, material + (size_t)i * key_len, key_len);
		ret = af_diffuse(md, key, key_len);
		if (ret < 0)
			return ret;
	}
	xor_into(key, material + (size_t)(stripes - 1) * key_len, key_len);
	return 0;
}

/* Split key into stripes random-looking stripes (material). */
static int af_split(const EVP_MD *md, const uint8_t *key, size_t key_len,
		    unsigned stripes, uint8_t *material, uint8_t *tmp)
{
	size_t last = (size_t)(stripes - 1) * key_len;
	int ret;

	if (RAND_bytes(material, (int)last) != 1)
		return openssl_error("RAND_bytes");
	memset(tmp, 0, key_len);
	for (unsigned i = 0; i + 1 < stripes; i++) {
		xor_into(tmp, material + (size_t)i * key_len, key_len);
		ret = af_diffuse(md, tmp, key_len);
		if (ret < 0)
			return ret;
	}
	for (size_t i = 0; i < key_len; i++)
		material[last + i] = tmp[i] ^ key[i];
	return 0;
}

/* ---- unlock ---- */

static int pbkdf2(const struct img_luks *l, const uint8_t *pass,
		  size_t pass_len, const uint8_t *salt, uint32_t iter,
		  uint8_t *out, size_t out_len)
{
	if (!PKCS5_PBKDF2_HMAC((const char *)pass, (int)pass_len, salt,
			       LUKS_SALT_LEN, (int)iter, l->md, (int)out_len,
			       out))
		return openssl_error("PBKDF2");
	return 0;
}

static int secret_bytes(const struct img_secret *secret, const uint8_t **pass,
			size_t *len)
{
	if (!secret)
		return img_error(-EACCES, "luks: a passphrase is needed");
	*pass = img_secret_data(secret, len);
	/* QEMU takes secrets as NUL-terminated UTF-8 strings. */
	if (memchr(*pass, 0, *len))
		return img_error(-EINVAL, "luks: the passphrase contains a NUL "
					  "byte");
	return 0;
}

/* Does the passphrase open slot i? 1 and the master key in mk if so. */
static int try_slot(struct img_luks *l, unsigned i, const uint8_t *pass,
		    size_t pass_len, img_luks_read_fn rd, void *opaque,
		    uint8_t *mk)
{
	const struct luks_slot *s = &l->slots[i];
	size_t mat_len = slot_material_len(l);
	uint8_t *slot_key = NULL, *material = NULL;
	uint8_t digest[LUKS_DIGEST_LEN];
	struct img_sector_cipher *c = NULL;
	int ret;

	slot_key = img_secure_alloc(l->key_bytes);
	material = img_secure_alloc(mat_len);
	if (!slot_key || !material) {
		ret = -ENOMEM;
		goto out;
	}
	ret = pbkdf2(l, pass, pass_len, s->salt, s->iterations, slot_key,
		     l->key_bytes);
	if (ret < 0)
		goto out;
	ret = rd(opaque, (uint64_t)s->key_offset * IMG_CRYPT_SECTOR, material,
		 mat_len);
	if (ret < 0)
		goto out;
	ret = img_sector_cipher_new(l->cipher_name, l->cipher_mode, slot_key,
				    l->key_bytes, &c);
	if (ret < 0)
		goto out;
	ret = img_sector_cipher_run(c, false, 0, material, mat_len);
	if (ret < 0)
		goto out;
	ret = af_merge(l->md, material, l->key_bytes, s->stripes, mk);
	if (ret < 0)
		goto out;
	ret = pbkdf2(l, mk, l->key_bytes, l->mk_digest_salt, l->mk_digest_iter,
		     digest, sizeof(digest));
	if (ret < 0)
		goto out;
	ret = CRYPTO_memcmp(digest, l->mk_digest, LUKS_DIGEST_LEN) == 0;
out:
	img_sector_cipher_free(c);
	img_secure_free(slot_key, l->key_bytes);
	img_secure_free(material, mat_len);
	OPENSSL_cleanse(digest, sizeof(digest));
	return ret;
}

static int set_master_key(struct img_luks *l, uint8_t *mk)
{
	int ret;

	ret = img_sector_cipher_new(l->cipher_name, l->cipher_mode, mk,
				    l->key_bytes, &l->payload);
	if (ret < 0) {
		img_secure_free(mk, l->key_bytes);
		return ret;
	}
	l->master_key = mk;
	return 0;
}

/* Find a slot the passphrase opens, within the KDF cost cap. */
static int find_slot(struct img_luks *l, const uint8_t *pass, size_t pass_len,
		     img_luks_read_fn rd, void *opaque, uint8_t *mk, int *found)
{
	uint64_t spent = 0, cap = max_iter;
	/* Only the process-wide cap is the user's to raise. */
	const char *hint = " (raise it with --kdf-max-iter)";
	int ret;

	if (l->iter_cap && l->iter_cap < cap) {
		cap = l->iter_cap;
		hint = " for untrusted images";
	}

	if (l->mk_digest_iter > cap)
		return img_error(-E2BIG,
				 "luks: the master key digest needs %" PRIu32
				 " PBKDF2 iterations, more than the limit of "
				 "%" PRIu64 "%s",
				 l->mk_digest_iter, cap, hint);
	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++) {
		const struct luks_slot *s = &l->slots[i];

		if (s->active != LUKS_SLOT_ACTIVE)
			continue;
		if (s->iterations > cap)
			return img_error(-E2BIG,
					 "luks: key slot %u needs %" PRIu32
					 " PBKDF2 iterations, more than the "
					 "limit of %" PRIu64 "%s",
					 i, s->iterations, cap, hint);
		spent += s->iterations + l->mk_digest_iter;
		if (spent > 4 * cap)
			return img_error(
				-E2BIG,
				"luks: trying key slot %u would exceed "
				"the key derivation limit of %" PRIu64
				" iterations%s",
				i, 4 * cap, hint);
		ret = try_slot(l, i, pass, pass_len, rd, opaque, mk);
		if (ret < 0)
			return ret;
		if (ret == 1) {
			*found = (int)i;
			return 0;
		}
	}
	*found = -1;
	return 0;
}

int img_luks_unlock(struct img_luks *l, const struct img_secret *secret,
		    img_luks_read_fn rd, void *opaque)
{
	const uint8_t *pass;
	size_t pass_len;
	uint8_t *mk;
	int ret, slot;

	ret = secret_bytes(secret, &pass, &pass_len);
	if (ret < 0)
		return ret;
	mk = img_secure_alloc(l->key_bytes);
	if (!mk)
		return -ENOMEM;
	ret = find_slot(l, pass, pass_len, rd, opaque, mk, &slot);
	if (ret == 0 && slot < 0)
		ret = img_error(-EACCES,
				"luks: Invalid password, cannot unlock any "
				"keyslot");
	if (ret < 0) {
		img_secure_free(mk, l->key_bytes);
		return ret;
	}
	return set_master_key(l, mk);
}

int img_luks_crypt(struct img_luks *l, bool encrypt, uint64_t sector,
		   uint8_t *buf, size_t len)
{
	return img_luks_crypt_copy(l, encrypt, sector, buf, buf, len);
}

int img_luks_crypt_copy(struct img_luks *l, bool encrypt, uint64_t sector,
			const uint8_t *src, uint8_t *dst, size_t len)
{
	if (!l->payload)
		return img_error(-EACCES, "luks: the image is locked");
	return img_sector_cipher_copy(l->payload, encrypt, sector, src, dst,
				      len);
}

int img_cipher_run(const struct img_cipher *c, bool encrypt, const void *src,
		   void *dst, uint64_t len, uint64_t host_off,
		   uint64_t guest_off)
{
	if ((host_off | guest_off | len) % IMG_CRYPT_SECTOR)
		return img_error(
			-EINVAL,
			"crypt: encrypted I/O at guest offset %#" PRIx64
			" is not sector aligned",
			guest_off);
	if (c->luks)
		return img_luks_crypt_copy(c->luks, encrypt,
					   host_off / IMG_CRYPT_SECTOR, src,
					   dst, (size_t)len);
	if (!c->legacy)
		return img_error(-EACCES, "crypt: the image is locked");
	if (encrypt)
		return img_error(-ENOTSUP,
				 "crypt: writing with legacy AES encryption "
				 "is not supported");
	return img_sector_cipher_copy(c->legacy, false,
				      guest_off / IMG_CRYPT_SECTOR, src, dst,
				      (size_t)len);
}

/* ---- create ---- */

static const char *opt_or(const struct img_create_opts *o, const char *prefix,
			  const char *name, const char *def, int *err)
{
	char key[64];
	const char *v = def;
	int ret;

	snprintf(key, sizeof(key), "%s%s", prefix, name);
	ret = img_opt_str(o, key, &v);
	if (ret < 0)
		*err = ret;
	return v;
}

int img_luks_params_from_opts(const struct img_create_opts *o,
			      const char *prefix, struct img_luks_params *p)
{
	char key[64];
	int err = 0, ret;

	p->cipher_alg = opt_or(o, prefix, "cipher-alg", "aes-256", &err);
	p->cipher_mode = opt_or(o, prefix, "cipher-mode", "xts", &err);
	p->ivgen_alg = opt_or(o, prefix, "ivgen-alg", "plain64", &err);
	p->ivgen_hash_alg = opt_or(o, prefix, "ivgen-hash-alg", NULL, &err);
	p->hash_alg = opt_or(o, prefix, "hash-alg", "sha256", &err);
	if (err < 0)
		return err;
	if (!strcmp(p->ivgen_alg, "essiv") && !p->ivgen_hash_alg)
		p->ivgen_hash_alg = "sha256";
	p->iter_time_ms = 2000;
	snprintf(key, sizeof(key), "%siter-time", prefix);
	ret = img_opt_u64(o, key, &p->iter_time_ms);
	if (ret < 0)
		return ret;
	if (!p->iter_time_ms || p->iter_time_ms > 1000000)
		return img_error(-EINVAL,
				 "luks: iter-time %" PRIu64
				 " ms must be between 1 and 1000000",
				 p->iter_time_ms);
	return 0;
}

/* PBKDF2 iterations per second of hash md here (QEMU calibrates too). */
static int pbkdf2_rate(const EVP_MD *md, size_t out_len, uint64_t *rate)
{
	uint8_t salt[LUKS_SALT_LEN] = { 0 }, out[LUKS_MAX_KEY_BYTES];
	static const char pass[] = "calibration";
	uint64_t iter = 1u << 12;

	for (;;) {
		struct timespec a, b;
		uint64_t ns;

		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
		if (!PKCS5_PBKDF2_HMAC(pass, sizeof(pass) - 1, salt,
				       sizeof(salt), (int)iter, md,
				       (int)out_len, out))
			return openssl_error("PBKDF2");
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
		ns = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u +
		     (uint64_t)b.tv_nsec - (uint64_t)a.tv_nsec;
		if (ns >= 20000000u || iter >= (1u << 28)) {
			*rate = iter * 1000000000u / (ns ? ns : 1);
			return 0;
		}
		iter *= 2;
	}
}

static uint32_t iters_for(uint64_t rate, uint64_t ms, unsigned divide)
{
	uint64_t n = rate * ms / 1000 / divide;

	if (n < LUKS_MIN_ITER)
		n = LUKS_MIN_ITER;
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

static void make_uuid(char *out, const uint8_t r[16])
{
	uint8_t b[16];

	memcpy(b, r, 16);
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, LUKS_UUID_LEN,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
		 b[10], b[11], b[12], b[13], b[14], b[15]);
}

static int check_params(const struct img_luks_params *p, struct img_luks *l)
{
	unsigned bits;
	char extra;

	if (sscanf(p->cipher_alg, "aes-%u%c", &bits, &extra) != 1 ||
	    (bits != 128 && bits != 192 && bits != 256))
		return img_error(-ENOTSUP,
				 "luks: cipher algorithm '%s' is not supported "
				 "(aes-128, aes-192, aes-256)",
				 p->cipher_alg);
	if (strcmp(p->cipher_mode, "xts") && strcmp(p->cipher_mode, "cbc") &&
	    strcmp(p->cipher_mode, "ctr"))
		return img_error(-ENOTSUP,
				 "luks: cipher mode '%s' is not supported "
				 "(xts, cbc, ctr)",
				 p->cipher_mode);
	if (strcmp(p->ivgen_alg, "plain") && strcmp(p->ivgen_alg, "plain64") &&
	    strcmp(p->ivgen_alg, "essiv"))
		return img_error(-ENOTSUP,
				 "luks: IV generator '%s' is not supported "
				 "(plain, plain64, essiv)",
				 p->ivgen_alg);
	if (strlen(p->hash_alg) > 16 ||
	    (p->ivgen_hash_alg && strlen(p->ivgen_hash_alg) > 16))
		return img_error(-EINVAL, "luks: hash name is too long");
	strcpy(l->cipher_name, "aes");
	l->key_bytes = bits / 8 * (strcmp(p->cipher_mode, "xts") ? 1 : 2);
	if (p->ivgen_hash_alg)
		snprintf(l->cipher_mode, sizeof(l->cipher_mode), "%s-%s:%s",
			 p->cipher_mode, p->ivgen_alg, p->ivgen_hash_alg);
	else
		snprintf(l->cipher_mode, sizeof(l->cipher_mode), "%s-%s",
			 p->cipher_mode, p->ivgen_alg);
	snprintf(l->hash_spec, sizeof(l->hash_spec), "%s", p->hash_alg);
	return check_cipher(l);
}

int img_luks_create(const struct img_luks_params *p,
		    const struct img_secret *secret, struct img_luks **out,
		    uint64_t *area_len)
{
	struct img_luks *l;
	uint8_t *mk = NULL, rnd[16];
	uint64_t rate, slot_sectors;
	const uint8_t *pass;
	size_t pass_len;
	int ret;

	ret = secret_bytes(secret, &pass, &pass_len);
	if (ret < 0)
		return ret;
	l = calloc(1, sizeof(*l));
	if (!l)
		return img_error(-ENOMEM, "luks: out of memory");
	ret = check_params(p, l);
	if (ret < 0)
		goto fail;
	mk = img_secure_alloc(l->key_bytes);
	if (!mk) {
		ret = -ENOMEM;
		goto fail;
	}
	if (RAND_bytes(mk, (int)l->key_bytes) != 1 ||
	    RAND_bytes(l->mk_digest_salt, LUKS_SALT_LEN) != 1 ||
	    RAND_bytes(rnd, sizeof(rnd)) != 1) {
		img_secure_free(mk, l->key_bytes);
		ret = openssl_error("RAND_bytes");
		goto fail;
	}
	make_uuid(l->uuid, rnd);
	ret = set_master_key(l, mk);
	if (ret < 0)
		goto fail;
	ret = pbkdf2_rate(l->md, LUKS_DIGEST_LEN, &rate);
	if (ret < 0)
		goto fail;
	l->mk_digest_iter = iters_for(rate, p->iter_time_ms, 8);
	ret = pbkdf2(l, l->master_key, l->key_bytes, l->mk_digest_salt,
		     l->mk_digest_iter, l->mk_digest, LUKS_DIGEST_LEN);
	if (ret < 0)
		goto fail;
	slot_sectors = img_align_up(img_align_up(slot_material_len(l),
						 IMG_CRYPT_SECTOR) /
					    IMG_CRYPT_SECTOR,
				    LUKS_ALIGN_SECTORS);
	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++) {
		l->slots[i].active = LUKS_SLOT_INACTIVE;
		l->slots[i].stripes = LUKS_STRIPES;
		l->slots[i].key_offset =
			(uint32_t)(LUKS_ALIGN_SECTORS + i * slot_sectors);
	}
	l->payload_offset =
		(uint32_t)(LUKS_ALIGN_SECTORS + IMG_LUKS_SLOTS * slot_sectors);
	l->header_dirty = true;
	ret = img_luks_add_key(l, 0, secret, p->iter_time_ms);
	if (ret < 0)
		goto fail;
	*area_len = (uint64_t)l->payload_offset * IMG_CRYPT_SECTOR;
	*out = l;
	return 0;
fail:
	img_luks_free(l);
	return ret;
}

int img_luks_add_key(struct img_luks *l, int slot,
		     const struct img_secret *secret, uint64_t iter_time_ms)
{
	size_t mat_len = slot_material_len(l);
	struct img_sector_cipher *c = NULL;
	uint8_t *slot_key = NULL, *material = NULL, *tmp = NULL;
	const uint8_t *pass;
	size_t pass_len;
	struct luks_slot *s;
	uint64_t rate;
	int ret;

	if (!l->master_key)
		return img_error(-EACCES, "luks: the image is locked");
	ret = secret_bytes(secret, &pass, &pass_len);
	if (ret < 0)
		return ret;
	if (slot < 0) {
		for (unsigned i = 0; i < IMG_LUKS_SLOTS && slot < 0; i++)
			if (l->slots[i].active != LUKS_SLOT_ACTIVE)
				slot = (int)i;
		if (slot < 0)
			return img_error(-ENOSPC,
					 "luks: Can't add a keyslot - all "
					 "keyslots are in use");
	}
	if (slot >= IMG_LUKS_SLOTS)
		return img_error(-EINVAL, "luks: Invalid keyslot %d specified",
				 slot);
	s = &l->slots[slot];
	if (s->active == LUKS_SLOT_ACTIVE)
		return img_error(-EEXIST,
				 "luks: Refusing to overwrite active keyslot "
				 "%d - please erase it first",
				 slot);
	slot_key = img_secure_alloc(l->key_bytes);
	material = img_secure_alloc(mat_len);
	tmp = img_secure_alloc(l->key_bytes);
	if (!slot_key || !material || !tmp) {
		ret = -ENOMEM;
		goto out;
	}
	ret = pbkdf2_rate(l->md, l->key_bytes, &rate);
	if (ret < 0)
		goto out;
	if (RAND_bytes(s->salt, LUKS_SALT_LEN) != 1) {
		ret = openssl_error("RAND_bytes");
		goto out;
	}
	s->iterations = iters_for(rate, iter_time_ms, 1);
	ret = pbkdf2(l, pass, pass_len, s->salt, s->iterations, slot_key,
		     l->key_bytes);
	if (ret < 0)
		goto out;
	ret = af_split(l->md, l->master_key, l->key_bytes, LUKS_STRIPES,
		       material, tmp);
	if (ret < 0)
		goto out;
	ret = img_sector_cipher_new(l->cipher_name, l->cipher_mode, slot_key,
				    l->key_bytes, &c);
	if (ret < 0)
		goto out;
	ret = img_sector_cipher_run(c, true, 0, material, mat_len);
	if (ret < 0)
		goto out;
	slot_release(l, s);
	s->material = material;
	material = NULL;
	s->active = LUKS_SLOT_ACTIVE;
	s->dirty = true;
	l->header_dirty = true;
out:
	img_sector_cipher_free(c);
	img_secure_free(slot_key, l->key_bytes);
	img_secure_free(material, mat_len);
	img_secure_free(tmp, l->key_bytes);
	return ret;
}

int img_luks_erase_key(struct img_luks *l, int slot,
		       const struct img_secret *old, img_luks_read_fn rd,
		       void *opaque)
{
	bool erase[IMG_LUKS_SLOTS] = { false };
	unsigned active = 0, n = 0;
	int ret;

	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++)
		active += l->slots[i].active == LUKS_SLOT_ACTIVE;
	if (slot >= IMG_LUKS_SLOTS)
		return img_error(-EINVAL, "luks: Invalid keyslot %d specified",
				 slot);
	if (slot >= 0) {
		if (l->slots[slot].active != LUKS_SLOT_ACTIVE)
			return 0;
		erase[slot] = true;
		n = 1;
	} else {
		const uint8_t *pass;
		size_t pass_len;
		uint8_t *mk;

		ret = secret_bytes(old, &pass, &pass_len);
		if (ret < 0)
			return ret;
		mk = img_secure_alloc(l->key_bytes);
		if (!mk)
			return -ENOMEM;
		for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++) {
			if (l->slots[i].active != LUKS_SLOT_ACTIVE)
				continue;
			if (l->slots[i].iterations > max_iter) {
				ret = img_error(-E2BIG,
						"luks: key slot %u needs too "
						"many PBKDF2 iterations",
						i);
				break;
			}
			ret = try_slot(l, i, pass, pass_len, rd, opaque, mk);
			if (ret < 0)
				break;
			if (ret == 1) {
				erase[i] = true;
				n++;
			}
			ret = 0;
		}
		img_secure_free(mk, l->key_bytes);
		if (ret < 0)
			return ret;
		if (!n)
			return img_error(
				-EINVAL,
				"luks: Didn't erase a keyslot, because "
				"no keyslots match the given old "
				"password");
	}
	if (n >= active)
		return img_error(-EINVAL,
				 "luks: Attempt to erase the only active "
				 "keyslot(s) - this is not allowed");
	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++) {
		struct luks_slot *s = &l->slots[i];

		if (!erase[i])
			continue;
		slot_release(l, s);
		s->active = LUKS_SLOT_INACTIVE;
		s->iterations = 0;
		memset(s->salt, 0, LUKS_SALT_LEN);
		s->dirty = true;
	}
	l->header_dirty = true;
	return 0;
}

static void encode_header(const struct img_luks *l, uint8_t *h)
{
	memset(h, 0, IMG_LUKS_HEADER_SIZE);
	memcpy(h + H_MAGIC, LUKS_MAGIC, LUKS_MAGIC_LEN);
	img_put_be16(h + H_VERSION, LUKS_VERSION);
	memcpy(h + H_CIPHER_NAME, l->cipher_name, strlen(l->cipher_name));
	memcpy(h + H_CIPHER_MODE, l->cipher_mode, strlen(l->cipher_mode));
	memcpy(h + H_HASH_SPEC, l->hash_spec, strlen(l->hash_spec));
	img_put_be32(h + H_PAYLOAD_OFFSET, l->payload_offset);
	img_put_be32(h + H_KEY_BYTES, l->key_bytes);
	memcpy(h + H_MK_DIGEST, l->mk_digest, LUKS_DIGEST_LEN);
	memcpy(h + H_MK_DIGEST_SALT, l->mk_digest_salt, LUKS_SALT_LEN);
	img_put_be32(h + H_MK_DIGEST_ITER, l->mk_digest_iter);
	memcpy(h + H_UUID, l->uuid, strlen(l->uuid));
	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++) {
		uint8_t *p = h + H_SLOTS + i * SLOT_SIZE;
		const struct luks_slot *s = &l->slots[i];

		img_put_be32(p + S_ACTIVE, s->active);
		img_put_be32(p + S_ITERATIONS, s->iterations);
		memcpy(p + S_SALT, s->salt, LUKS_SALT_LEN);
		img_put_be32(p + S_KEY_OFFSET, s->key_offset);
		img_put_be32(p + S_STRIPES, s->stripes);
	}
}

int img_luks_write_area(struct img_luks *l, img_luks_write_fn wr, void *opaque)
{
	uint8_t h[IMG_LUKS_HEADER_SIZE];
	size_t mat_len = slot_material_len(l);
	uint8_t *zero = NULL;
	int ret = 0;

	/* Material first: the header names a slot active only after its
	 * material is written; an erased slot's material goes after the
	 * header stopped naming it. */
	for (unsigned i = 0; i < IMG_LUKS_SLOTS && ret == 0; i++) {
		struct luks_slot *s = &l->slots[i];

		if (s->dirty && s->material)
			ret = wr(opaque,
				 (uint64_t)s->key_offset * IMG_CRYPT_SECTOR,
				 s->material, mat_len);
	}
	if (ret == 0 && l->header_dirty) {
		encode_header(l, h);
		ret = wr(opaque, 0, h, sizeof(h));
		if (ret == 0)
			l->header_dirty = false;
	}
	for (unsigned i = 0; i < IMG_LUKS_SLOTS && ret == 0; i++) {
		struct luks_slot *s = &l->slots[i];

		if (!s->dirty)
			continue;
		if (s->active != LUKS_SLOT_ACTIVE) {
			if (!zero)
				zero = calloc(1, mat_len);
			ret = zero ? wr(opaque,
					(uint64_t)s->key_offset *
						IMG_CRYPT_SECTOR,
					zero, mat_len) :
				     img_error(-ENOMEM, "luks: out of memory");
		}
		if (ret == 0) {
			slot_release(l, s);
			s->dirty = false;
		}
	}
	free(zero);
	return ret;
}

/* ---- descriptions ---- */

_Static_assert(IMG_LUKS_SLOTS <= IMG_CRYPT_MAX_SLOTS, "slots");

void img_luks_describe(const struct img_luks *l, struct img_crypt_info *out)
{
	memset(out, 0, sizeof(*out));
	out->format = "luks";
	out->cipher_alg = l->alg_name;
	out->cipher_mode = l->mode_name;
	out->ivgen_alg = l->ivgen_name;
	out->ivgen_hash_alg = l->ivhash_name[0] ? l->ivhash_name : NULL;
	out->hash_alg = l->hash_spec;
	out->uuid = l->uuid;
	out->payload_offset = (uint64_t)l->payload_offset * IMG_CRYPT_SECTOR;
	out->master_key_iters = l->mk_digest_iter;
	out->n_slots = IMG_LUKS_SLOTS;
	for (unsigned i = 0; i < IMG_LUKS_SLOTS; i++) {
		const struct luks_slot *s = &l->slots[i];
		struct img_crypt_slot *o = &out->slots[i];

		o->active = s->active == LUKS_SLOT_ACTIVE;
		o->iters = s->iterations;
		o->stripes = s->stripes;
		o->key_offset = (uint64_t)s->key_offset * IMG_CRYPT_SECTOR;
	}
}

int img_crypt_info(struct img *img, struct img_crypt_info *out)
{
	int ret;

	if (!img->drv->crypt)
		return -ENOTSUP;
	if (!img->drv->thread_safe)
		pthread_mutex_lock(&img->lock);
	ret = backend_crypt_info(img, out);
	if (!img->drv->thread_safe)
		pthread_mutex_unlock(&img->lock);
	return ret;
}

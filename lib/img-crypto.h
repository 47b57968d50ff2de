/* SPDX-License-Identifier: MIT */
/*
 * Disk encryption for format drivers (included through img-driver.h): locked
 * memory for key material, sector ciphers (a block cipher mode plus an IV
 * generator over 512-byte sectors, as dm-crypt and QEMU name them:
 * "xts-plain64", "cbc-essiv:sha256") and LUKS1 headers (parse and validate,
 * unlock a key slot, create, add and erase key slots). Format neutral: the
 * caller supplies the bytes of the LUKS area through read/write callbacks
 * whose offsets are relative to the start of the LUKS header. Every
 * primitive is OpenSSL EVP (AES, PBKDF2, hashes, RAND_bytes).
 *
 * Key material stays out of core dumps: our copies live in img_secure_alloc
 * memory (MADV_DONTDUMP, locked, wiped), and because OpenSSL keeps its key
 * schedules, PBKDF2's HMAC states and stack temporaries where we cannot
 * place them (its secure heap is not used by the AES providers), every
 * secure block and every keyed img_sector_cipher (its per-thread copies
 * included) holds the process-wide core guard of lib/secret.c: while one
 * exists, cores carry no anonymous memory. Cost: a write to
 * /proc/self/coredump_filter when the first key appears and when the last
 * goes, nothing per sector; crash cores while an encrypted image is open
 * have registers and mappings but no memory to debug with.
 *
 * Objects here are not thread-safe; a driver calls them under its lock.
 */
#ifndef IMG_CRYPTO_H
#define IMG_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "img.h"

/* ---- locked memory (lib/secret.c) ---- */

/*
 * Zeroed memory for key material: mlock'ed where the system allows it and
 * excluded from core dumps; holds the core guard until freed. NULL on failure
 * (with img_error set).
 */
void *img_secure_alloc(size_t len);
/* Wipe and release memory from img_secure_alloc (NULL is a no-op). */
void img_secure_free(void *p, size_t len);

/* The secret an image was opened with (its passphrase), or NULL. */
const struct img_secret *img_open_secret(struct img *img);
/* The secret a create uses: o->secret, else the one o's
 * encrypt.key-secret=ID names (-EINVAL if none has that id), else the
 * default secret, else NULL. */
int img_create_secret(const struct img_create_opts *o,
		      const struct img_secret **out);

/* ---- sector ciphers (lib/crypto-luks.c) ---- */

#define IMG_CRYPT_SECTOR 512

struct img_sector_cipher;

/*
 * A cipher for alg ("aes" with key_len giving the size, doubled for xts)
 * and mode_spec ("xts-plain64", "cbc-essiv:sha256", "cbc-plain", ...).
 * -ENOTSUP for what OpenSSL or this code cannot do.
 */
int img_sector_cipher_new(const char *alg, const char *mode_spec,
			  const uint8_t *key, size_t key_len,
			  struct img_sector_cipher **out);
void img_sector_cipher_free(struct img_sector_cipher *c);
/* En- or decrypt len bytes (a multiple of 512) in place; the first sector
 * has IV number sector. Large buffers are shared out over the cores. */
int img_sector_cipher_run(struct img_sector_cipher *c, bool encrypt,
			  uint64_t sector, uint8_t *buf, size_t len);
/* The same from src into dst (equal, or not overlapping). */
int img_sector_cipher_copy(struct img_sector_cipher *c, bool encrypt,
			   uint64_t sector, const uint8_t *src, uint8_t *dst,
			   size_t len);

/* ---- LUKS1 ---- */

#define IMG_LUKS_HEADER_SIZE 592
#define IMG_LUKS_SLOTS 8
/* Default cap on PBKDF2 iterations of one key slot (about 10 s of SHA-256
 * on a 2020s core); the cap on all slots tried is four times it. */
#define IMG_LUKS_DEFAULT_MAX_ITER (1ull << 25)

/* Bytes at off of the LUKS area (off relative to the LUKS header). */
typedef int (*img_luks_read_fn)(void *opaque, uint64_t off, void *buf,
				size_t len);
typedef int (*img_luks_write_fn)(void *opaque, uint64_t off, const void *buf,
				 size_t len);

struct img_luks;

/*
 * Decode and validate the header in hdr[0, IMG_LUKS_HEADER_SIZE); every key
 * slot's material must lie inside area_len bytes. Bad fields fail
 * -IMG_ECORRUPT, valid but unsupported ciphers -ENOTSUP.
 */
int img_luks_parse(const uint8_t *hdr, size_t len, uint64_t area_len,
		   struct img_luks **out);
void img_luks_free(struct img_luks *l);

/*
 * Find the key slot the passphrase opens and load the master key. -EACCES
 * if no slot opens; -E2BIG if the key derivation cost of the image is above
 * the cap (img_luks_set_max_iter in img.h).
 */
/* Lower the key derivation cap for this header below the process-wide one
 * (IMG_UNTRUSTED_KDF_MAX_ITER for untrusted images); 0 removes it. */
void img_luks_cap_iter(struct img_luks *l, uint64_t cap);
int img_luks_unlock(struct img_luks *l, const struct img_secret *secret,
		    img_luks_read_fn rd, void *opaque);
/* En- or decrypt payload sectors with the master key (after unlock or
 * create). */
int img_luks_crypt(struct img_luks *l, bool encrypt, uint64_t sector,
		   uint8_t *buf, size_t len);
/* The same from src into dst (equal, or not overlapping). */
int img_luks_crypt_copy(struct img_luks *l, bool encrypt, uint64_t sector,
			const uint8_t *src, uint8_t *dst, size_t len);

/*
 * The data cipher of an encrypted image, as a driver hands it to the core in
 * struct img_map (IMG_EXT_ENCRYPTED). LUKS takes its IV from the host sector
 * (qcow2's LUKS payload); a legacy sector cipher (qcow2 "aes") from the guest
 * sector, and is never used to encrypt (QEMU refuses to write it too).
 */
struct img_cipher {
	struct img_luks *luks;
	struct img_sector_cipher *legacy;
};

/* En- or decrypt len bytes (whole sectors, host_off and guest_off sector
 * aligned) from src into dst (equal, or not overlapping). -EINVAL when
 * unaligned, -EACCES when locked, -ENOTSUP for legacy encryption. */
int img_cipher_run(const struct img_cipher *c, bool encrypt, const void *src,
		   void *dst, uint64_t len, uint64_t host_off,
		   uint64_t guest_off);

/* Parameters for a new header, named as QEMU's encrypt.* options. */
struct img_luks_params {
	const char *cipher_alg; /* "aes-256" */
	const char *cipher_mode; /* "xts" */
	const char *ivgen_alg; /* "plain64" */
	const char *ivgen_hash_alg; /* NULL, or "sha256" (default with essiv) */
	const char *hash_alg; /* "sha256" */
	uint64_t iter_time_ms; /* 2000 */
};

/*
 * Fill p from the create options prefix + "cipher-alg" etc. (prefix is
 * "encrypt." for qcow2), with QEMU's defaults for what is absent.
 */
int img_luks_params_from_opts(const struct img_create_opts *o,
			      const char *prefix, struct img_luks_params *p);

/*
 * A new header with a random master key and key slot 0 opened by secret.
 * *area_len is the size of the LUKS area the caller must reserve (the
 * payload offset). Write it with img_luks_write_area.
 */
int img_luks_create(const struct img_luks_params *p,
		    const struct img_secret *secret, struct img_luks **out,
		    uint64_t *area_len);
/* Write the header and the key material of every active slot created or
 * changed since the last call; wipes the material of erased slots. */
int img_luks_write_area(struct img_luks *l, img_luks_write_fn wr, void *opaque);

/*
 * Key-slot management (amend). The master key must be loaded. Add: slot -1
 * takes the first free slot; -EEXIST if slot is active. Erase: the slot (or,
 * with slot -1, every slot the secret opens) becomes inactive; refusing to
 * erase the last active slot (-EINVAL). Both take effect on disk with
 * img_luks_write_area.
 */
int img_luks_add_key(struct img_luks *l, int slot,
		     const struct img_secret *secret, uint64_t iter_time_ms);
int img_luks_erase_key(struct img_luks *l, int slot,
		       const struct img_secret *old, img_luks_read_fn rd,
		       void *opaque);

/* Fill *out for img_crypt_info (format "luks"); strings live as long as l. */
void img_luks_describe(const struct img_luks *l, struct img_crypt_info *out);

#endif

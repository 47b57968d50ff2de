/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of encryption: known answers for AES-XTS (IEEE 1619 vectors
 * 2 and 3; vector 1 has equal key halves, which OpenSSL refuses), run through the sector cipher with plain64 IVs) and PBKDF2 (RFC 6070),
 * the sector ciphers' round trips in every mode and IV generator, secrets
 * (locked copies, base64 files, the registry), LUKS headers (create, unlock,
 * wrong passphrase, key slots added and erased, the KDF cap), and qcow2 with
 * LUKS on the mem backend: writes and reads (aligned or not, copy-on-write
 * of partial clusters), reopen, no plaintext on disk, wrong or missing
 * passphrase, and a bit flip in every byte of the LUKS header never yielding
 * wrong plaintext.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "internal.h"
#include "tap.h"

static void unhex(const char *hex, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		sscanf(hex + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
}

static void test_xts_kat(void)
{
	static const struct {
		const char *key1, *key2, *ptx, *ctx;
		uint64_t seq;
	} v[] = {
		{ "11111111111111111111111111111111",
		  "22222222222222222222222222222222",
		  "4444444444444444444444444444444444444444444444444444444444444444",
		  "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0",
		  0x3333333333ull },
		{ "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0",
		  "22222222222222222222222222222222",
		  "4444444444444444444444444444444444444444444444444444444444444444",
		  "af85336b597afc1a900b2eb21ec949d292df4c047e0b21532186a5971a227a89",
		  0x3333333333ull },
	};

	for (size_t i = 0; i < IMG_ARRAY_SIZE(v); i++) {
		struct img_sector_cipher *c = NULL;
		uint8_t key[32], sector[512], want[32], orig[512];

		unhex(v[i].key1, key, 16);
		unhex(v[i].key2, key + 16, 16);
		memset(sector, 0x5a, sizeof(sector));
		unhex(v[i].ptx, sector, 32);
		memcpy(orig, sector, sizeof(sector));
		unhex(v[i].ctx, want, 32);
		CHECK_OK(img_sector_cipher_new("aes", "xts-plain64", key, 32,
					       &c));
		if (!c)
			continue;
		/* XTS blocks before the last two do not depend on the data
		 * unit's length: the first 32 bytes match the vector. */
		CHECK_OK(img_sector_cipher_run(c, true, v[i].seq, sector, 512));
		CHECK(memcmp(sector, want, 32) == 0);
		CHECK_OK(
			img_sector_cipher_run(c, false, v[i].seq, sector, 512));
		CHECK(memcmp(sector, orig, 512) == 0);
		img_sector_cipher_free(c);
	}
}

static void test_pbkdf2_kat(void)
{
	static const struct {
		const char *p, *s;
		size_t plen, slen;
		int iter;
		const char *dk;
	} v[] = {
		{ "password", "salt", 8, 4, 1,
		  "0c60c80f961f0e71f3a9b524af6012062fe037a6" },
		{ "password", "salt", 8, 4, 2,
		  "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957" },
		{ "password", "salt", 8, 4, 4096,
		  "4b007901b765489abead49d926f721d065a429c1" },
		{ "passwordPASSWORDpassword",
		  "saltSALTsaltSALTsaltSALTsaltSALTsalt", 24, 36, 4096,
		  "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038" },
		{ "pass\0word", "sa\0lt", 9, 5, 4096,
		  "56fa6aa75548099dcc37d7f03425e0c3" },
	};

	for (size_t i = 0; i < IMG_ARRAY_SIZE(v); i++) {
		uint8_t out[32], want[32];
		size_t n = strlen(v[i].dk) / 2;

		unhex(v[i].dk, want, n);
		CHECK(PKCS5_PBKDF2_HMAC(v[i].p, (int)v[i].plen,
					(const uint8_t *)v[i].s, (int)v[i].slen,
					v[i].iter, EVP_sha1(), (int)n, out));
		CHECK(memcmp(out, want, n) == 0);
	}
}

static void test_modes(void)
{
	static const struct {
		const char *mode;
		size_t key_len;
		int expect;
	} v[] = {
		{ "xts-plain64", 64, 0 },
		{ "xts-plain64", 32, 0 },
		{ "xts-plain", 64, 0 },
		{ "cbc-essiv:sha256", 32, 0 },
		{ "cbc-essiv:sha256", 16, 0 },
		{ "cbc-plain64", 24, 0 },
		{ "cbc-plain", 16, 0 },
		{ "ctr-plain64", 32, 0 },
		{ "xts-plain64", 48, -ENOTSUP },
		{ "ofb-plain64", 32, -ENOTSUP },
		{ "cbc-essiv", 32, -IMG_ECORRUPT },
		{ "cbc-foo", 32, -ENOTSUP },
		{ "cbc", 32, -IMG_ECORRUPT },
	};
	uint8_t key[64], buf[2048], orig[2048];

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 13 + 1);
	for (size_t i = 0; i < sizeof(buf); i++)
		orig[i] = (uint8_t)(i ^ (i >> 8));
	for (size_t i = 0; i < IMG_ARRAY_SIZE(v); i++) {
		struct img_sector_cipher *c = NULL;
		int ret = img_sector_cipher_new("aes", v[i].mode, key,
						v[i].key_len, &c);

		CHECK_EQ(ret, v[i].expect);
		if (ret < 0)
			continue;
		memcpy(buf, orig, sizeof(buf));
		CHECK_OK(img_sector_cipher_run(c, true, 7, buf, sizeof(buf)));
		CHECK(memcmp(buf, orig, sizeof(buf)) != 0);
		/* Sectors are independent: the second sector alone. */
		CHECK_OK(img_sector_cipher_run(c, false, 8, buf + 512, 512));
		CHECK(memcmp(buf + 512, orig + 512, 512) == 0);
		CHECK_OK(img_sector_cipher_run(c, false, 7, buf, 512));
		CHECK(memcmp(buf, orig, 512) == 0);
		CHECK_ERR(img_sector_cipher_run(c, true, 0, buf, 100), -EINVAL);
		img_sector_cipher_free(c);
	}
	CHECK_ERR(img_sector_cipher_new("serpent", "xts-plain64", key, 64,
					&(struct img_sector_cipher *){ NULL }),
		  -ENOTSUP);
}

/*
 * Large buffers go through the thread pool, in place and copying: the result
 * must equal sector-by-sector work on one thread, with the pool busy too.
 */
struct par_arg {
	struct img_sector_cipher *c;
	const uint8_t *src;
	uint8_t *dst;
	size_t len;
	int ret;
};

static void *par_thread(void *p)
{
	struct par_arg *a = p;

	a->ret = img_sector_cipher_copy(a->c, true, 1000, a->src, a->dst,
					a->len);
	return NULL;
}

static void test_parallel(void)
{
	static const char *const modes[] = { "xts-plain64", "cbc-essiv:sha256",
					     "ctr-plain64" };
	size_t len = (3u << 20) + 4096;
	uint8_t key[64], *orig = malloc(len), *ref = malloc(len);
	uint8_t *a = malloc(len), *b = malloc(len);

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 3);
	for (size_t i = 0; i < len; i++)
		orig[i] = (uint8_t)(i * 31 ^ (i >> 9));
	for (size_t m = 0; m < IMG_ARRAY_SIZE(modes); m++) {
		struct img_sector_cipher *c = NULL;
		struct par_arg pa = { NULL, orig, b, len, -1 };
		pthread_t t;

		CHECK_OK(img_sector_cipher_new("aes", modes[m], key,
					       m == 0 ? 64 : 32, &c));
		if (!c)
			continue;
		memcpy(ref, orig, len);
		for (size_t off = 0; off < len; off += 512)
			CHECK_OK(img_sector_cipher_run(
				c, true, 1000 + off / 512, ref + off, 512));
		memcpy(a, orig, len);
		CHECK_OK(img_sector_cipher_run(c, true, 1000, a, len));
		CHECK(memcmp(a, ref, len) == 0);
		/* Two callers at once on separate ciphers: one gets the pool,
		 * the other works alone; both right. */
		{
			struct img_sector_cipher *c2 = NULL;

			CHECK_OK(img_sector_cipher_new("aes", modes[m], key,
						       m == 0 ? 64 : 32, &c2));
			pa.c = c2;
			CHECK_OK(pthread_create(&t, NULL, par_thread, &pa));
			memset(a, 0, len);
			CHECK_OK(img_sector_cipher_copy(c, true, 1000, orig, a,
							len));
			pthread_join(t, NULL);
			CHECK_OK(pa.ret);
			CHECK(memcmp(a, ref, len) == 0);
			CHECK(memcmp(b, ref, len) == 0);
			img_sector_cipher_free(c2);
		}
		CHECK_OK(img_sector_cipher_copy(c, false, 1000, a, b, len));
		CHECK(memcmp(b, orig, len) == 0);
		img_sector_cipher_free(c);
	}
	free(orig);
	free(ref);
	free(a);
	free(b);
}

static void test_secrets(void)
{
	struct img_secret *s = NULL;
	const uint8_t *d;
	size_t len;
	FILE *f;

	CHECK_OK(img_secret_new("abc", 3, &s));
	d = img_secret_data(s, &len);
	CHECK(len == 3 && memcmp(d, "abc", 3) == 0);
	img_secret_free(s);

	f = fopen(test_path("b64"), "w");
	fputs("aHVudGVyMg==\n", f);
	fclose(f);
	CHECK_OK(img_secret_from_file(test_path("b64"), true, &s));
	d = img_secret_data(s, &len);
	CHECK(len == 7 && memcmp(d, "hunter2", 7) == 0);
	img_secret_free(s);

	f = fopen(test_path("raw"), "w");
	fputs("pass\n", f);
	fclose(f);
	{
		char spec[600];

		snprintf(spec, sizeof(spec), "secret,id=s1,file=%s",
			 test_path("raw"));
		CHECK_OK(img_secret_object(spec));
		CHECK_ERR(img_secret_object(spec), -EEXIST);
	}
	CHECK(img_secret_lookup("s1") != NULL);
	d = img_secret_data(img_secret_lookup("s1"), &len);
	CHECK(len == 5 && memcmp(d, "pass\n", 5) == 0);
	CHECK(img_secret_lookup("nope") == NULL);
	CHECK_ERR(img_secret_object("secret,id=s2,data=hunter2"), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "file=");
	CHECK_ERR(img_secret_object("secret,id=s3"), -EINVAL);
	CHECK_ERR(img_secret_object("throttle-group,id=t"), -EINVAL);
	img_secret_clear();
	CHECK(img_secret_lookup("s1") == NULL);
}

/* A LUKS area in memory for the header tests. */
struct area {
	uint8_t *buf;
	uint64_t len;
};

static int area_rd(void *opaque, uint64_t off, void *buf, size_t len)
{
	struct area *a = opaque;

	if (off + len > a->len)
		return -EIO;
	memcpy(buf, a->buf + off, len);
	return 0;
}

static int area_wr(void *opaque, uint64_t off, const void *buf, size_t len)
{
	struct area *a = opaque;

	if (off + len > a->len)
		return -EIO;
	memcpy(a->buf + off, buf, len);
	return 0;
}

static struct img_secret *secret_of(const char *s)
{
	struct img_secret *sec = NULL;

	if (img_secret_new(s, strlen(s), &sec) < 0)
		abort();
	return sec;
}

static void test_luks_header(void)
{
	struct img_luks_params p = {
		.cipher_alg = "aes-256",
		.cipher_mode = "xts",
		.ivgen_alg = "plain64",
		.hash_alg = "sha256",
		.iter_time_ms = 1,
	};
	struct img_secret *good = secret_of("correct horse"),
			  *bad = secret_of("wrong horse"),
			  *second = secret_of("second");
	struct img_luks *l = NULL, *r = NULL;
	struct img_crypt_info ci;
	struct area a;
	uint8_t data[1024], orig[1024];
	uint64_t len = 0;

	CHECK_OK(img_luks_create(&p, good, &l, &len));
	CHECK_EQ(len, 4040 * 512); /* QEMU's layout for 64-byte keys */
	a.len = len;
	a.buf = calloc(1, len);
	CHECK_OK(img_luks_write_area(l, area_wr, &a));
	for (size_t i = 0; i < sizeof(data); i++)
		orig[i] = (uint8_t)i;
	memcpy(data, orig, sizeof(data));
	CHECK_OK(img_luks_crypt(l, true, 100, data, sizeof(data)));

	CHECK_OK(img_luks_parse(a.buf, len, len, &r));
	img_luks_describe(r, &ci);
	CHECK(!strcmp(ci.format, "luks"));
	CHECK(!strcmp(ci.cipher_alg, "aes-256"));
	CHECK(!strcmp(ci.cipher_mode, "xts"));
	CHECK(!strcmp(ci.ivgen_alg, "plain64"));
	CHECK(!ci.ivgen_hash_alg);
	CHECK(!strcmp(ci.hash_alg, "sha256"));
	CHECK_EQ(strlen(ci.uuid), 36);
	CHECK_EQ(ci.payload_offset, len);
	CHECK_EQ(ci.n_slots, 8);
	CHECK(ci.slots[0].active && ci.slots[0].key_offset == 4096);
	CHECK(!ci.slots[1].active && ci.slots[1].key_offset == 512 * 512 &&
	      ci.slots[1].stripes == 4000);
	CHECK_ERR(img_luks_crypt(r, false, 100, data, sizeof(data)), -EACCES);
	CHECK_ERR(img_luks_unlock(r, bad, area_rd, &a), -EACCES);
	CHECK_ERR(img_luks_unlock(r, NULL, area_rd, &a), -EACCES);
	CHECK_OK(img_luks_unlock(r, good, area_rd, &a));
	CHECK_OK(img_luks_crypt(r, false, 100, data, sizeof(data)));
	CHECK(memcmp(data, orig, sizeof(data)) == 0);

	/* A second key slot, then erase the first. */
	CHECK_OK(img_luks_add_key(r, -1, second, 1));
	CHECK_ERR(img_luks_add_key(r, 1, second, 1), -EEXIST);
	CHECK_OK(img_luks_write_area(r, area_wr, &a));
	CHECK_ERR(img_luks_erase_key(r, -1, bad, area_rd, &a), -EINVAL);
	CHECK_OK(img_luks_erase_key(r, -1, good, area_rd, &a));
	CHECK_ERR(img_luks_erase_key(r, 1, NULL, area_rd, &a), -EINVAL);
	CHECK_OK(img_luks_write_area(r, area_wr, &a));
	img_luks_free(r);
	r = NULL;
	CHECK_OK(img_luks_parse(a.buf, len, len, &r));
	CHECK_ERR(img_luks_unlock(r, good, area_rd, &a), -EACCES);
	img_luks_free(r);
	r = NULL;
	CHECK_OK(img_luks_parse(a.buf, len, len, &r));
	CHECK_OK(img_luks_unlock(r, second, area_rd, &a));
	img_luks_free(r);
	r = NULL;

	/* The KDF cap. */
	img_luks_set_max_iter(100);
	CHECK_OK(img_luks_parse(a.buf, len, len, &r));
	CHECK_ERR(img_luks_unlock(r, second, area_rd, &a), -E2BIG);
	CHECK_STR_HAS(img_last_error(), "--kdf-max-iter");
	img_luks_free(r);
	r = NULL;
	img_luks_set_max_iter(0);

	/* Header validation. */
	CHECK_ERR(img_luks_parse(a.buf, len, len / 2, &r), -IMG_ECORRUPT);
	a.buf[0] ^= 1;
	CHECK_ERR(img_luks_parse(a.buf, len, len, &r), -IMG_ECORRUPT);
	a.buf[0] ^= 1;
	a.buf[208 + 44 + 3] ^= 1; /* slot 0 stripes */
	CHECK_ERR(img_luks_parse(a.buf, len, len, &r), -IMG_ECORRUPT);
	a.buf[208 + 44 + 3] ^= 1;
	memcpy(a.buf + 8, "serpent", 8);
	CHECK_ERR(img_luks_parse(a.buf, len, len, &r), -ENOTSUP);

	free(a.buf);
	img_luks_free(l);
	img_secret_free(good);
	img_secret_free(bad);
	img_secret_free(second);
}

/* ---- qcow2 with LUKS on the mem backend ---- */

static int make_image(struct img_io **io, const struct img_secret *sec,
		      const char *extra)
{
	struct img_create_opts co = { .format = "qcow2", .size = 4 << 20 };
	char o[512];
	struct img_kv *kv = NULL;
	size_t n = 0;
	int ret;

	snprintf(o, sizeof(o), "encrypt.format=luks,encrypt.iter-time=1%s%s",
		 extra ? "," : "", extra ? extra : "");
	ret = img_kv_parse(o, &kv, &n);
	if (ret < 0)
		return ret;
	co.opts = kv;
	co.n_opts = n;
	co.secret = sec;
	ret = img_io_mem_new(NULL, 0, io);
	if (ret == 0)
		ret = img_create_io(*io, "mem.qcow2", &co);
	img_kv_free(kv, n);
	return ret;
}

static int open_copy(struct img_io *io, const struct img_secret *sec,
		     unsigned flags, struct img **out)
{
	struct img_open_opts o = { .format = "qcow2",
				   .flags = flags,
				   .secret = sec };
	const uint8_t *d;
	size_t len;
	struct img_io *copy;

	img_io_mem_data(io, &d, &len);
	if (img_io_mem_new(d, len, &copy) < 0)
		return -ENOMEM;
	return img_open_io(copy, "mem.qcow2", &o, out);
}

static void test_qcow2_luks(const char *extra)
{
	struct img_secret *good = secret_of("pw"), *bad = secret_of("pW");
	struct img_io *io = NULL;
	struct img *img = NULL;
	uint8_t *ref = calloc(1, 4 << 20), *buf = malloc(4 << 20);
	struct img_info info;

	test_note("qcow2 luks %s", extra ? extra : "defaults");
	CHECK_OK(make_image(&io, good, extra));
	CHECK_OK(open_copy(io, good, 0, &img));
	if (!img)
		goto out;
	CHECK_OK(img_info(img, &info));
	CHECK(info.encrypted);
	for (size_t i = 0; i < (4u << 20); i++)
		ref[i] = (uint8_t)(i * 31 + (i >> 12));
	/* Aligned, unaligned, and partial clusters (copy-on-write). */
	CHECK_OK(img_write(img, ref + 65536, 65536, 3 * 65536, 0));
	CHECK_OK(img_write(img, ref + 1000, 1000, 777, 0));
	CHECK_OK(img_write(img, ref + 300000, 300000, 70000, 0));
	CHECK_OK(img_write(img, ref + 200003, 200003, 10, 0));
	memset(ref + 2 * 65536, 0, 4096);
	CHECK_OK(img_zero(img, 2 * 65536, 4096, 0));
	CHECK_OK(img_read(img, buf, 0, 4 << 20));
	memset(ref, 0, 1000);
	memset(ref + 1777, 0, 65536 - 1777);
	memset(ref + 4 * 65536, 0, 300000 - 4 * 65536);
	memset(ref + 370000, 0, (4u << 20) - 370000);
	CHECK(memcmp(buf, ref, 4 << 20) == 0);
	CHECK_OK(img_read(img, buf, 1001, 3));
	CHECK(memcmp(buf, ref + 1001, 3) == 0);
	CHECK_OK(img_close(img));
	img = NULL;
out:
	img_close(img);
	img_io_close(io);
	img_secret_free(good);
	img_secret_free(bad);
	free(ref);
	free(buf);
}

/* Write through a real file so the bytes can be reopened and flipped. */
static void test_qcow2_luks_file(void)
{
	struct img_secret *good = secret_of("pw"), *bad = secret_of("pW");
	struct img_create_opts co = { .format = "qcow2", .size = 1 << 20 };
	struct img_open_opts oo = { .format = "qcow2", .secret = good };
	const char *path = test_path("enc.qcow2");
	uint8_t pat[4096], buf[4096];
	struct img *img = NULL;
	struct img_kv *kv = NULL;
	size_t n = 0;
	uint8_t *file = NULL;
	long file_len = 0;
	FILE *f;

	for (size_t i = 0; i < sizeof(pat); i++)
		pat[i] = (uint8_t)("plaintext!"[i % 10]);
	CHECK_OK(img_kv_parse("encrypt.format=luks,encrypt.iter-time=1", &kv,
			      &n));
	co.opts = kv;
	co.n_opts = n;
	co.secret = good;
	CHECK_OK(img_create(path, &co));
	img_kv_free(kv, n);
	CHECK_OK(img_open(path, &oo, &img));
	if (!img)
		goto out;
	CHECK_OK(img_write(img, pat, 65536, sizeof(pat), 0));
	CHECK_OK(img_close(img));
	img = NULL;

	/* Wrong or missing passphrase: -EACCES; NO_IO opens locked. */
	oo.secret = bad;
	CHECK_ERR(img_open(path, &oo, &img), -EACCES);
	CHECK_STR_HAS(img_last_error(), "Invalid password");
	oo.secret = NULL;
	CHECK_ERR(img_open(path, &oo, &img), -EACCES);
	CHECK_STR_HAS(img_last_error(), "encrypt.key-secret");
	oo.flags = IMG_OPEN_RDONLY | IMG_OPEN_NO_IO;
	CHECK_OK(img_open(path, &oo, &img));
	if (img) {
		CHECK_ERR(img_read(img, buf, 65536, 512), -EACCES);
		img_close(img);
		img = NULL;
	}

	f = fopen(path, "rb");
	fseek(f, 0, SEEK_END);
	file_len = ftell(f);
	rewind(f);
	file = malloc((size_t)file_len);
	CHECK_EQ(fread(file, 1, (size_t)file_len, f), file_len);
	fclose(f);
	/* The plaintext is not on disk. */
	for (long i = 0; i + 10 <= file_len; i++)
		if (!memcmp(file + i, "plaintext!", 10)) {
			CHECK(!"plaintext found in the image file");
			break;
		}

	/* Flip one bit in every byte of the LUKS header (at 0x40000) and in
	 * 64 bytes spread over slot 0's key material: the open fails, or reads give the
	 * right plaintext. Low KDF cap so flipped iteration counts fail fast. */
	img_luks_set_max_iter(1 << 16);
	oo.secret = good;
	oo.flags = IMG_OPEN_RDONLY;
	for (unsigned i = 0; i < 592 + 64; i++) {
		long at = 0x40000 + (i < 592 ? i : 4096 + (i - 592) * 3989);
		struct img_io *io;
		int ret;

		file[at] ^= (uint8_t)(1u << (i % 8));
		CHECK_OK(img_io_mem_new(file, (size_t)file_len, &io));
		ret = img_open_io(io, "flip.qcow2", &oo, &img);
		if (ret == 0) {
			ret = img_read(img, buf, 65536, sizeof(buf));
			if (ret == 0 && memcmp(buf, pat, sizeof(pat))) {
				fprintf(stderr,
					"wrong plaintext accepted with "
					"byte %#lx flipped\n",
					at);
				CHECK(false);
			}
			img_close(img);
			img = NULL;
		}
		file[at] ^= (uint8_t)(1u << (i % 8));
	}
	img_luks_set_max_iter(0);
out:
	free(file);
	img_close(img);
	img_secret_free(good);
	img_secret_free(bad);
}

int main(void)
{
	test_xts_kat();
	test_pbkdf2_kat();
	test_modes();
	test_parallel();
	test_secrets();
	test_luks_header();
	test_qcow2_luks(NULL);
	test_qcow2_luks("encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,"
			"encrypt.ivgen-alg=essiv");
	test_qcow2_luks("encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain,"
			"cluster_size=4096");
	test_qcow2_luks_file();
	return test_done();
}

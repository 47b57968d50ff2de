/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the qcow2 driver engine: create with each option (cluster
 * sizes, refcount widths 1..64, compat 0.10/1.1, lazy refcounts, extended L2,
 * external data files, preallocation), writes and reads of patterns across
 * cluster and L2 boundaries compared with a flat reference, reopen, backing
 * copy-on-write (whole clusters and subclusters), zero and discard, refcount
 * table growth, resize, header feature handling, and writes over clusters
 * shared with an internal snapshot. Images live in a temporary directory (and
 * one on the mem backend); when qemu-img is installed every image must pass
 * `qemu-img check` and compare equal to the reference.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "tap.h"

static bool have_qemu;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static uint64_t below(uint64_t n)
{
	return rnd() % n;
}

static void fill(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 9));
}

static int create(const char *path, uint64_t size, const char *o,
		  const char *backing, const char *backing_fmt)
{
	struct img_create_opts co = { .format = "qcow2", .size = size };
	struct img_kv *kv = NULL;
	size_t n = 0;
	int ret;

	if (o && *o) {
		ret = img_kv_parse(o, &kv, &n);
		if (ret < 0)
			return ret;
	}
	co.opts = kv;
	co.n_opts = n;
	co.backing_file = backing;
	co.backing_fmt = backing_fmt;
	ret = img_create(path, &co);
	img_kv_free(kv, n);
	return ret;
}

static struct img *open_img(const char *path, unsigned flags)
{
	struct img_open_opts oo = { .format = "qcow2", .flags = flags };
	struct img *img = NULL;
	int ret = img_open(path, &oo, &img);

	if (ret < 0) {
		fprintf(stderr, "open %s: %s\n", path, img_last_error());
		return NULL;
	}
	return img;
}

/* Whole image equals ref? */
static bool same(struct img *img, const uint8_t *ref, uint64_t size)
{
	uint8_t *buf = malloc(size);
	bool ok;
	int ret;

	ret = img_read(img, buf, 0, size);
	if (ret < 0) {
		fprintf(stderr, "read: %s\n", img_last_error());
		free(buf);
		return false;
	}
	ok = memcmp(buf, ref, size) == 0;
	if (!ok) {
		for (uint64_t i = 0; i < size; i++) {
			if (buf[i] != ref[i]) {
				fprintf(stderr,
					"first difference at %#" PRIx64
					": %#x != %#x\n",
					i, buf[i], ref[i]);
				break;
			}
		}
	}
	free(buf);
	return ok;
}

static void qemu_check(const char *path)
{
	if (!have_qemu)
		return;
	/* QEMU names data files relative to the working directory. */
	CHECK_EQ(test_sh("cd '%s' && qemu-img check -q '%s'", test_tmpdir(),
			 path),
		 0);
}

/* qemu-img reads the same bytes as the reference. */
static void qemu_compare(const char *path, const uint8_t *ref, uint64_t size)
{
	const char *raw = test_path("ref.raw");
	FILE *f;

	if (!have_qemu)
		return;
	f = fopen(raw, "wb");
	CHECK(f != NULL);
	if (!f)
		return;
	CHECK_EQ(fwrite(ref, 1, size, f), size);
	fclose(f);
	CHECK_EQ(test_sh("cd '%s' && qemu-img compare -q -f qcow2 -F raw '%s' "
			 "'%s'",
			 test_tmpdir(), path, raw),
		 0);
}

/*
 * Random writes, zeroes and discards against a reference, with a reopen in
 * the middle; offsets are biased towards cluster and L2 boundaries.
 */
static void workload(const char *name, uint64_t size, const char *o,
		     unsigned n_ops)
{
	const char *path = test_path(name);
	uint64_t cs = 65536, l2_cover;
	uint8_t *ref = calloc(1, size), *buf = malloc(8 << 20);
	struct img *img;
	struct img_info info;
	bool v2 = o && strstr(o, "compat=0.10");

	test_note("workload %s (%s)", name, o ? o : "defaults");
	CHECK_OK(create(path, size, o, NULL, NULL));
	img = open_img(path, 0);
	CHECK(img != NULL);
	if (!img)
		goto out;
	CHECK_OK(img_info(img, &info));
	CHECK(info.serialised);
	cs = info.cluster_size;
	l2_cover = cs / (o && strstr(o, "extended_l2=on") ? 16 : 8) * cs;
	/* VM state goes just past what the L1 table covers. */
	CHECK_EQ(info.vm_state_offset,
		 (info.virtual_size + l2_cover - 1) / l2_cover * l2_cover);
	for (unsigned i = 0; i < n_ops; i++) {
		uint64_t off, len, kind = below(10);

		switch (below(4)) {
		case 0:
			off = below(size);
			break;
		case 1:
			off = below(size / cs) * cs;
			break;
		default:
			off = below(size / l2_cover + 1) * l2_cover;
			off = off >= 3 * cs ? off - below(3 * cs) : off;
			break;
		}
		if (off >= size)
			off = size - 1;
		len = below(4) ? 1 + below(3 * cs) : 1 + below(4 << 20);
		if (len > size - off)
			len = size - off;
		if (kind < 7) {
			fill(buf, len, (uint8_t)i);
			CHECK_OK(img_write(img, buf, off, len, 0));
			memcpy(ref + off, buf, len);
		} else if (kind < 9) {
			CHECK_OK(img_zero(img, off, len,
					  kind == 8 ? IMG_ZERO_MAY_UNMAP : 0));
			memset(ref + off, 0, len);
		} else {
			/* Contents afterwards are unspecified: learn them. */
			CHECK_OK(img_discard(img, off, len));
			CHECK_OK(img_read(img, ref + off, off, len));
			if (!v2) {
				uint64_t a = img_align_up(off, cs);
				uint64_t b = (off + len) & ~(cs - 1);

				for (uint64_t j = a; j < b; j++)
					if (ref[j]) {
						CHECK(!"discard left data");
						break;
					}
			}
		}
		if (i == n_ops / 2) {
			CHECK_OK(img_close(img));
			img = open_img(path, 0);
			CHECK(img != NULL);
			if (!img)
				goto out;
			CHECK(same(img, ref, size));
		}
	}
	CHECK(same(img, ref, size));
	CHECK_OK(img_close(img));
	img = open_img(path, IMG_OPEN_RDONLY);
	CHECK(img != NULL);
	if (img) {
		CHECK(same(img, ref, size));
		img_close(img);
	}
	qemu_check(path);
	qemu_compare(path, ref, size);
out:
	free(ref);
	free(buf);
}

/* img's create writes what qemu-img create writes. */
static void test_create_layout(void)
{
	static const char *const cases[] = {
		"",
		"compat=0.10",
		"cluster_size=4096",
		"cluster_size=512,refcount_bits=64",
		"lazy_refcounts=on,refcount_bits=1",
		"extended_l2=on,cluster_size=128k",
		"preallocation=metadata,cluster_size=4k",
	};

	if (!have_qemu)
		return;
	for (size_t i = 0; i < IMG_ARRAY_SIZE(cases); i++) {
		const char *a = test_path("layout-img.qcow2");
		const char *b = test_path("layout-qemu.qcow2");

		CHECK_OK(create(a, 16 << 20, cases[i], NULL, NULL));
		CHECK_EQ(test_sh("qemu-img create -q -f qcow2 %s%s '%s' 16M",
				 *cases[i] ? "-o " : "", cases[i], b),
			 0);
		if (test_sh("cmp -s '%s' '%s'", a, b) != 0) {
			test_note("create layout differs for '%s'", cases[i]);
			CHECK(!"create layout differs from qemu-img");
		}
		qemu_check(a);
	}
}

static void test_backing(const char *overlay_opts)
{
	const char *base = test_path("base.qcow2");
	const char *top = test_path("top.qcow2");
	uint64_t size = 8 << 20;
	uint8_t *ref = malloc(size), *buf = malloc(size);
	struct img *img;
	struct img_extent ext;

	test_note("backing copy-on-write (%s)", overlay_opts);
	fill(ref, size, 0x40);
	CHECK_OK(create(base, size, "cluster_size=4k", NULL, NULL));
	img = open_img(base, 0);
	CHECK(img != NULL);
	if (!img)
		goto out;
	CHECK_OK(img_write(img, ref, 0, size, 0));
	CHECK_OK(img_close(img));

	CHECK_OK(create(top, size, overlay_opts, "base.qcow2", "qcow2"));
	img = open_img(top, 0);
	CHECK(img != NULL);
	if (!img)
		goto out;
	CHECK(img_backing(img) != NULL);
	CHECK(same(img, ref, size));
	/* Small writes in the middle of clusters copy the rest from the base. */
	fill(buf, 5000, 0x99);
	CHECK_OK(img_write(img, buf, 70000, 100, 0));
	memcpy(ref + 70000, buf, 100);
	CHECK_OK(img_write(img, buf, 3 * 65536 - 2000, 5000, 0));
	memcpy(ref + 3 * 65536 - 2000, buf, 5000);
	CHECK_OK(img_zero(img, 1 << 20, 65536 + 10, 0));
	memset(ref + (1 << 20), 0, 65536 + 10);
	CHECK(same(img, ref, size));
	if (strstr(overlay_opts, "extended_l2=on")) {
		/* Only the touched subcluster is allocated (64k/32 = 2k). */
		CHECK_OK(img_block_status(img, 65536, 65536, IMG_BS_NO_CHAIN,
					  &ext));
		CHECK(!(ext.flags & IMG_EXT_ALLOCATED));
		CHECK_EQ(ext.len, 4096);
		CHECK_OK(img_block_status(img, 65536 + 4096, 4096,
					  IMG_BS_NO_CHAIN, &ext));
		CHECK(ext.flags & IMG_EXT_ALLOCATED);
		CHECK_EQ(ext.len, 2048);
	} else {
		CHECK_OK(img_block_status(img, 65536, 65536, IMG_BS_NO_CHAIN,
					  &ext));
		CHECK(ext.flags & IMG_EXT_ALLOCATED);
		CHECK_EQ(ext.len, 65536);
	}
	CHECK_OK(img_close(img));
	img = open_img(top, IMG_OPEN_RDONLY);
	CHECK(img != NULL);
	if (img) {
		CHECK(same(img, ref, size));
		img_close(img);
	}
	qemu_check(top);
	if (have_qemu) {
		const char *raw = test_path("ref.raw");
		FILE *f = fopen(raw, "wb");

		if (f) {
			CHECK_EQ(fwrite(ref, 1, size, f), size);
			fclose(f);
			CHECK_EQ(test_sh("qemu-img compare -q '%s' '%s'", top,
					 raw),
				 0);
		}
	}
out:
	free(ref);
	free(buf);
}

static void test_data_file_raw(void)
{
	const char *path = test_path("df.qcow2");
	const char *data = test_path("df.raw");
	uint64_t size = 4 << 20;
	uint8_t *buf = malloc(size), *ref = calloc(1, size);
	struct img *img;
	struct img_info info;
	FILE *f;

	test_note("external data file, raw");
	CHECK_OK(create(path, size, "data_file=df.raw,data_file_raw=on", NULL,
			NULL));
	img = open_img(path, 0);
	CHECK(img != NULL);
	if (!img)
		goto out;
	fill(buf, size, 3);
	CHECK_OK(img_write(img, buf + 1000, 1000, 300000, 0));
	memcpy(ref + 1000, buf + 1000, 300000);
	CHECK_OK(img_zero(img, 5000, 70000, IMG_ZERO_MAY_UNMAP));
	memset(ref + 5000, 0, 70000);
	CHECK(same(img, ref, size));
	CHECK_OK(img_info(img, &info));
	{
		bool found = false;

		for (size_t i = 0; i < info.n_fields; i++)
			if (!strcmp(info.fields[i].key, "data-file-raw"))
				found = info.fields[i].b;
		CHECK(found);
	}
	CHECK_OK(img_close(img));
	/* The data file is a valid raw image of the guest. */
	f = fopen(data, "rb");
	CHECK(f != NULL);
	if (f) {
		memset(buf, 0xee, size);
		CHECK_EQ(fread(buf, 1, size, f), size);
		fclose(f);
		CHECK(memcmp(buf, ref, size) == 0);
	}
	qemu_check(path);
	qemu_compare(path, ref, size);
out:
	free(buf);
	free(ref);
}

static void test_data_file(void)
{
	test_note("external data file, not raw");
	workload("dfx.qcow2", 4 << 20, "data_file=dfx.data,cluster_size=4k",
		 100);
}

/* Reftable growth: 512-byte clusters with 64-bit refcounts cover only 2 MiB
 * per refcount table cluster. */
static void test_reftable_growth(void)
{
	workload("grow.qcow2", 24 << 20, "cluster_size=512,refcount_bits=64",
		 60);
}

static void test_resize(void)
{
	const char *path = test_path("resize.qcow2");
	uint64_t size = 3 << 20, big = 600ull << 20;
	uint8_t *buf = malloc(size), *got = malloc(size);
	struct img *img;

	test_note("resize");
	CHECK_OK(create(path, size, "cluster_size=4k", NULL, NULL));
	img = open_img(path, 0);
	CHECK(img != NULL);
	if (!img)
		goto out;
	fill(buf, size, 9);
	CHECK_OK(img_write(img, buf, 0, size, 0));
	CHECK_OK(img_resize(img, big, 0, IMG_PREALLOC_OFF));
	CHECK_EQ(img_size(img), big);
	CHECK_OK(img_write(img, buf, big - size, size, 0));
	CHECK_OK(img_read(img, got, big - size, size));
	CHECK(memcmp(got, buf, size) == 0);
	CHECK_OK(img_read(img, got, 0, size));
	CHECK(memcmp(got, buf, size) == 0);
	CHECK_ERR(img_resize(img, 1 << 20, 0, IMG_PREALLOC_OFF), -EINVAL);
	CHECK_OK(img_resize(img, (1 << 20) + 512, IMG_RESIZE_SHRINK,
			    IMG_PREALLOC_OFF));
	CHECK_OK(img_read(img, got, 0, (1 << 20) + 512));
	CHECK(memcmp(got, buf, (1 << 20) + 512) == 0);
	CHECK_OK(img_resize(img, size, 0, IMG_PREALLOC_METADATA));
	CHECK_OK(img_read(img, got, 0, size));
	CHECK(memcmp(got, buf, (1 << 20) + 512) == 0);
	CHECK(img_is_zero(got + (1 << 20) + 512, size - (1 << 20) - 512));
	CHECK_OK(img_close(img));
	qemu_check(path);
out:
	free(buf);
	free(got);
}

static void poke_be64(const char *path, off_t off, uint64_t v)
{
	uint8_t b[8];
	int fd = open(path, O_WRONLY);

	img_put_be64(b, v);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ(pwrite(fd, b, 8, off), 8);
	close(fd);
}

static void test_header_features(void)
{
	const char *path = test_path("feat.qcow2");
	struct img *img = NULL;
	struct img_open_opts oo = { .format = "qcow2" };

	test_note("header feature bits");
	CHECK_OK(create(path, 1 << 20, NULL, NULL, NULL));
	/* Unknown incompatible bit 9: no name in the table. */
	poke_be64(path, 72, 1ull << 9);
	CHECK_ERR(img_open(path, &oo, &img), -ENOTSUP);
	CHECK_STR_HAS(img_last_error(), "bit 9");
	/* Bit 4 is in QEMU's table: named. Corrupt bit: read-only works. */
	poke_be64(path, 72, 1ull << 1);
	CHECK_ERR(img_open(path, &oo, &img), -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "corrupt");
	oo.flags = IMG_OPEN_RDONLY;
	CHECK_OK(img_open(path, &oo, &img));
	img_close(img);
	oo.flags = 0;
	/* Unknown compatible bits are ignored; unknown autoclear bits are
	 * cleared on a read-write open (bit 0, bitmaps, is known: kept). */
	poke_be64(path, 72, 0);
	poke_be64(path, 80, 1ull << 40);
	poke_be64(path, 88, 1ull << 33 | 1);
	CHECK_OK(img_open(path, &oo, &img));
	img_close(img);
	{
		uint8_t b[8];
		int fd = open(path, O_RDONLY);

		CHECK_EQ(pread(fd, b, 8, 88), 8);
		CHECK_EQ(img_be64(b), 1);
		close(fd);
	}
	qemu_check(path);
}

/* Writes to clusters shared with an internal snapshot made by qemu-img
 * copy them (the COPIED flag is clear) and leave the snapshot intact. */
static void test_snapshot_cow(void)
{
	const char *path = test_path("snap.qcow2");
	uint64_t size = 2 << 20;
	uint8_t *buf = malloc(size), *ref = malloc(size);
	struct img *img;

	if (!have_qemu)
		goto out;
	test_note("copy-on-write of clusters shared with a snapshot");
	CHECK_EQ(test_sh("qemu-img create -q -f qcow2 '%s' 2M && "
			 "qemu-io -c 'write -P 0x5a 0 2M' '%s' >/dev/null && "
			 "qemu-img snapshot -c s1 '%s'",
			 path, path, path),
		 0);
	img = open_img(path, 0);
	CHECK(img != NULL);
	if (!img)
		goto out;
	memset(ref, 0x5a, size);
	fill(buf, 100000, 1);
	CHECK_OK(img_write(img, buf, 12345, 100000, 0));
	memcpy(ref + 12345, buf, 100000);
	CHECK_OK(img_zero(img, 1 << 20, 65536, IMG_ZERO_MAY_UNMAP));
	memset(ref + (1 << 20), 0, 65536);
	CHECK(same(img, ref, size));
	CHECK_OK(img_close(img));
	qemu_check(path);
	qemu_compare(path, ref, size);
	/* The snapshot still holds the old data. */
	CHECK_EQ(test_sh("qemu-img convert -l snapshot.name=s1 -O raw '%s' "
			 "'%s.s1' && qemu-io -f raw -c 'read -P 0x5a 0 2M' "
			 "'%s.s1' | grep -q 'read 2097152'",
			 path, path, path),
		 0);
out:
	free(buf);
	free(ref);
}

/* An image made by qemu-img and written by qemu-io reads back in img. */
static void test_qemu_made(void)
{
	const char *path = test_path("qemu.qcow2");
	uint8_t *buf = malloc(1 << 20);
	struct img *img;

	if (!have_qemu)
		goto out;
	test_note("reading what qemu-io wrote");
	CHECK_EQ(test_sh("qemu-img create -q -f qcow2 -o extended_l2=on '%s' "
			 "8M && qemu-io -c 'write -P 0x11 1000 5000' "
			 "-c 'write -z 100000 8192' -c 'write -P 0x22 3M 1M' "
			 "'%s' >/dev/null",
			 path, path),
		 0);
	img = open_img(path, IMG_OPEN_RDONLY);
	CHECK(img != NULL);
	if (!img)
		goto out;
	CHECK_OK(img_read(img, buf, 0, 1 << 20));
	CHECK(img_is_zero(buf, 1000));
	for (int i = 1000; i < 6000; i++)
		if (buf[i] != 0x11) {
			CHECK(!"pattern 0x11 mismatch");
			break;
		}
	CHECK(img_is_zero(buf + 6000, (1 << 20) - 6000));
	CHECK_OK(img_read(img, buf, 3 << 20, 1 << 20));
	for (int i = 0; i < 1 << 20; i++)
		if (buf[i] != 0x22) {
			CHECK(!"pattern 0x22 mismatch");
			break;
		}
	img_close(img);
out:
	free(buf);
}

/* set_backing rewrites the header: the backing name and format change, an
 * unknown header extension survives. */
static void test_set_backing(void)
{
	const char *base = test_path("sb-base.qcow2");
	const char *top = test_path("sb-top.qcow2");
	static const uint8_t ext[16] = { 0x12, 0x34, 0x56, 0x78, 0,   0,  0,
					 5,    'h',  'e',  'l',	 'l', 'o' };
	uint8_t *hdr = malloc(65536), buf[4096];
	struct img *img;
	int fd;

	test_note("set_backing and unknown extensions");
	CHECK_OK(create(base, 1 << 20, NULL, NULL, NULL));
	img = open_img(base, 0);
	CHECK(img != NULL);
	if (!img)
		goto out;
	memset(buf, 0x6b, sizeof(buf));
	CHECK_OK(img_write(img, buf, 8192, sizeof(buf), 0));
	CHECK_OK(img_close(img));
	CHECK_OK(create(top, 1 << 20, NULL, NULL, NULL));
	/* Insert an unknown extension before the end marker (0x1f8). */
	fd = open(top, O_RDWR);
	CHECK(fd >= 0);
	if (fd < 0)
		goto out;
	CHECK_EQ(pwrite(fd, ext, sizeof(ext), 0x1f8), sizeof(ext));
	close(fd);
	img = open_img(top, 0);
	CHECK(img != NULL);
	if (!img)
		goto out;
	CHECK_OK(img_set_backing(img, "sb-base.qcow2", "qcow2"));
	CHECK_OK(img_close(img));
	img = open_img(top, IMG_OPEN_RDONLY);
	CHECK(img != NULL);
	if (img) {
		CHECK(img_backing(img) != NULL);
		CHECK_OK(img_read(img, buf, 8192, sizeof(buf)));
		CHECK(buf[0] == 0x6b && buf[4095] == 0x6b);
		img_close(img);
	}
	fd = open(top, O_RDONLY);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK_EQ(pread(fd, hdr, 65536, 0), 65536);
		close(fd);
		CHECK(memmem(hdr, 65536, ext, 13) != NULL);
		CHECK(memmem(hdr, 65536, "sb-base.qcow2", 13) != NULL);
	}
	qemu_check(top);
	if (have_qemu)
		CHECK_EQ(test_sh("qemu-img info '%s' | grep -q "
				 "'backing file format: qcow2'",
				 top),
			 0);
	img = open_img(top, 0);
	CHECK(img != NULL);
	if (img) {
		CHECK_OK(img_set_backing(img, NULL, NULL));
		CHECK_OK(img_close(img));
	}
	img = open_img(top, IMG_OPEN_RDONLY);
	CHECK(img != NULL);
	if (img) {
		CHECK(img_backing(img) == NULL);
		CHECK_OK(img_read(img, buf, 8192, sizeof(buf)));
		CHECK(img_is_zero(buf, sizeof(buf)));
		img_close(img);
	}
	qemu_check(top);
out:
	free(hdr);
}

/* The mem backend: create and use an image without touching a disk. */
static void test_mem(void)
{
	struct img_io *io = NULL;
	struct img *img = NULL;
	struct img_create_opts co = { .format = "qcow2", .size = 4 << 20 };
	struct img_open_opts oo = { .format = "qcow2" };
	uint8_t *buf = malloc(1 << 20), *got = malloc(1 << 20);

	test_note("mem backend");
	CHECK_OK(img_io_mem_new(NULL, 0, &io));
	if (!io)
		goto out;
	CHECK_OK(img_create_io(io, NULL, &co));
	CHECK_OK(img_open_io(io, NULL, &oo, &img));
	if (!img)
		goto out;
	fill(buf, 1 << 20, 77);
	CHECK_OK(img_write(img, buf, 333, 1 << 20, 0));
	CHECK_OK(img_read(img, got, 333, 1 << 20));
	CHECK(memcmp(buf, got, 1 << 20) == 0);
	CHECK_OK(img_close(img));
out:
	free(buf);
	free(got);
}

int main(void)
{
	const char *const *f = img_formats();
	bool have = false;

	for (; *f; f++)
		if (!strcmp(*f, "qcow2"))
			have = true;
	if (!have)
		test_skip("qcow2 is not registered in formats/formats.c yet");
	have_qemu = test_sh("qemu-img --version >/dev/null 2>&1") == 0;
	if (!have_qemu)
		test_note("qemu-img not found: skipping the qemu-img checks");

	test_create_layout();
	workload("default.qcow2", 16 << 20, NULL, 150);
	workload("v2.qcow2", 16 << 20, "compat=0.10,cluster_size=4k", 150);
	workload("c512.qcow2", 4 << 20, "cluster_size=512", 100);
	workload("c2m.qcow2", 24 << 20, "cluster_size=2M", 40);
	workload("lazy.qcow2", 8 << 20, "lazy_refcounts=on,cluster_size=8k",
		 100);
	workload("extl2.qcow2", 16 << 20, "extended_l2=on,cluster_size=16k",
		 150);
	for (unsigned bits = 1; bits <= 64; bits *= 2) {
		char o[64], name[32];

		snprintf(o, sizeof(o), "refcount_bits=%u,cluster_size=4k",
			 bits);
		snprintf(name, sizeof(name), "rc%u.qcow2", bits);
		workload(name, 8 << 20, o, 60);
	}
	test_reftable_growth();
	test_backing("cluster_size=64k");
	test_backing("cluster_size=64k,extended_l2=on");
	test_data_file_raw();
	test_data_file();
	test_resize();
	test_header_features();
	test_set_backing();
	test_snapshot_cow();
	test_qemu_made();
	test_mem();
	return test_done();
}

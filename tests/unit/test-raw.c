/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the raw driver through the public API, on temporary files
 * with each I/O backend and on the mem backend: create with each
 * preallocation mode, read/write/zero/discard round trips, block status over
 * holes and data, resize, measure, info, and files whose size is not a
 * multiple of 512.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "tap.h"

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : UINT64_MAX;
}

static uint64_t file_blocks(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static bool range_is(struct img *img, uint64_t off, uint64_t len, uint8_t v)
{
	uint8_t *buf = malloc(len);
	bool ok = true;

	if (!buf || img_read(img, buf, off, len) < 0)
		ok = false;
	for (uint64_t i = 0; ok && i < len; i++)
		if (buf[i] != v)
			ok = false;
	free(buf);
	return ok;
}

static void test_create(void)
{
	static const char *const modes[] = { "off", "falloc", "full" };
	const uint64_t size = 1 << 20;

	for (int i = 0; i < 3; i++) {
		const char *path = test_path("create.raw");
		struct img_kv kv = { "preallocation", modes[i] };
		struct img_create_opts o = {
			.format = "raw",
			.size = size,
			.opts = &kv,
			.n_opts = 1,
		};

		CHECK_OK(img_create(path, &o));
		CHECK_EQ(file_size(path), size);
		if (i > 0)
			CHECK(file_blocks(path) >= size);
		else
			CHECK(file_blocks(path) < size);
	}

	/* Unknown options and bad preallocation modes are refused. */
	struct img_kv bad = { "cluster_size", "64k" };
	struct img_create_opts ob = {
		.format = "raw", .size = 4096, .opts = &bad, .n_opts = 1
	};
	CHECK_ERR(img_create(test_path("bad.raw"), &ob), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "invalid parameter 'cluster_size'");
	CHECK(access(test_path("bad.raw"), F_OK) != 0);
	struct img_kv meta = { "preallocation", "metadata" };
	ob.opts = &meta;
	CHECK_ERR(img_create(test_path("bad.raw"), &ob), -EINVAL);
	struct img_create_opts nofmt = { .format = "nosuch", .size = 1 };
	CHECK_ERR(img_create(test_path("bad.raw"), &nofmt), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "unknown format 'nosuch'");
	/* raw takes no backing file. */
	struct img_create_opts ob2 = { .format = "raw",
				       .size = 4096,
				       .backing_file = "x",
				       .unsafe_backing = true };
	CHECK_ERR(img_create(test_path("bad.raw"), &ob2), -EINVAL);

	/* Size as an option. */
	struct img_kv sz = { "size", "64k" };
	struct img_create_opts os = { .format = "raw",
				      .opts = &sz,
				      .n_opts = 1 };
	CHECK_OK(img_create(test_path("sz.raw"), &os));
	CHECK_EQ(file_size(test_path("sz.raw")), 65536);
	/* Sizes round up to whole sectors, as with qemu-img. */
	os.opts = NULL;
	os.n_opts = 0;
	os.size = 1000;
	CHECK_OK(img_create(test_path("sz.raw"), &os));
	CHECK_EQ(file_size(test_path("sz.raw")), 1024);

	char help[1024];
	CHECK_OK(img_create_help("raw", help, sizeof(help)));
	CHECK_STR_HAS(help, "preallocation=<str>");
	CHECK_STR_HAS(help, "size=<size>");
	CHECK_ERR(img_create_help("raw", help, 8), -ENOSPC);
}

static void test_io(enum img_io_kind kind)
{
	const char *path = test_path("io.raw");
	struct img_create_opts o = { .format = "raw", .size = 4 << 20 };
	struct img_open_opts oo = { .format = NULL, .io = kind };
	struct img_extent ext;
	struct img *img;
	uint8_t *buf = malloc(1 << 20);

	CHECK_OK(img_create(path, &o));
	CHECK_OK(img_open(path, &oo, &img));
	if (!img || !buf)
		return;
	CHECK(!strcmp(img_format(img), "raw"));
	CHECK_EQ(img_size(img), 4 << 20);
	CHECK(!img_read_only(img));
	CHECK(!img_backing(img));
	CHECK_EQ(img_granularity(img), 65536);

	memset(buf, 0xab, 1 << 20);
	CHECK_OK(img_write(img, buf, 1 << 20, 1 << 20, 0));
	CHECK_OK(img_write(img, buf, 3, 5, IMG_FUA));
	CHECK(range_is(img, 0, 3, 0));
	CHECK(range_is(img, 3, 5, 0xab));
	CHECK(range_is(img, 8, (1 << 20) - 8, 0));
	CHECK(range_is(img, 1 << 20, 1 << 20, 0xab));
	CHECK_OK(img_flush(img));

	/* Block status: data where written, holes elsewhere. */
	CHECK_OK(img_block_status(img, 1 << 20, 1 << 20, 0, &ext));
	CHECK_EQ(ext.off, 1 << 20);
	CHECK_EQ(ext.len, 1 << 20);
	CHECK_EQ(ext.flags,
		 IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID);
	CHECK_EQ(ext.file_off, 1 << 20);
	CHECK_EQ(ext.depth, 0);
	CHECK(ext.file && !strcmp(ext.file, path));
	CHECK_OK(img_block_status(img, 2 << 20, 2 << 20, 0, &ext));
	CHECK_EQ(ext.len, 2 << 20);
	CHECK(ext.flags & IMG_EXT_ZERO);
	CHECK(ext.flags & IMG_EXT_ALLOCATED);
	CHECK(!(ext.flags & IMG_EXT_DATA));

	/* Zero with unmap punches a hole; without, reads still zero. */
	CHECK_OK(img_zero(img, (1 << 20) + 65536, 65536, IMG_ZERO_MAY_UNMAP));
	CHECK(range_is(img, (1 << 20) + 65536, 65536, 0));
	CHECK(range_is(img, (1 << 20) + 131072, 4096, 0xab));
	CHECK_OK(img_block_status(img, (1 << 20) + 65536, 1 << 20, 0, &ext));
	CHECK_EQ(ext.len, 65536);
	CHECK(ext.flags & IMG_EXT_ZERO);
	CHECK_OK(img_zero(img, (1 << 20) + 1000, 3000, 0));
	CHECK(range_is(img, (1 << 20) + 1000, 3000, 0));
	CHECK(range_is(img, (1 << 20) + 4000, 4096, 0xab));
	CHECK(range_is(img, 1 << 20, 1000, 0xab));
	CHECK_OK(img_zero(img, (1 << 20) + 8192, 4096, IMG_ZERO_FAST));
	CHECK(range_is(img, (1 << 20) + 8192, 4096, 0));

	/* Discard is allowed to leave the data or zero it; the file keeps
	 * its size. */
	CHECK_OK(img_discard(img, 1 << 20, 1 << 20));
	CHECK_EQ(img_size(img), 4 << 20);
	CHECK(range_is(img, (1 << 20) + 4000, 4096, 0xab) ||
	      range_is(img, (1 << 20) + 4000, 4096, 0));

	/* Zero-length requests are no-ops, even at the end. */
	CHECK_OK(img_read(img, buf, 4 << 20, 0));
	CHECK_OK(img_write(img, buf, 4 << 20, 0, 0));

	/* Requests past the end fail with a message. */
	CHECK_ERR(img_read(img, buf, (4 << 20) - 1, 2), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "past the end of the image");
	CHECK_ERR(img_write(img, buf, 4 << 20, 1, 0), -EINVAL);
	CHECK_ERR(img_zero(img, UINT64_MAX, 2, 0), -EINVAL);
	CHECK_ERR(img_discard(img, 1, UINT64_MAX), -EINVAL);
	CHECK_ERR(img_block_status(img, 4 << 20, 1, 0, &ext), -EINVAL);

	/* Resize: grow (with and without preallocation), refuse a shrink
	 * without the flag. */
	CHECK_OK(img_resize(img, 5 << 20, 0, IMG_PREALLOC_OFF));
	CHECK_EQ(img_size(img), 5 << 20);
	CHECK_EQ(file_size(path), 5 << 20);
	CHECK(range_is(img, 4 << 20, 1 << 20, 0));
	CHECK_OK(img_resize(img, 6 << 20, 0, IMG_PREALLOC_FULL));
	CHECK_EQ(file_size(path), 6 << 20);
	CHECK(range_is(img, 5 << 20, 1 << 20, 0));
	CHECK_ERR(img_resize(img, 1 << 20, 0, IMG_PREALLOC_OFF), -EINVAL);
	/* The library's words, not the CLI's flag (the CLI prints
	 * qemu-img's text itself). */
	CHECK_STR_HAS(img_last_error(), "resize: shrinking '");
	CHECK_STR_HAS(img_last_error(), "from 6291456 to 1048576 bytes");
	CHECK(!strstr(img_last_error(), "--shrink"));
	CHECK_OK(img_resize(img, 3000, IMG_RESIZE_SHRINK, IMG_PREALLOC_OFF));
	CHECK_EQ(img_size(img), 3000);
	CHECK_EQ(file_size(path), 3000);
	CHECK(range_is(img, 3, 5, 0xab));

	struct img_info info;
	CHECK_OK(img_info(img, &info));
	CHECK(!strcmp(info.format, "raw"));
	CHECK(!strcmp(info.filename, path));
	CHECK_EQ(info.virtual_size, 3000);
	CHECK_EQ(info.cluster_size, 0);
	CHECK_EQ(info.vm_state_offset, 0);
	CHECK(!info.serialised); /* raw takes requests concurrently */
	CHECK(!info.backing_file && !info.full_backing_file);
	CHECK_EQ(info.n_fields, 0);

	struct img_check chk = { 0 };
	CHECK_ERR(img_check(img, 0, &chk), -ENOTSUP);
	CHECK_ERR(img_set_backing(img, "x", "raw"), -ENOTSUP);
	CHECK_OK(img_close(img));
	free(buf);
}

static void test_odd_size(void)
{
	const char *path = test_path("odd.raw");
	struct img *img;
	uint8_t buf[1000];
	int fd;

	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	CHECK(fd >= 0);
	memset(buf, 7, sizeof(buf));
	CHECK(write(fd, buf, 777) == 777);
	close(fd);
	CHECK_OK(img_open(path, NULL, &img));
	if (!img)
		return;
	CHECK_EQ(img_size(img), 777);
	CHECK(range_is(img, 0, 777, 7));
	CHECK_ERR(img_read(img, buf, 0, 778), -EINVAL);
	CHECK_OK(img_write(img, buf, 700, 77, 0));
	CHECK_EQ(file_size(path), 777);
	CHECK_OK(img_close(img));
}

static void test_read_only(void)
{
	const char *path = test_path("ro.raw");
	struct img_create_opts o = { .format = "raw", .size = 65536 };
	struct img_open_opts oo = { .format = "raw", .flags = IMG_OPEN_RDONLY };
	struct img *img;
	uint8_t buf[512] = { 0 };

	CHECK_OK(img_create(path, &o));
	CHECK_OK(img_open(path, &oo, &img));
	if (!img)
		return;
	CHECK(img_read_only(img));
	CHECK_OK(img_read(img, buf, 0, sizeof(buf)));
	CHECK_ERR(img_write(img, buf, 0, sizeof(buf), 0), -EROFS);
	CHECK_STR_HAS(img_last_error(), "read-only");
	CHECK_ERR(img_zero(img, 0, 512, 0), -EROFS);
	CHECK_ERR(img_discard(img, 0, 512), -EROFS);
	CHECK_ERR(img_resize(img, 1 << 20, 0, IMG_PREALLOC_OFF), -EROFS);
	CHECK_OK(img_flush(img));
	CHECK_OK(img_close(img));

	oo.format = "nosuch";
	CHECK_ERR(img_open(path, &oo, &img), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "unknown format 'nosuch'");
	CHECK_ERR(img_open(test_path("missing.raw"), NULL, &img), -ENOENT);
	CHECK_STR_HAS(img_last_error(), "missing.raw");
}

static void test_mem(void)
{
	static uint8_t data[8192];
	struct img_open_opts oo = { .format = "raw" };
	struct img_io *io;
	struct img *img;
	struct img_extent ext;
	uint8_t buf[100];

	memset(data + 4096, 0x5a, 4096);
	CHECK_OK(img_io_mem_new(data, sizeof(data), &io));
	CHECK_OK(img_open_io(io, "mem", &oo, &img));
	if (!img)
		return;
	CHECK_EQ(img_size(img), 8192);
	CHECK(range_is(img, 4096, 4096, 0x5a));
	memset(buf, 1, sizeof(buf));
	CHECK_OK(img_write(img, buf, 10, sizeof(buf), 0));
	CHECK(range_is(img, 10, 100, 1));
	CHECK_OK(img_zero(img, 0, 8192, IMG_ZERO_MAY_UNMAP));
	CHECK(range_is(img, 0, 8192, 0));
	CHECK_OK(img_block_status(img, 0, 8192, 0, &ext));
	CHECK(ext.len >= 1 && ext.len <= 8192);
	CHECK(ext.flags & IMG_EXT_ALLOCATED);
	CHECK_OK(img_close(img));

	/* Probing with an empty file picks raw. */
	CHECK_OK(img_io_mem_new(NULL, 0, &io));
	CHECK_OK(img_open_io(io, NULL, NULL, &img));
	if (img) {
		CHECK(!strcmp(img_format(img), "raw"));
		CHECK_EQ(img_size(img), 0);
		CHECK_OK(img_read(img, buf, 0, 0));
		CHECK_ERR(img_read(img, buf, 0, 1), -EINVAL);
		CHECK_OK(img_close(img));
	}
}

static void test_measure(void)
{
	struct img_create_opts o = { .format = "raw", .size = 1 << 30 };
	struct img_measure m;

	CHECK_OK(img_measure(&o, NULL, &m));
	CHECK_EQ(m.required, 1 << 30);
	CHECK_EQ(m.fully_allocated, 1 << 30);
	struct img_kv bad = { "cluster_size", "4k" };
	o.opts = &bad;
	o.n_opts = 1;
	CHECK_ERR(img_measure(&o, NULL, &m), -EINVAL);
}

int main(void)
{
	const char *const *f = img_formats();
	bool has_raw = false;

	for (; *f; f++)
		has_raw |= !strcmp(*f, "raw");
	CHECK(has_raw);
	test_create();
	test_io(IMG_IO_PSYNC);
	test_io(IMG_IO_AUTO);
	test_odd_size();
	test_read_only();
	test_mem();
	test_measure();
	return test_done();
}

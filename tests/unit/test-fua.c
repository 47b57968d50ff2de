/* SPDX-License-Identifier: MIT */
/*
 * IMG_FUA on every writable format: the write returns (a driver that flushed
 * the image itself from .write would deadlock on the image lock), the host
 * file sees a flush after the last write, and replaying only what was
 * written up to that flush onto the image as it was before (a crash right
 * after the call) still reads the data back, metadata included. A write
 * without the flag leaves no flush behind.
 */
#include <stdlib.h>
#include <string.h>

#include "fmt-testlib.h"
#include "internal.h"
#include "tap.h"

#define SIZE (8u << 20)
#define OFF (3u << 20)
#define LEN (128u << 10)

/* Index one past the last flush in the log, 0 if none. */
static size_t flushed_prefix(const struct img_io_log_entry *e, size_t n)
{
	size_t end = 0;

	for (size_t i = 0; i < n; i++)
		if (e[i].kind == IMG_LOG_FLUSH)
			end = i + 1;
	return end;
}

static bool reads_back(const char *fmt, const uint8_t *before, size_t len,
		       const struct img_io_log_entry *e, size_t n,
		       const uint8_t *want)
{
	struct img_open_opts o = {
		.format = fmt, .flags = IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING
	};
	uint8_t *got = malloc(LEN);
	struct img_io *mem;
	struct img *img;
	bool ok = false;

	if (!got || img_io_mem_new(before, len, &mem) < 0) {
		free(got);
		return false;
	}
	if (img_io_log_apply(mem, e, n) < 0) {
		img_io_close(mem);
		free(got);
		return false;
	}
	if (img_open_io(mem, "fua.img", &o, &img) == 0) {
		ok = img_read(img, got, OFF, LEN) == 0 &&
		     !memcmp(got, want, LEN);
		img_close(img);
	}
	free(got);
	return ok;
}

static void one_format(const char *fmt)
{
	struct img_open_opts o = { .format = fmt,
				   .flags = IMG_OPEN_NO_BACKING };
	const struct img_io_log_entry *e;
	uint8_t *before, *data = malloc(LEN);
	struct img_io *mem, *faulty;
	struct img *img;
	size_t len, n, n_fua;

	if (!data || ft_build(fmt, SIZE, NULL, NULL, 0, &before, &len) < 0) {
		CHECK(!"build the image");
		free(data);
		return;
	}
	memset(data, 0x5a, LEN);
	if (img_io_mem_new(before, len, &mem) < 0 ||
	    img_io_faulty_new(mem, &faulty) < 0 ||
	    img_open_io(faulty, "fua.img", &o, &img) < 0) {
		CHECK(!"open the image");
		free(before);
		free(data);
		return;
	}
	CHECK_OK(img_write(img, data, OFF, LEN, IMG_FUA));
	img_io_faulty_log(faulty, &e, &n);
	CHECK(n > 0 && e[n - 1].kind == IMG_LOG_FLUSH);
	if (!reads_back(fmt, before, len, e, flushed_prefix(e, n), data)) {
		fprintf(stderr, "%s: a FUA write was not durable\n", fmt);
		CHECK(!"FUA write durable");
	}
	n_fua = n;
	CHECK_OK(img_write(img, data, OFF + LEN, LEN, 0));
	img_io_faulty_log(faulty, &e, &n);
	CHECK(n > n_fua && flushed_prefix(e, n) == n_fua);
	CHECK_OK(img_close(img));
	free(before);
	free(data);
}

int main(void)
{
	static const char *const fmts[] = { "raw", "qcow2", "vmdk",
					    "vpc", "vhdx",  "vdi" };

	for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++)
		one_format(fmts[i]);
	return test_done();
}

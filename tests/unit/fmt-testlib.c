/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the VHD, VHDX, VDI and VMDK unit tests (see fmt-testlib.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt-testlib.h"
#include "img-driver.h"
#include "internal.h"

static int ft_take(struct img_io *io, uint8_t **buf, size_t *len)
{
	const uint8_t *d;
	size_t n;

	img_io_mem_data(io, &d, &n);
	*buf = malloc(n ? n : 1);
	if (!*buf)
		return -ENOMEM;
	memcpy(*buf, d, n);
	*len = n;
	return 0;
}

int ft_build(const char *fmt, uint64_t size, const char *opts,
	     const struct ft_write *w, unsigned n, uint8_t **buf, size_t *len)
{
	struct img_create_opts co = { .format = fmt, .size = size };
	struct img_kv *kv = NULL;
	size_t n_kv = 0;
	struct img_io *io;
	struct img *img;
	uint8_t *b;
	size_t l;
	int ret;

	if (opts && (ret = img_kv_parse(opts, &kv, &n_kv)) < 0)
		return ret;
	co.opts = kv;
	co.n_opts = n_kv;
	ret = img_io_mem_new(NULL, 0, &io);
	if (ret < 0)
		goto out;
	ret = img_create_io(io, "ft.img", &co);
	if (ret >= 0)
		ret = ft_take(io, &b, &l);
	img_io_close(io);
	if (ret < 0 || !n) {
		if (ret >= 0) {
			*buf = b;
			*len = l;
		}
		goto out;
	}
	ret = ft_open(b, l, fmt, 0, &img);
	free(b);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < n && ret >= 0; i++) {
		uint8_t *p = malloc(w[i].len);

		if (!p) {
			ret = -ENOMEM;
			break;
		}
		memset(p, w[i].val, w[i].len);
		ret = img_write(img, p, w[i].off, w[i].len, 0);
		free(p);
	}
	if (ret >= 0)
		ret = img_flush(img);
	if (ret >= 0)
		ret = ft_take(img_file(img), buf, len);
	img_close(img);
out:
	img_kv_free(kv, n_kv);
	return ret;
}

int ft_open(const uint8_t *buf, size_t len, const char *fmt, unsigned flags,
	    struct img **out)
{
	struct img_open_opts o = {
		.format = fmt,
		.flags = flags | IMG_OPEN_NO_BACKING,
	};
	struct img_io *io;
	int ret;

	ret = img_io_mem_new(buf, len, &io);
	if (ret < 0)
		return ret;
	return img_open_io(io, "ft.img", &o, out);
}

static int ft_walk(struct img *img)
{
	uint64_t size = img_size(img), off = 0;
	uint8_t *p = malloc(1 << 20);
	struct img_check res;
	int ret = 0;

	if (!p)
		return -ENOMEM;
	for (uint64_t pos = 0; pos < size && ret >= 0 && pos < (256u << 20);
	     pos += 1 << 20)
		ret = img_read(img, p, pos, img_min(1 << 20, size - pos));
	while (ret >= 0 && off < size && off < (256u << 20)) {
		struct img_extent ext;

		ret = img_block_status(img, off, size - off, 0, &ext);
		if (ret >= 0)
			off += ext.len;
	}
	memset(&res, 0, sizeof(res));
	if (ret >= 0) {
		ret = img_check(img, 0, &res);
		if (ret == -ENOTSUP)
			ret = 0;
		if (ret >= 0 && res.corruptions)
			ret = img_error(-IMG_ECORRUPT,
					"%s: check found %" PRIu64
					" corruptions",
					img_format(img), res.corruptions);
	}
	free(p);
	return ret;
}

int ft_exercise(const uint8_t *buf, size_t len, const char *fmt, char *msg,
		size_t msg_size)
{
	struct img *img;
	int ret;

	img_clear_error();
	ret = ft_open(buf, len, fmt, IMG_OPEN_RDONLY, &img);
	if (ret >= 0) {
		ret = ft_walk(img);
		img_close(img);
	}
	if (ret >= 0) {
		ret = ft_open(buf, len, fmt, 0, &img);
		if (ret >= 0) {
			uint8_t p[4096];

			memset(p, 0x5a, sizeof(p));
			ret = img_write(img, p, 0,
					img_min(sizeof(p), img_size(img)), 0);
			if (ret >= 0)
				ret = img_flush(img);
			img_close(img);
		}
	}
	snprintf(msg, msg_size, "%s", img_last_error());
	return ret;
}

bool ft_invalid_case(const char *name, const uint8_t *buf, size_t len,
		     const char *fmt, bool at_open, int err, const char *msg)
{
	char got[512], prefix[32];
	struct img *img;
	int ret;

	if (at_open) {
		img_clear_error();
		ret = ft_open(buf, len, fmt, IMG_OPEN_RDONLY, &img);
		snprintf(got, sizeof(got), "%s", img_last_error());
		if (ret >= 0)
			img_close(img);
	} else {
		ret = ft_exercise(buf, len, fmt, got, sizeof(got));
	}
	snprintf(prefix, sizeof(prefix), "%s: ", fmt);
	if (ret >= 0 || (err && ret != -err) || strchr(got, '\n') ||
	    strncmp(got, prefix, strlen(prefix)) ||
	    (msg && !strstr(got, msg))) {
		fprintf(stderr,
			"case %s: got %d (%s) '%s', want %d with '%s%s'\n",
			name, ret, strerror(ret < 0 ? -ret : 0), got, -err,
			prefix, msg ? msg : "");
		return false;
	}
	return true;
}

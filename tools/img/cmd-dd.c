/* SPDX-License-Identifier: MIT */
/*
 * img dd: copy a range of an image's guest data into a new image, with
 * qemu-img dd's operands (bs=, count=, skip=, if=, of=) and quirks: the new
 * image is created in the -O format (raw by default) and sized to what is
 * copied, where count limits the input size before skip is applied, as in
 * qemu 7.2. All-zero blocks are not written: the new image already reads
 * them as zeroes. Reads go ahead through the async engine (lib/pipeline.c)
 * in chunks of whole blocks; blocks are written in order.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DD_BS_MAX 2147483647ull

/* Reads are merged into chunks of whole blocks of about this size, up to
 * DD_DEPTH of them in flight, at most DD_BUDGET bytes of buffers (or one
 * block, however large, as a plain loop would hold). */
#define DD_CHUNK (1ull << 20)
#define DD_DEPTH 8
#define DD_BUDGET (16ull << 20)

struct dd {
	struct img *in, *out;
	uint64_t bs, chunk;
	uint64_t in_pos, size, out_pos;
};

static bool all_zero(const uint8_t *buf, uint64_t len)
{
	return !buf[0] && !memcmp(buf, buf + 1, len - 1);
}

static uint64_t dd_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static int dd_write(struct dd *d, const uint8_t *buf, uint64_t off,
		    uint64_t len)
{
	int r;

	img_clear_error();
	r = img_write(d->out, buf, off, len, 0);
	if (r < 0)
		cli_fail(1, "error while writing to output image file: %s",
			 cli_errmsg(r));
	return r;
}

static int dd_next(void *opaque, struct img_pipe_chunk *c)
{
	struct dd *d = opaque;
	uint64_t n;

	if (d->in_pos >= d->size)
		return 0;
	n = dd_min(d->size - d->in_pos, d->chunk);
	c->off = d->out_pos;
	c->len = n;
	c->n_reads = 1;
	c->reads[0] = (struct img_pipe_read){ .img = d->in,
					      .off = d->in_pos,
					      .len = n };
	d->in_pos += n;
	d->out_pos += n;
	return 1;
}

/* Redo a chunk whose read failed block by block, synchronously: the copy
 * stops at the block a plain loop would stop at, with its message. */
static int dd_redo(struct dd *d, struct img_pipe_chunk *c)
{
	uint8_t *buf = c->reads[0].buf;

	for (uint64_t p = 0; p < c->len; p += d->bs) {
		uint64_t n = dd_min(d->bs, c->len - p);
		int r;

		img_clear_error();
		r = img_read(d->in, buf, c->reads[0].off + p, n);
		if (r < 0)
			return cli_fail(1,
					"error while reading from input image "
					"file: %s",
					cli_errmsg(r));
		if (!all_zero(buf, n) && dd_write(d, buf, c->off + p, n) < 0)
			return 1;
	}
	return 0;
}

/*
 * Write the chunk's blocks that are not all zeroes, one write per block as
 * ever: a write that fails part way through an allocating format leaves
 * its clusters behind, so merged writes would fail elsewhere and leave
 * another output.
 */
static int dd_consume(void *opaque, struct img_pipe_chunk *c)
{
	struct dd *d = opaque;
	const uint8_t *buf = c->reads[0].buf;

	if (c->reads[0].ret < 0)
		return dd_redo(d, c);
	for (uint64_t p = 0; p < c->len; p += d->bs) {
		uint64_t n = dd_min(d->bs, c->len - p);

		if (!all_zero(buf + p, n) &&
		    dd_write(d, buf + p, c->off + p, n) < 0)
			return 1;
	}
	return 0;
}

static const struct img_pipe_ops dd_ops = {
	.next = dd_next,
	.consume = dd_consume,
};

/* Copy [in_pos, size) of the input to the output: 0, or 1 after a message. */
static int dd_copy(struct dd *d)
{
	uint64_t depth;
	int r;

	d->chunk = d->bs >= DD_CHUNK ? d->bs : DD_CHUNK / d->bs * d->bs;
	depth = dd_min(DD_DEPTH, DD_BUDGET / d->chunk);
	r = img_pipe_run(&dd_ops, d, d->chunk, depth ? (unsigned)depth : 1);
	if (r == -ENOMEM)
		return cli_fail(1, "out of memory");
	if (r < 0)
		return cli_fail(1, "%s", cli_errmsg(r));
	return r;
}

static int parse_num(const char *name, const char *v, uint64_t *out)
{
	if (img_parse_size(v, out) < 0) {
		cli_fail(1,
			 "Invalid %s specified. You may use k, M, G, T, P or "
			 "E suffixes for",
			 name);
		cli_fail(1, "kilobytes, megabytes, gigabytes, terabytes, "
			    "petabytes and exabytes.");
		return -EINVAL;
	}
	if (*out > INT64_MAX) {
		cli_fail(1,
			 "Invalid %s specified. Must be between 0 and %" PRId64
			 ".",
			 name, INT64_MAX);
		return -EINVAL;
	}
	return 0;
}

int cmd_dd(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *out_fmt = "raw";
	const char *in_name = NULL, *out_name = NULL;
	uint64_t bs = 512, count = 0, skip = 0;
	bool has_count = false, has_skip = false;
	unsigned flags = IMG_OPEN_RDONLY | cli_untrusted();
	struct img *in = NULL, *out = NULL;
	uint64_t size, in_pos;
	int c, ret = 1;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:O:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'O':
			out_fmt = optarg;
			break;
		case 'U':
			flags |= IMG_OPEN_SHARED;
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	for (; optind < argc; optind++) {
		const char *arg = argv[optind];
		const char *eq = strchr(arg, '=');
		size_t klen = eq ? (size_t)(eq - arg) : strlen(arg);
		const char *v = eq ? eq + 1 : NULL;

		if (!eq)
			return cli_fail(1, "unrecognized operand %s", arg);
		if (klen == 2 && !strncmp(arg, "bs", 2)) {
			if (img_parse_size(v, &bs) < 0) {
				cli_fail(1, "Invalid bs specified. You may use "
					    "k, M, G, T, P or E suffixes for");
				return cli_fail(1, "kilobytes, megabytes, "
						   "gigabytes, terabytes, "
						   "petabytes and exabytes.");
			}
			if (bs < 1 || bs > DD_BS_MAX)
				return cli_fail(1,
						"Invalid bs specified. Must "
						"be between 1 and %llu.",
						DD_BS_MAX);
		} else if (klen == 5 && !strncmp(arg, "count", 5)) {
			if (parse_num("count", v, &count) < 0)
				return 1;
			has_count = true;
		} else if (klen == 4 && !strncmp(arg, "skip", 4)) {
			if (parse_num("skip", v, &skip) < 0)
				return 1;
			has_skip = true;
		} else if (klen == 2 && !strncmp(arg, "if", 2)) {
			in_name = v;
		} else if (klen == 2 && !strncmp(arg, "of", 2)) {
			out_name = v;
		} else {
			return cli_fail(1, "unrecognized operand %.*s",
					(int)klen, arg);
		}
	}
	if (!in_name || !out_name)
		return cli_fail(1, "Must specify both input and output files");

	if (cli_open(in_name, fmt, flags, IMG_IO_AUTO, &in) < 0)
		return 1;
	size = img_size(in);
	/* qemu 7.2: count bounds the input size, before skip */
	if (has_count && count <= INT64_MAX / bs && count * bs < size)
		size = count * bs;
	if (has_skip && (skip > INT64_MAX / bs || size < skip * bs)) {
		cli_fail(1, "%s: cannot skip to specified offset", in_name);
		in_pos = size;
	} else {
		in_pos = skip * bs;
	}

	{
		struct img_create_opts co = {
			.format = out_fmt,
			.size = size - in_pos,
		};

		img_clear_error();
		ret = img_create(out_name, &co);
		if (ret < 0) {
			ret = cli_fail_img(1, ret, out_name);
			goto out;
		}
	}
	ret = 1;
	if (cli_open(out_name, out_fmt, IMG_OPEN_NO_BACKING, IMG_IO_AUTO,
		     &out) < 0)
		goto out;
	{
		struct dd d = {
			.in = in,
			.out = out,
			.bs = bs,
			.in_pos = in_pos,
			.size = size,
		};

		if (dd_copy(&d))
			goto out;
	}
	ret = img_close(out);
	out = NULL;
	if (ret < 0) {
		ret = cli_fail_img(1, ret, out_name);
		goto out;
	}
	ret = 0;
out:
	img_close(out);
	img_close(in);
	return ret;
}

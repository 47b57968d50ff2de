/* SPDX-License-Identifier: MIT */
/*
 * img dd: copy a range of an image's guest data into a new image, with
 * qemu-img dd's operands (bs=, count=, skip=, if=, of=) and quirks: the new
 * image is created in the -O format (raw by default) and sized to what is
 * copied, where count limits the input size before skip is applied, as in
 * qemu 7.2. All-zero blocks are not written: the new image already reads
 * them as zeroes.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DD_BS_MAX 2147483647ull

static bool all_zero(const uint8_t *buf, uint64_t len)
{
	uint64_t i;

	for (i = 0; i < len; i++)
		if (buf[i])
			return false;
	return true;
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
	uint64_t size, in_pos, out_pos;
	uint8_t *buf = NULL;
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
	buf = malloc(bs);
	if (!buf) {
		cli_fail(1, "out of memory");
		goto out;
	}
	for (out_pos = 0; in_pos < size;) {
		uint64_t n = size - in_pos < bs ? size - in_pos : bs;
		int r;

		img_clear_error();
		r = img_read(in, buf, in_pos, n);
		if (r < 0) {
			cli_fail(1,
				 "error while reading from input image file: "
				 "%s",
				 cli_errmsg(r));
			goto out;
		}
		in_pos += n;
		if (!all_zero(buf, n)) {
			r = img_write(out, buf, out_pos, n, 0);
			if (r < 0) {
				cli_fail(1,
					 "error while writing to output image "
					 "file: %s",
					 cli_errmsg(r));
				goto out;
			}
		}
		out_pos += n;
	}
	ret = img_close(out);
	out = NULL;
	if (ret < 0) {
		ret = cli_fail_img(1, ret, out_name);
		goto out;
	}
	ret = 0;
out:
	free(buf);
	img_close(out);
	img_close(in);
	return ret;
}

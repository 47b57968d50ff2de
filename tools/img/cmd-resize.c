/* SPDX-License-Identifier: MIT */
/*
 * img resize: change an image's virtual size to an absolute or relative
 * (+N / -N) size, as qemu-img resize does. Shrinking needs --shrink. The
 * size is taken off the end of argv before option parsing so that "-1G" is
 * not mistaken for an option.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int bad_size(void)
{
	cli_fail(1, "Parameter 'size' expects a non-negative number below "
		    "2^64");
	fputs("Optional suffix k, M, G, T, P or E means kilo-, mega-, "
	      "giga-, tera-, peta-\nand exabytes, respectively.\n",
	      stderr);
	return 1;
}

int cmd_resize(int argc, char **argv)
{
	enum { OPT_SHRINK = 256, OPT_PREALLOC };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "shrink", no_argument, NULL, OPT_SHRINK },
		{ "preallocation", required_argument, NULL, OPT_PREALLOC },
		{ NULL, 0, NULL, 0 },
	};
	enum img_prealloc prealloc = IMG_PREALLOC_OFF;
	const char *fmt = NULL, *filename, *size_arg;
	bool quiet = false, shrink = false;
	int relative = 0;
	uint64_t n, cur, want;
	struct img *img;
	int c, ret;

	if (argc < 3)
		return cli_usage_error(1, "Not enough arguments");
	size_arg = argv[--argc];

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:hq", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case OPT_SHRINK:
			shrink = true;
			break;
		case OPT_PREALLOC:
			if (!strcmp(optarg, "off"))
				prealloc = IMG_PREALLOC_OFF;
			else if (!strcmp(optarg, "metadata"))
				prealloc = IMG_PREALLOC_METADATA;
			else if (!strcmp(optarg, "falloc"))
				prealloc = IMG_PREALLOC_FALLOC;
			else if (!strcmp(optarg, "full"))
				prealloc = IMG_PREALLOC_FULL;
			else
				return cli_fail(1,
						"Invalid preallocation mode "
						"'%s'",
						optarg);
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(1, "Expecting image file name and size");
	filename = argv[optind];

	if (size_arg[0] == '+' || size_arg[0] == '-')
		relative = size_arg[0] == '+' ? 1 : -1;
	if (img_parse_size(size_arg + (relative ? 1 : 0), &n) < 0 ||
	    (relative && (size_arg[1] == '+' || size_arg[1] == '-')))
		return bad_size();

	if (cli_open(filename, fmt, IMG_OPEN_NO_BACKING, IMG_IO_AUTO, &img) < 0)
		return 1;
	cur = img_size(img);
	if (relative > 0)
		want = cur + n;
	else if (relative < 0)
		want = n > cur ? 0 : cur - n;
	else
		want = n;
	if ((relative > 0 && want < cur) || (int64_t)want <= 0) {
		img_close(img);
		return cli_fail(1, "New image size must be positive");
	}
	if (want < cur && !shrink) {
		img_close(img);
		cli_fail(1, "Use the --shrink option to perform a shrink "
			    "operation.");
		return cli_fail(1,
				"warning: Shrinking an image will delete all "
				"data beyond the shrunken image's end. Before "
				"performing such an operation, make sure "
				"there is no important data there.");
	}
	img_clear_error();
	ret = img_resize(img, want, shrink ? IMG_RESIZE_SHRINK : 0, prealloc);
	if (ret < 0) {
		cli_fail_img(1, ret, NULL);
		img_close(img);
		return 1;
	}
	ret = img_close(img);
	if (ret < 0)
		return cli_fail_img(1, ret, filename);
	if (!quiet)
		printf("Image resized.\n");
	return 0;
}

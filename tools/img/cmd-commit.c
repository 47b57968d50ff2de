/* SPDX-License-Identifier: MIT */
/*
 * img commit: write an overlay's data into its backing file (or, with -b,
 * into a base further down the chain, with the layers between), then empty
 * the overlay unless -d or -b (which implies -d), as qemu-img commit does;
 * the base grows to the overlay's size when it is smaller. Messages and exit
 * codes are qemu-img's (0 committed, 1 any error).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_commit(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *cache = "writeback", *base_name = NULL;
	bool quiet = false, progress = false, drop = false;
	struct cli_progress bar;
	struct img_progress prog = { cli_progress_cb, &bar };
	struct img *top, *base = NULL;
	unsigned flags = 0;
	uint64_t rate;
	int c, ret;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:ht:b:dpqr:", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 't':
			cache = optarg;
			break;
		case 'b':
			base_name = optarg;
			/* -b implies -d */
			drop = true;
			break;
		case 'd':
			drop = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'r':
			/* A rate limit: accepted, the copy is not throttled. */
			if (img_parse_size(optarg, &rate) < 0)
				return cli_fail(1,
						"Invalid rate limit specified");
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	if (quiet)
		progress = false;
	if (optind != argc - 1)
		return cli_usage_error(1, "Expecting one image file name");
	if (cli_parse_cache(cache, &flags) < 0)
		return cli_fail(1, "Invalid cache option: %s", cache);
	if (drop)
		flags |= IMG_OPEN_RDONLY;
	if (cli_open(argv[optind], fmt, flags, IMG_IO_AUTO, &top) < 0)
		return 1;
	if (base_name) {
		base = img_chain_find(top, base_name);
		if (!base) {
			img_close(top);
			return cli_fail(
				1,
				"Did not find '%s' in the backing chain "
				"of '%s'",
				base_name, argv[optind]);
		}
	} else if (!img_backing(top)) {
		img_close(top);
		return cli_fail(1, "Image does not have a backing file");
	}
	cli_progress_init(&bar, progress, img_size(top));
	img_clear_error();
	ret = img_commit(top, base, drop ? IMG_COMMIT_KEEP : 0, &prog);
	if (ret >= 0) {
		cli_progress_cb(&bar, img_size(top), img_size(top));
		cli_progress_end(&bar);
		ret = img_close(top);
		if (ret < 0)
			return cli_fail_img(1, ret, argv[optind]);
	} else {
		cli_progress_end(&bar);
		cli_fail_img(1, ret, NULL);
		img_close(top);
		return 1;
	}
	if (!quiet)
		printf("Image committed.\n");
	return 0;
}

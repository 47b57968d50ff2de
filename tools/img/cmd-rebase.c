/* SPDX-License-Identifier: MIT */
/*
 * img rebase: change an image's backing file. Safe mode (the default) opens
 * the old chain and the new backing and copies into the image whatever would
 * read differently; -u only rewrites the header (the old backing need not
 * exist). -b "" makes the image standalone. Messages and exit codes are
 * qemu-img 7.2's (a backing file needs its format, -F).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_rebase(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *cache = "writeback", *src_cache = "writeback";
	const char *backing = NULL, *backing_fmt = NULL;
	bool quiet = false, progress = false, unsafe = false;
	struct cli_progress bar;
	struct img_progress prog = { cli_progress_cb, &bar };
	unsigned flags = 0, src_flags = 0;
	struct img *img;
	int c, ret;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qU", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'F':
			backing_fmt = optarg;
			break;
		case 'b':
			backing = optarg;
			break;
		case 'u':
			unsafe = true;
			break;
		case 'p':
			progress = true;
			break;
		case 't':
			cache = optarg;
			break;
		case 'T':
			src_cache = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'U':
			flags |= IMG_OPEN_SHARED;
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	if (quiet)
		progress = false;
	if (optind != argc - 1)
		return cli_usage_error(1, "Expecting one image file name");
	if (!unsafe && !backing)
		return cli_usage_error(1, "Must specify backing file (-b) or "
					  "use unsafe mode (-u)");
	if (cli_parse_cache(cache, &flags) < 0)
		return cli_fail(1, "Invalid cache option: %s", cache);
	if (cli_parse_cache(src_cache, &src_flags) < 0)
		return cli_fail(1, "Invalid source cache option: %s",
				src_cache);
	if (backing_fmt && !cli_format_known(backing_fmt))
		return cli_fail(1, "Invalid format name: '%s'", backing_fmt);
	/* The old backing may be gone: unsafe mode does not open it. */
	if (unsafe)
		flags |= IMG_OPEN_NO_BACKING;
	if (cli_open(argv[optind], fmt, flags, IMG_IO_AUTO, &img) < 0)
		return 1;
	cli_progress_init(&bar, progress, img_size(img));
	img_clear_error();
	ret = img_rebase(img, backing, backing_fmt,
			 unsafe ? IMG_REBASE_UNSAFE : 0, &prog);
	cli_progress_end(&bar);
	if (ret < 0) {
		cli_fail_img(1, ret, NULL);
		img_close(img);
		return 1;
	}
	ret = img_close(img);
	if (ret < 0)
		return cli_fail_img(1, ret, argv[optind]);
	return 0;
}
